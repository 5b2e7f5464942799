"""Flexible Krylov methods for preconditioners that change from one iteration to the next.

A neural network is a nonlinear map ``r -> z``: plain PCG assumes a fixed, symmetric, linear
``M^-1`` and loses its conjugacy with one. The flexible variants stay correct for any
sequence of preconditioners:

* :func:`fcg`: flexible conjugate gradients, FCG(m) (Notay, SIAM J. Sci. Comput. 22, 2000;
  Axelsson & Vassilevski 1991). Each new direction ``p = z - sum_j (z.A p_j)/(p_j.A p_j) p_j``
  is A-orthogonalised (modified Gram-Schmidt, done twice: re-orthogonalisation) against the
  last ``memory`` directions and the step is the exact line search ``alpha = p.r / p.Ap``.
  For SPD ``A`` the energy error ``||x - x*||_A`` never grows, whatever ``z`` is.
* :func:`fgmres`: flexible GMRES(m) with right preconditioning (Saad, SIAM J. Sci. Comput. 14,
  1993): the preconditioned vectors ``z_j`` are kept and ``x = x0 + Z y`` minimises the
  residual over their span; Arnoldi by classical Gram-Schmidt done twice (CGS2).

Both watch the preconditioner (:class:`Watch`): when the best residual has not dropped by
``gain`` over the last ``patience`` iterations, or the preconditioner returns a non-finite or
zero vector, they switch for good to the classical ``fallback`` preconditioner (default AMG),
keep iterating from the current iterate, and say so in ``SolveResult.notes``. A bad network
therefore costs iterations, never a silent failure.

Both run on numpy vectors with a scipy matrix, or on torch vectors with a torch sparse matrix
(``b`` a float64 tensor, ``A`` a sparse CSR tensor on the same device, ``host`` the scipy
matrix for the classical fallback): on a GPU the iteration's vectors then never leave the
device, and only scalars (inner products, norms) come back to the host.
"""

from __future__ import annotations

import math
import time
from typing import Callable

import numpy as np
import scipy.sparse as sp

from .linear import SolveResult, classical_preconditioner

Preconditioner = Callable[[np.ndarray], np.ndarray]


def _is_torch(v) -> bool:
    return type(v).__module__.startswith("torch")


def _norm(v) -> float:
    if _is_torch(v):
        import torch

        return float(torch.linalg.vector_norm(v))
    return float(np.linalg.norm(v))


def _zeros(like, shape):
    return like.new_zeros(shape) if _is_torch(like) else np.zeros(shape)


def _host(v) -> np.ndarray:
    return v.detach().cpu().numpy() if _is_torch(v) else np.asarray(v)


def _like(a: np.ndarray, like):
    if _is_torch(like):
        import torch

        return torch.as_tensor(np.ascontiguousarray(a), dtype=like.dtype, device=like.device)
    return a


def _on_host(precondition: Preconditioner) -> Preconditioner:
    """A numpy preconditioner applied to torch vectors (a round trip through the host)."""
    return lambda r: _like(np.asarray(precondition(_host(r)), dtype=np.float64), r) if _is_torch(r) else precondition(r)


class Watch:
    """Decides when the (neural) preconditioner stopped helping and switches to ``fallback``.

    ``stalled(it, res)`` is true when the best relative residual has not dropped by a factor
    ``gain`` within the last ``patience`` iterations (the fallback then takes over).
    """

    def __init__(self, A: sp.csr_matrix, precondition: Preconditioner, fallback: str | None,
                 patience: int = 10, gain: float = 2.0, label: str = "the preconditioner"):
        self.A, self.current, self.fallback = A, precondition, fallback  # A: the scipy matrix (fallback)
        self.patience, self.gain, self.label = int(patience), float(gain), label
        self.switched_at: int | None = None
        self.notes: list[str] = []
        self.fallback_setup = 0.0
        self._best, self._best_at = math.inf, 0

    def __call__(self, r, it: int):
        z = self._apply(r)
        size = float(abs(z).sum())  # one host sync: non-finite if any entry is, zero if all are
        if self.switched_at is None and not (math.isfinite(size) and size > 0):
            self.switch(it, f"{self.label} returned a {'non-finite' if not math.isfinite(size) else 'zero'} vector")
            z = self._apply(r)
        return z

    def _apply(self, r):
        z = self.current(r)
        return z.reshape(-1).to(r.dtype) if _is_torch(r) else np.asarray(z, dtype=np.float64).reshape(-1)

    def observe(self, it: int, res: float) -> None:
        if res * self.gain <= self._best or self._best == math.inf:
            self._best, self._best_at = res, it
        elif self.switched_at is None and self.fallback and it - self._best_at >= self.patience:
            self.switch(it, f"{self.label} stopped helping (residual {res:.2e}, best {self._best:.2e} "
                            f"not halved in {self.patience} iterations)")
            self._best, self._best_at = res, it

    def switch(self, it: int, why: str) -> None:
        if self.switched_at is not None or not self.fallback:
            return
        t0 = time.perf_counter()
        self.current = _on_host(classical_preconditioner(self.A, self.fallback))
        self.fallback_setup = time.perf_counter() - t0
        self.switched_at = it
        self.notes.append(f"iteration {it}: {why}; continued with the {self.fallback} preconditioner")


def _start(A, b, x0, host):
    if _is_torch(b):
        if host is None:
            raise TypeError("torch vectors need host=, the scipy matrix of A (for the classical fallback)")
        x = b.new_zeros(b.shape) if x0 is None else _like(np.asarray(_host(x0), dtype=np.float64), b)
    else:
        b = np.asarray(b, dtype=np.float64)
        x = np.zeros_like(b) if x0 is None else np.array(x0, dtype=np.float64)
        host = A if host is None else host
    nb = _norm(b)
    return b, x, (nb if nb > 0 else 1.0), host


def fcg(A: sp.csr_matrix, b: np.ndarray, precondition: Preconditioner, tol: float = 1e-8,
        maxiter: int | None = None, x0: np.ndarray | None = None, memory: int = 10,
        fallback: str | None = "amg", patience: int = 10, gain: float = 2.0,
        name: str = "fcg", label: str = "the preconditioner", host: sp.spmatrix | None = None) -> SolveResult:
    """Flexible CG(``memory``) on SPD ``A``; ``precondition(r) -> z`` may be nonlinear.

    Stops at ``||b - A x|| <= tol ||b||`` (confirmed with the true residual); ``maxiter``
    defaults to 1000. See the module docstring for the safeguard and ``fallback``
    (``None`` disables it), and for torch vectors (``host``). ``SolveResult.x`` is a numpy array.
    """
    t0 = time.perf_counter()
    b, x, nb, host = _start(A, b, x0, host)
    maxiter = 1000 if maxiter is None else int(maxiter)
    memory = max(1, int(memory))
    watch = Watch(host, precondition, fallback, patience, gain, label)
    r = b - A @ x
    history = [_norm(r) / nb]
    # the last ``memory`` directions, A-images and energies, in a ring of rows
    P, AP, PAP = _zeros(b, (memory, b.shape[0])), _zeros(b, (memory, b.shape[0])), _zeros(b, (memory,))
    stored = 0
    it = 0
    while it < maxiter:
        if history[-1] <= tol:
            r = b - A @ x  # confirm with the true residual (the recurrence drifts)
            history[-1] = _norm(r) / nb
            if history[-1] <= tol:
                break
        p = watch(r, it)
        if stored:
            k = min(stored, memory)
            for _ in range(2):  # A-orthogonalise (classical Gram-Schmidt) twice: the second pass removes round-off
                p = p - ((AP[:k] @ p) / PAP[:k]) @ P[:k]
        Ap = A @ p
        pAp = float(p @ Ap)
        if not (math.isfinite(pAp) and pAp > 0):
            if watch.switched_at is None and watch.fallback:
                watch.switch(it, f"{watch.label} gave a direction with p.Ap = {pAp:.3g}")
                continue
            break  # A is not SPD on p (or p vanished): report non-convergence
        alpha = float(p @ r) / pAp
        x += alpha * p
        r -= alpha * Ap
        it += 1
        if it % 50 == 0:
            r = b - A @ x
        history.append(_norm(r) / nb)
        watch.observe(it, history[-1])
        slot = stored % memory
        P[slot], AP[slot], PAP[slot] = p, Ap, pAp
        stored += 1
    history[-1] = _norm(b - A @ x) / nb
    return SolveResult(_host(x), bool(history[-1] <= tol), it, np.asarray(history), watch.fallback_setup,
                       time.perf_counter() - t0 - watch.fallback_setup, name, tuple(watch.notes))


def fgmres(A: sp.csr_matrix, b: np.ndarray, precondition: Preconditioner, tol: float = 1e-8,
           maxiter: int | None = None, x0: np.ndarray | None = None, restart: int = 30,
           fallback: str | None = "amg", patience: int = 10, gain: float = 2.0,
           name: str = "fgmres", label: str = "the preconditioner", host: sp.spmatrix | None = None) -> SolveResult:
    """Flexible GMRES(``restart``) with right preconditioning; ``A`` need not be symmetric.

    ``maxiter`` (default 1000) counts inner iterations; the residual history holds the
    Arnoldi residual estimate per inner iteration and the true residual at every restart.
    Torch vectors: see the module docstring. ``SolveResult.x`` is a numpy array.
    """
    t0 = time.perf_counter()
    b, x, nb, host = _start(A, b, x0, host)
    maxiter = 1000 if maxiter is None else int(maxiter)
    n = b.shape[0]
    m = max(1, min(int(restart), n))
    watch = Watch(host, precondition, fallback, patience, gain, label)
    r = b - A @ x
    beta = _norm(r)
    history = [beta / nb]
    it = 0
    V, Z = _zeros(b, (m + 1, n)), _zeros(b, (m, n))
    while history[-1] > tol and it < maxiter:
        V[:] = 0
        Z[:] = 0
        H = np.zeros((m + 1, m))
        cs, sn = np.zeros(m), np.zeros(m)
        g = np.zeros(m + 1)
        g[0] = beta
        V[0] = r / beta
        k = 0
        for j in range(m):
            Z[j] = watch(V[j], it)
            w = A @ Z[j]
            for _ in range(2):  # classical Gram-Schmidt twice (CGS2)
                h = V[: j + 1] @ w
                w -= h @ V[: j + 1]
                H[: j + 1, j] += _host(h)
            H[j + 1, j] = _norm(w)
            breakdown = not H[j + 1, j] > 1e-14 * np.linalg.norm(H[: j + 2, j])
            if not breakdown:
                V[j + 1] = w / H[j + 1, j]
            for i in range(j):  # apply the earlier Givens rotations to the new column
                H[i, j], H[i + 1, j] = cs[i] * H[i, j] + sn[i] * H[i + 1, j], -sn[i] * H[i, j] + cs[i] * H[i + 1, j]
            rho = math.hypot(H[j, j], H[j + 1, j])
            cs[j], sn[j] = (H[j, j] / rho, H[j + 1, j] / rho) if rho > 0 else (1.0, 0.0)
            H[j, j], H[j + 1, j] = rho, 0.0
            g[j + 1] = -sn[j] * g[j]
            g[j] = cs[j] * g[j]
            it += 1
            k = j + 1
            history.append(abs(g[j + 1]) / nb)
            watch.observe(it, history[-1])
            if history[-1] <= tol or breakdown or it >= maxiter:
                break
        diag = np.abs(np.diag(H[:k, :k]))
        keep = k if np.all(diag > 0) else int(np.argmin(diag > 0))  # a singular H: use the regular part
        if keep:
            y = _upper_solve(H[:keep, :keep], g[:keep])
            x += _like(y, b) @ Z[:keep]
        r = b - A @ x
        beta = _norm(r)
        history[-1] = beta / nb
        if not np.isfinite(beta) or (keep == 0 and watch.switched_at is not None):
            break
        if keep == 0 and watch.fallback:
            watch.switch(it, f"{watch.label} gave a direction that does not reduce the residual")
    return SolveResult(_host(x), bool(history[-1] <= tol), it, np.asarray(history), watch.fallback_setup,
                       time.perf_counter() - t0 - watch.fallback_setup, name, tuple(watch.notes))


def _upper_solve(R: np.ndarray, g: np.ndarray) -> np.ndarray:
    import scipy.linalg

    return scipy.linalg.solve_triangular(R, g, lower=False)
