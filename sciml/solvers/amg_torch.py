"""pyamg's Ruge-Stuben hierarchy, its V-cycle applied in torch: ``pcg-amg`` on a GPU.

No algebraic multigrid installs for a GPU from the package index (AmgX has no wheel, pyamg is
CPU only), so the hierarchy (C/F splitting, interpolation ``P``, Galerkin ``A_c = P^T A P``;
Ruge & Stuben 1987) is built on the host by pyamg and moved to the device as sparse CSR
tensors; the cycle runs there, on ``(n, B)`` blocks (``B`` right-hand sides at once).

Smoother. Gauss-Seidel, pyamg's default, is sequential; the device cycle smooths with a
Chebyshev polynomial of the l1-Jacobi-scaled operator ``D^-1 A``, ``D = diag(sum_j |a_ij|)``
(Baker, Falgout, Kolev & Yang 2011, "Multigrid smoothers for ultraparallel computing"; Adams,
Brezina, Hu & Tuminaro 2003 for Chebyshev smoothing): one step maps ``x`` to
``x + q(D^-1 A) D^-1 (f - A x)``, with error propagation ``p(D^-1 A)``, ``p(t) = 1 - t q(t) =
T_k((hi + lo - 2 t) / (hi - lo)) / T_k((hi + lo) / (hi - lo))`` of degree ``k`` = :data:`DEGREE`
on ``[lo, hi] = [1 / RATIO, 1]``. For an SPD ``A``, ``D - A`` is weakly diagonally dominant with
a nonnegative diagonal, so the spectrum of ``D^-1 A`` lies in ``(0, 1]``: ``hi = 1`` is a bound,
not an estimate, and ``|p(t)| <= 1`` there, so the smoother never amplifies an error component
(the V-cycle stays positive definite for every SPD matrix). The same polynomial smooths before and
after the coarse correction, and ``q(D^-1 A) D^-1`` is symmetric, so the V-cycle is symmetric:
a valid CG preconditioner. The coarsest level is solved by a dense Cholesky factor on the device.

Measured choices (PCG to 1e-8, CPU, one torch thread, random right-hand side unless said):

* ``hi = 1``, the bound, against per-level estimates of the largest eigenvalue of ``D^-1 A``
  (1.1 x a 15-step power iteration, capped at 1; or 1.02 x Lanczos, ``eigsh``), at degree 2 and
  ratio 4: 6 / 5 / 5 iterations on Poisson 255^2, 9 / 9 / 9 on Darcy 257^2, 15 / 15 / 15 on a
  1e3-contrast checkerboard Darcy 257^2, 5 / 5 / 5 on 3-D Poisson 40^3. The estimates win one
  iteration on Poisson only, cost set-up time (Lanczos 0.18 s at 255^2) and are not bounds: the
  power estimate was 0.795 on the second level of Poisson 255^2, whose largest eigenvalue is
  0.829 (``|p(t)| <= 1`` holds for ``t <= hi + lo`` only; an eigenvalue beyond it is amplified
  and can make the V-cycle indefinite).
* degree and ratio: see :data:`DEGREE`, :data:`RATIO`; coarsest size: :data:`MAX_COARSE`.

:class:`ScipyAMGCycle` is the same cycle in scipy/numpy on the same hierarchy, written from the
polynomial's coefficients rather than the Chebyshev recurrence: the slow reference of the tests.
"""

from __future__ import annotations

import time
import warnings

import numpy as np
import scipy.sparse as sp
import torch
from numpy.polynomial import Chebyshev, Polynomial

from .. import runtime
from ..errors import ConfigError, DataError
from .krylov_torch import pcg, solve_result, synchronize

#: Chebyshev degree of the smoother (matrix products per smoothing; one less from a zero guess).
#: PCG iterations / solve seconds for degree 2 and 3 at ``RATIO`` 4 (CPU, one torch thread, best
#: of 2, max_coarse 300, random right-hand sides unless said): Poisson 255^2 6 / 0.083 and
#: 5 / 0.079, Poisson 511^2 6 / 0.40 and 5 / 0.48, Darcy 257^2 (its own right-hand side) 12 / 0.14
#: and 11 / 0.18, checkerboard Darcy 257^2 (contrast 1e3) 16 / 0.19 and 14 / 0.25, 3-D Poisson
#: 40^3 5 / 0.099 and 5 / 0.13, anisotropic (eps 1e-3) 255^2 6 / 0.083 and 5 / 0.085. Degree 3
#: saves 0 to 2 iterations for 8 instead of 6 sparse products per level and cycle: degree 2 is as
#: fast or faster everywhere but Poisson 255^2.
DEGREE = 2
#: ``hi / lo`` of the smoothing interval ``[1 / RATIO, 1]``: the smoother damps the part of the
#: spectrum of ``D^-1 A`` above ``1 / RATIO``, the coarse grid the rest. PCG iterations at degree 2
#: (same protocol) for ratio 3 / 4 / 6 / 8 / 30: Poisson 255^2 6 / 6 / 6 / 7 / 13, Poisson 511^2
#: 6 / 6 / 6 / 7 / 13, Darcy 257^2 12 / 12 / 12 / 12 / 15, checkerboard 1e3 16 / 16 / 16 / 15 / 16,
#: 3-D Poisson 40^3 6 / 5 / 6 / 7 / 13, anisotropic 255^2 6 / 6 / 6 / 7 / 13. The usual ratio 30 of smoothed
#: aggregation (Adams et al. 2003) leaves twice the iterations here: classical AMG's coarse grid
#: already takes the low end (hypre's BoomerAMG smooths ``[0.3 hi, hi]`` by default).
RATIO = 4.0
#: Coarsest-level size pyamg stops at; that level is solved by a dense Cholesky factor. Iterations
#: / solve seconds for 10 / 100 / 300 / 1000 / 3000 on Darcy 257^2 (degree 2, ratio 4): 12 / 0.137,
#: 12 / 0.137, 12 / 0.134, 11 / 0.123, 10 / 0.225 (set-up 0.075 s up to 1000, 0.14 s at 3000): 1000
#: is the cheapest on the CPU and one level fewer (fewer kernel launches) on a GPU.
MAX_COARSE = 1000


def l1_diagonal(A: sp.csr_matrix) -> np.ndarray:
    """``d_i = sum_j |a_ij|``, the l1-Jacobi diagonal (positive for an SPD matrix)."""
    d = np.asarray(abs(A).sum(axis=1), dtype=np.float64).ravel()
    if not np.all(d > 0):
        raise DataError("a row of the matrix is zero; pcg-amg needs a symmetric positive definite matrix")
    return d


def smoothing_polynomial(degree: int = DEGREE, ratio: float = RATIO):
    """``(p, q)``, numpy ``Polynomial`` s: the smoother's error polynomial ``p(t) = 1 - t q(t)``,
    the scaled Chebyshev polynomial of degree ``degree`` on ``[1 / ratio, 1]`` with ``p(0) = 1``,
    and ``q`` (degree ``degree - 1``), which the smoother applies to ``D^-1 r``."""
    lo, hi = 1.0 / ratio, 1.0
    T = Chebyshev.basis(degree).convert(kind=Polynomial)
    p = T(Polynomial([(hi + lo) / (hi - lo), -2.0 / (hi - lo)])) / T((hi + lo) / (hi - lo))
    q, _ = divmod(1.0 - p, Polynomial([0.0, 1.0]))
    return p, q


def _check(degree: int, ratio: float, max_coarse: int) -> None:
    if int(degree) != degree or degree < 1:
        raise ConfigError(f"the Chebyshev degree must be a positive integer, got {degree}")
    if not ratio > 1:
        raise ConfigError(f"the Chebyshev interval ratio must exceed 1, got {ratio}")
    if max_coarse < 1:
        raise ConfigError(f"max_coarse must be at least 1, got {max_coarse}")


def _hierarchy(A: sp.csr_matrix, max_coarse: int):
    import pyamg

    if A.shape[0] != A.shape[1]:
        raise ConfigError(f"the matrix must be square, got shape {A.shape}")
    return pyamg.ruge_stuben_solver(sp.csr_matrix(A, dtype=np.float64), max_coarse=max_coarse)


class TorchAMG:
    """The V-cycle of pyamg's Ruge-Stuben hierarchy of the SPD matrix ``A`` on ``device``.

    ``amg(r)`` for a tensor ``r`` of shape ``(n,)`` or ``(n, B)`` returns ``M^-1 r`` (float64, on
    ``device``): Chebyshev(l1-Jacobi) pre-smoothing of degree ``degree`` on ``[1 / ratio, 1]``,
    coarse correction (recursively), the same post-smoothing; dense Cholesky on the coarsest level.
    ``hierarchy`` is pyamg's ``MultilevelSolver`` (host), ``levels`` the device copies of each
    level but the coarsest (``A``, ``P``, ``R = P^T`` as sparse CSR tensors, ``dinv`` ``(n, 1)``).
    """

    def __init__(self, A: sp.spmatrix, device=None, max_coarse: int = MAX_COARSE, degree: int = DEGREE,
                 ratio: float = RATIO):
        _check(degree, ratio, max_coarse)
        self.device = runtime.device(device or "cpu")
        self.degree, self.ratio = int(degree), float(ratio)
        lo, hi = 1.0 / self.ratio, 1.0
        self.theta, self.delta = (hi + lo) / 2.0, (hi - lo) / 2.0  # centre and half-width
        self.hierarchy = _hierarchy(sp.csr_matrix(A), max_coarse)
        self.levels = []
        for level in self.hierarchy.levels[:-1]:
            Al = sp.csr_matrix(level.A)
            self.levels.append({
                "A": self._csr(Al), "P": self._csr(level.P), "R": self._csr(level.P.T),
                "dinv": torch.from_numpy(1.0 / l1_diagonal(Al)).to(self.device)[:, None],
            })
        coarse = torch.from_numpy(np.asarray(self.hierarchy.levels[-1].A.toarray(), dtype=np.float64))
        factor, info = torch.linalg.cholesky_ex(coarse.to(self.device))
        if int(info) != 0:
            raise DataError("the coarsest AMG matrix is not positive definite, so the matrix is not symmetric "
                            "positive definite; use method direct or gmres")
        self.factor = factor
        self.n = A.shape[0]

    def _csr(self, M: sp.spmatrix) -> torch.Tensor:
        M = sp.csr_matrix(M, dtype=np.float64, copy=True)
        M.sum_duplicates()  # sorted, distinct column indices per row: torch's CSR invariant
        with warnings.catch_warnings():  # "sparse CSR support is in beta": matmuls are all we use
            warnings.simplefilter("ignore", UserWarning)
            return torch.sparse_csr_tensor(torch.from_numpy(M.indptr.astype(np.int64)),
                                           torch.from_numpy(M.indices.astype(np.int64)), torch.from_numpy(M.data),
                                           size=M.shape, dtype=torch.float64, device=self.device)

    def __call__(self, r: torch.Tensor) -> torch.Tensor:
        if r.shape[0] != self.n or r.dim() not in (1, 2):
            raise ConfigError(f"the AMG cycle takes vectors of shape ({self.n},) or ({self.n}, B), "
                              f"got {tuple(r.shape)}")
        f = r.to(device=self.device, dtype=torch.float64).contiguous()  # a no-op for pcg's (n, 1) views
        vector = f.dim() == 1
        out = self._cycle(0, f[:, None] if vector else f)
        return out[:, 0] if vector else out

    def smooth(self, l: int, f: torch.Tensor, x: torch.Tensor | None = None) -> torch.Tensor:
        """One Chebyshev smoothing on level ``l`` of ``A_l x = f`` from ``x`` (zero when None),
        ``f`` ``(n_l, B)``: ``degree`` steps of the Chebyshev iteration preconditioned by ``D^-1``
        (Saad 2003, Alg. 12.1), ``degree`` matrix products (one less from zero)."""
        level = self.levels[l]
        A, dinv = level["A"], level["dinv"]
        theta, delta = self.theta, self.delta
        sigma = theta / delta
        rho = 1.0 / sigma
        r = f if x is None else f - A @ x
        d = (dinv * r) / theta
        x = d.clone() if x is None else x + d
        for _ in range(1, self.degree):
            r = r - A @ d
            rho_new = 1.0 / (2.0 * sigma - rho)
            d = (rho_new * rho) * d + (2.0 * rho_new / delta) * (dinv * r)
            x += d
            rho = rho_new
        return x

    def _cycle(self, l: int, f: torch.Tensor) -> torch.Tensor:
        if l == len(self.levels):
            return torch.cholesky_solve(f, self.factor)
        level = self.levels[l]
        x = self.smooth(l, f)
        x = x + level["P"] @ self._cycle(l + 1, level["R"] @ (f - level["A"] @ x))
        return self.smooth(l, f, x)


class ScipyAMGCycle:
    """The V-cycle of :class:`TorchAMG` in scipy/numpy on the same pyamg ``hierarchy``: slow, the tests' reference.

    Written from the definition rather than the recurrence: the smoother is
    ``x + q(D^-1 A) D^-1 (f - A x)`` with ``q`` from :func:`smoothing_polynomial`, evaluated by
    Horner's rule on its monomial coefficients; restriction ``P^T``; the coarsest level by
    ``scipy.linalg.cho_solve``. ``ref(f)`` for an array ``f`` ``(n,)`` or ``(n, B)``.
    """

    def __init__(self, hierarchy, degree: int = DEGREE, ratio: float = RATIO):
        import scipy.linalg as sla

        self.A = [sp.csr_matrix(level.A) for level in hierarchy.levels]
        self.P = [sp.csr_matrix(level.P) for level in hierarchy.levels[:-1]]
        self.Dinv = [sp.diags(1.0 / np.asarray(abs(A).sum(axis=1)).ravel()) for A in self.A]
        self.q = smoothing_polynomial(degree, ratio)[1].coef  # q(t) = sum_k q[k] t^k
        self.coarse = sla.cho_factor(self.A[-1].toarray(), lower=True)

    @classmethod
    def of(cls, amg: TorchAMG) -> "ScipyAMGCycle":
        return cls(amg.hierarchy, amg.degree, amg.ratio)

    def __call__(self, f: np.ndarray) -> np.ndarray:
        return self._cycle(0, np.asarray(f, dtype=np.float64))

    def smooth(self, l: int, f: np.ndarray, x: np.ndarray) -> np.ndarray:
        A, Dinv = self.A[l], self.Dinv[l]
        z = Dinv @ (f - A @ x)
        y = self.q[-1] * z
        for c in self.q[-2::-1]:  # q(S) z = c_0 z + S (c_1 z + S (c_2 z + ...)), S = D^-1 A
            y = c * z + Dinv @ (A @ y)
        return x + y

    def _cycle(self, l: int, f: np.ndarray) -> np.ndarray:
        import scipy.linalg as sla

        if l == len(self.A) - 1:
            return sla.cho_solve(self.coarse, f)
        x = self.smooth(l, f, np.zeros_like(f))
        x = x + self.P[l] @ self._cycle(l + 1, self.P[l].T @ (f - self.A[l] @ x))
        return self.smooth(l, f, x)


def solve(A: sp.spmatrix, b: np.ndarray, tol: float, maxiter: int | None, x0: np.ndarray | None, device=None,
          **cycle):
    """``pcg-amg`` with the V-cycle on ``device``: :class:`~sciml.solvers.linear.SolveResult`.

    ``setup_time`` covers pyamg's hierarchy, the transfer to the device and the coarse factor;
    ``solve_time`` the batched torch PCG (:func:`.krylov_torch.pcg`) with the cycle as
    preconditioner. ``residuals[-1]`` is the true relative residual of ``x``, recomputed after
    the iteration. ``cycle``: ``max_coarse``, ``degree``, ``ratio`` of :class:`TorchAMG`.
    """
    dev = runtime.device(device or "cpu")
    A = sp.csr_matrix(A, dtype=np.float64)
    t0 = time.perf_counter()
    amg = TorchAMG(A, dev, **cycle)
    At = amg._csr(A) if not amg.levels else amg.levels[0]["A"]  # one level: the matrix is the coarse one
    synchronize(dev)
    t1 = time.perf_counter()
    bt = torch.from_numpy(np.asarray(b, dtype=np.float64).reshape(-1)).to(dev)[None]
    x0t = None if x0 is None else torch.from_numpy(np.asarray(x0, dtype=np.float64).reshape(-1)).to(dev)[None]

    def matvec(x: torch.Tensor) -> torch.Tensor:  # (1, n) -> (1, n)
        return (At @ x.T).T

    def precondition(r: torch.Tensor) -> torch.Tensor:
        return amg(r.T).T

    out = pcg(matvec, bt, tol, maxiter or 500, x0t, precondition)
    synchronize(dev)
    return solve_result(out, t1 - t0, time.perf_counter() - t1, "pcg-amg")
