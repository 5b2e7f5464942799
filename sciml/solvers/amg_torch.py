"""pyamg's Ruge-Stuben hierarchy, its V-cycle applied in torch: ``pcg-amg`` on a GPU.

No algebraic multigrid installs for a GPU from the package index (AmgX has no wheel, pyamg is
CPU only), so the hierarchy (coarsening, interpolation ``P``, Galerkin ``A_c = P^T A P``) is
built on the host by pyamg (Ruge & Stuben 1987) and moved to the device as sparse CSR
tensors; the cycle runs there. Gauss-Seidel, pyamg's smoother, is sequential, so the device
cycle smooths with a Chebyshev polynomial of the l1-Jacobi-scaled operator ``D_l1^-1 A``
(``d_i = sum_j |a_ij|``, whose spectrum lies in ``(0, 1]``; Baker, Falgout, Kolev & Yang 2011,
"Multigrid smoothers for ultraparallel computing"; Adams, Brezina, Hu & Tuminaro 2003 for the
Chebyshev smoother): degree :data:`DEGREE` on ``[lambda_max / RATIO, lambda_max]`` with
``lambda_max`` from a few power iterations, the same polynomial before and after the coarse
correction, so the V-cycle is symmetric positive definite (the smoother's error propagation is
a polynomial in ``D^-1 A``, self-adjoint in the energy inner product). The coarsest grid is
solved by a dense Cholesky factor on the device. Any sparse SPD matrix; ``B`` right-hand sides
at once (vectors ``(n, B)``).

:class:`ScipyAMGCycle` is the same cycle in scipy, the slow reference the tests compare with.
"""

from __future__ import annotations

import time
import warnings

import numpy as np
import scipy.sparse as sp
import torch

from .. import runtime
from ..errors import DataError

#: Chebyshev degree and interval ratio lambda_max / lambda_min of the smoother. PCG iterations
#: to 1e-8 with degree 1 / 2 / 3 / 4, measured on the CPU: Poisson 255^2 25 / 13 / 9 / 7, 511^2
#: 25 / 15 / 10 / 8; Darcy 257^2 28 / 15 / 11 / 9; ConDiff variance 2.0 255^2 28 / 22 / 19 / 18
#: (pyamg's own Gauss-Seidel cycle: 8, 8, 13, 23). Degree 3 is the cheapest in time at 511^2;
#: ratio 30 is pyamg's default for its Chebyshev smoother.
DEGREE = 3
RATIO = 30.0


def _l1_diagonal(A: sp.csr_matrix) -> np.ndarray:
    d = np.asarray(abs(A).sum(axis=1)).ravel()
    if np.any(d <= 0):
        raise DataError("a row of the matrix is zero; pcg-amg needs a symmetric positive definite matrix")
    return d


def _lambda_max(A: sp.csr_matrix, dinv: np.ndarray, steps: int = 15) -> float:
    """Power-iteration estimate of the largest eigenvalue of ``D^-1 A`` (<= 1 for l1-Jacobi),
    raised by 10 % (the estimate approaches it from below), capped at 1."""
    x = np.random.default_rng(0).random(A.shape[0])
    lam = 1.0
    for _ in range(steps):
        y = dinv * (A @ x)
        lam = float(np.linalg.norm(y) / (np.linalg.norm(x) or 1.0))
        x = y / (np.linalg.norm(y) or 1.0)
    return min(1.0, 1.1 * lam)


def _hierarchy(A: sp.csr_matrix, max_coarse: int):
    import pyamg

    ml = pyamg.ruge_stuben_solver(sp.csr_matrix(A), max_coarse=max_coarse)
    levels = []
    for level in ml.levels:
        Al = sp.csr_matrix(level.A)
        dinv = 1.0 / _l1_diagonal(Al)
        levels.append({"A": Al, "P": getattr(level, "P", None), "dinv": dinv, "lmax": _lambda_max(Al, dinv)})
    return levels


def chebyshev_coefficients(lmax: float, degree: int = DEGREE, ratio: float = RATIO):
    """``(theta, delta)`` of the Chebyshev iteration on ``[lmax / ratio, lmax]``."""
    a, b = lmax / ratio, lmax
    return (b + a) / 2.0, (b - a) / 2.0


def _chebyshev(matvec, dinv, x, f, lmax, degree=DEGREE):
    """``degree`` steps of the Chebyshev iteration (Saad 2003, Alg. 12.1) on ``A x = f``
    preconditioned by ``D^-1``; array-agnostic (numpy or torch)."""
    theta, delta = chebyshev_coefficients(lmax, degree)
    sigma = theta / delta
    rho = 1.0 / sigma
    r = f - matvec(x)
    d = dinv * r / theta
    for k in range(degree):
        x = x + d
        if k == degree - 1:
            break
        r = r - matvec(d)
        rho_new = 1.0 / (2.0 * sigma - rho)
        d = (rho_new * rho) * d + (2.0 * rho_new / delta) * (dinv * r)
        rho = rho_new
    return x


class TorchAMG:
    """The V-cycle of pyamg's RS hierarchy of ``A`` on ``device``: ``amg(r)`` for ``r`` ``(n,)`` or ``(n, B)``."""

    def __init__(self, A: sp.spmatrix, device=None, max_coarse: int = 300, degree: int = DEGREE):
        self.device = runtime.device(device or "cpu")
        self.degree = degree
        self.host = _hierarchy(sp.csr_matrix(A, dtype=np.float64), max_coarse)
        self.levels = []
        for level in self.host:
            P = level["P"]
            self.levels.append({
                "A": self._csr(level["A"]), "P": None if P is None else self._csr(P),
                "R": None if P is None else self._csr(sp.csr_matrix(P.T)),
                "dinv": torch.from_numpy(level["dinv"]).to(self.device)[:, None], "lmax": level["lmax"],
            })
        coarse = torch.from_numpy(self.host[-1]["A"].toarray()).to(self.device)
        factor, info = torch.linalg.cholesky_ex(0.5 * (coarse + coarse.T))
        if int(info) != 0:
            raise DataError("the coarsest AMG matrix is not positive definite: the matrix is not SPD; use direct or gmres")
        self.factor = factor

    def _csr(self, M: sp.csr_matrix) -> torch.Tensor:
        M = sp.csr_matrix(M, dtype=np.float64, copy=True)
        M.sum_duplicates()  # sorted, distinct column indices per row (torch's CSR invariant)
        with warnings.catch_warnings():  # "sparse CSR support is in beta": matvecs are all we use
            warnings.simplefilter("ignore", UserWarning)
            return torch.sparse_csr_tensor(torch.from_numpy(M.indptr.astype(np.int64)),
                                           torch.from_numpy(M.indices.astype(np.int64)), torch.from_numpy(M.data),
                                           size=M.shape, device=self.device, check_invariants=True)

    def __call__(self, r: torch.Tensor) -> torch.Tensor:
        vector = r.dim() == 1
        out = self._cycle(0, r[:, None] if vector else r)
        return out[:, 0] if vector else out

    def _cycle(self, l: int, f: torch.Tensor) -> torch.Tensor:
        level = self.levels[l]
        if l == len(self.levels) - 1:
            return torch.cholesky_solve(f, self.factor)
        A = level["A"]

        def matvec(v):
            return A @ v

        x = _chebyshev(matvec, level["dinv"], torch.zeros_like(f), f, level["lmax"], self.degree)
        x = x + level["P"] @ self._cycle(l + 1, level["R"] @ (f - A @ x))
        return _chebyshev(matvec, level["dinv"], x, f, level["lmax"], self.degree)


class ScipyAMGCycle:
    """The same V-cycle as :class:`TorchAMG` in scipy/numpy on the same hierarchy (test reference)."""

    def __init__(self, amg: TorchAMG):
        self.levels, self.degree = amg.host, amg.degree

    def __call__(self, f: np.ndarray, l: int = 0) -> np.ndarray:
        level = self.levels[l]
        A = level["A"]
        if l == len(self.levels) - 1:
            return np.linalg.solve(A.toarray(), f)
        x = _chebyshev(A.dot, level["dinv"], np.zeros_like(f), f, level["lmax"], self.degree)
        x = x + level["P"] @ self(level["P"].T @ (f - A @ x), l + 1)
        return _chebyshev(A.dot, level["dinv"], x, f, level["lmax"], self.degree)


def solve(A: sp.spmatrix, b: np.ndarray, tol: float, maxiter: int, x0: np.ndarray | None, device=None,
          degree: int = DEGREE):
    """``pcg-amg`` with the cycle on ``device``: :class:`~sciml.solvers.linear.SolveResult`."""
    from .krylov_torch import pcg
    from .linear import SolveResult
    from .multigrid import _sync

    dev = runtime.device(device or "cpu")
    t0 = time.perf_counter()
    amg = TorchAMG(A, dev, degree=degree)
    At = amg.levels[0]["A"]
    _sync(dev)
    t1 = time.perf_counter()
    bt = torch.from_numpy(np.asarray(b, dtype=np.float64)).to(dev)[None]
    x0t = None if x0 is None else torch.from_numpy(np.asarray(x0, dtype=np.float64)).to(dev)[None]
    out = pcg(lambda x: (At @ x.T).T, bt, tol, maxiter, x0t, lambda r: amg(r.T).T)
    _sync(dev)
    t2 = time.perf_counter()
    history = out.residuals[:, 0].cpu().numpy()[: int(out.iterations[0]) + 1].copy()
    history[-1] = out.residuals[-1, 0].item()
    return SolveResult(out.x[0].cpu().numpy(), bool(out.converged[0]), int(out.iterations[0]), history, t1 - t0,
                       t2 - t1, "pcg-amg", (f"cycle on {dev}: pyamg's RS hierarchy, Chebyshev(l1-Jacobi) smoothing",
                                            *out.notes))
