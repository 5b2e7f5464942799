"""Batched preconditioned conjugate gradients in torch: ``B`` systems in one loop, on any device.

The same recurrence as :func:`sciml.solvers.linear.pcg` (Hestenes & Stiefel 1952; Saad 2003,
Alg. 9.1), with every scalar a ``(B,)`` tensor: each system has its own step lengths and stops
contributing (its step is zeroed) once its recurrence residual reaches ``tol``. On exit the
true residual ``||b - A x|| / ||b||`` of every system is computed; a system whose recurrence
said "converged" but whose true residual does not hold restarts from its iterate, as in the
numpy version; the history's last row is the true residual of every system. Vectors have any shape ``(B, ...)``: reductions run over all but the first axis.
Scalars stay on the device; one host synchronisation per iteration decides whether to go on.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from .linear import SolveResult

Operator = Callable[[torch.Tensor], torch.Tensor]


@dataclass
class BatchedCG:
    """Outcome of :func:`pcg`: ``x`` ``(B, ...)``, per-system ``converged`` ``(B,)`` bool,
    ``iterations`` ``(B,)`` int, ``residuals`` ``(iters + 1, B)`` relative residual history
    (row 0 the initial guess; the last row the true residual), and ``notes``."""

    x: torch.Tensor
    converged: torch.Tensor
    iterations: torch.Tensor
    residuals: torch.Tensor
    notes: list[str]


def _dot(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    return (u * v).flatten(1).sum(1)


def _shape(s: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return s.reshape((-1,) + (1,) * (like.dim() - 1))


def pcg(A: Operator, b: torch.Tensor, tol: float, maxiter: int, x0: torch.Tensor | None = None,
        M: Operator | None = None, stop: Callable[[list[torch.Tensor]], torch.Tensor] | None = None) -> BatchedCG:
    """Solve ``A x = b`` for a batch: ``A`` and ``M`` (the preconditioner ``r -> M^-1 r``, SPD)
    map ``(B, ...)`` tensors to tensors of the same shape. Stops when every system's
    ``||b - A x|| / ||b|| <= tol`` or after ``maxiter`` iterations in all (restarts included).

    ``stop(history)``, called after every iteration with the residual history so far (a list of
    ``(B,)`` tensors), returns a ``(B,)`` bool mask of systems to leave as they are (a caller's
    switch to another preconditioner); they end unconverged, with their iterate."""
    nb = torch.linalg.vector_norm(b.flatten(1), dim=1)
    nb = torch.where(nb > 0, nb, torch.ones_like(nb))
    x = torch.zeros_like(b) if x0 is None else x0.clone()
    r = b - A(x)
    history = [torch.linalg.vector_norm(r.flatten(1), dim=1) / nb]
    iterations = torch.zeros(b.shape[0], dtype=torch.long, device=b.device)
    notes: list[str] = []
    done = history[0] <= tol
    total = 0
    while not bool(done.all()) and total < maxiter:
        active = ~done
        z = M(r) if M else r.clone()
        p, rz = z.clone(), _dot(r, z)
        while total < maxiter:
            Ap = A(p)
            pAp = _dot(p, Ap)
            broken = active & ~((pAp > 0) & (rz > 0))
            if bool(broken.any()):
                notes.append(f"CG broke down at iteration {total} for {int(broken.sum())} system(s) (p.Ap or r.z <= 0): "
                             "the matrix or the preconditioner is not symmetric positive definite; try gmres or direct")
                active = active & ~broken
                done = done | broken
            alpha = torch.where(active, rz / torch.where(active, pAp, torch.ones_like(pAp)), torch.zeros_like(rz))
            x.add_(_shape(alpha, x) * p)
            r.sub_(_shape(alpha, r) * Ap)
            total += 1
            iterations += active.long()
            res = torch.linalg.vector_norm(r.flatten(1), dim=1) / nb
            history.append(torch.where(active, res, history[-1]))
            active = active & (res > tol) & torch.isfinite(res)
            if stop is not None:
                handed = active & stop(history)
                if bool(handed.any()):
                    active = active & ~handed
                    done = done | handed
            if not bool(active.any()):
                break
            z = M(r) if M else r
            rz_new = _dot(r, z)
            beta = torch.where(active, rz_new / torch.where(rz != 0, rz, torch.ones_like(rz)), torch.zeros_like(rz))
            p = _shape(beta, p) * p + z
            rz = rz_new
        r = b - A(x)
        true = torch.linalg.vector_norm(r.flatten(1), dim=1) / nb
        history[-1] = torch.where(done, history[-1], true)
        bad = ~torch.isfinite(true)
        if bool(bad.any()):
            notes.append(f"CG diverged for {int(bad.sum())} system(s) (non-finite residual); x is the initial guess there")
            start = torch.zeros_like(b) if x0 is None else x0
            x = torch.where(_shape(bad, x), start, x)
            r = b - A(x)
            history[-1] = torch.where(bad, torch.linalg.vector_norm(r.flatten(1), dim=1) / nb, history[-1])
            done = done | bad
        done = done | (history[-1] <= tol)
    # the last row is the true residual of every system's x, a broken-down one's included
    history[-1] = torch.linalg.vector_norm((b - A(x)).flatten(1), dim=1) / nb
    residuals = torch.stack(history)
    final = residuals[-1]
    return BatchedCG(x, final <= tol, iterations, residuals, notes)


def synchronize(device) -> None:
    """Wait for the device's queued work (CUDA runs asynchronously) before reading a timer."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def solve_result(out: BatchedCG, setup: float, solve: float, method: str) -> SolveResult:
    """The :class:`~sciml.solvers.linear.SolveResult` of a batch of one system."""
    its = int(out.iterations[0])
    history = out.residuals[: its + 1, 0].cpu().numpy().copy()
    history[-1] = out.residuals[-1, 0].item()  # the true residual (the rows after its last step repeat it)
    return SolveResult(out.x[0].reshape(-1).cpu().numpy(), bool(out.converged[0]), its, history, setup, solve, method,
                       tuple(out.notes))
