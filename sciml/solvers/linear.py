"""Classical sparse linear solvers behind one entry point, :func:`solve`, and one result type.

Methods (``available()``):

* ``direct``: SuperLU (``scipy.sparse.linalg.splu``) with the ``MMD_AT_PLUS_A`` minimum
  degree ordering, several times faster than ``spsolve``'s default ordering on 5-point
  stencils (``/work/shared/TARGETS.md``, classical anchors).
* ``cg``, ``pcg-jacobi``, ``pcg-amg``: preconditioned conjugate gradients (Hestenes &
  Stiefel 1952; Saad, *Iterative Methods for Sparse Linear Systems*, 2003, Alg. 9.1) with
  no, diagonal, or classical Ruge-Stuben AMG V-cycle preconditioning (pyamg; Ruge &
  Stuben 1987). Stops when ``||b - A x|| / ||b|| <= tol``.
* ``pcg-mg``: CG preconditioned by one symmetric V-cycle of the structured black-box
  multigrid of :mod:`.multigrid` (Dendy 1982; torch, CPU or GPU), for 5-/7-point stencils on
  square and cube grids; grid-independent iteration counts, also at coefficient contrast 1e5.
* ``gmres``: restarted GMRES(100) without preconditioner (Saad & Schultz 1986,
  ``scipy.sparse.linalg.gmres``), the nonsymmetric baseline; slow on elliptic problems.
* ``auto``: ``direct`` for small systems, ``pcg-amg`` for larger symmetric ones and ``pcg-mg``
  for the largest on structured grids, at the measured crossovers (see :func:`choose_method`).
"""

from __future__ import annotations

import dataclasses
import time
from typing import Callable

import numpy as np
import scipy.sparse as sp

from ..errors import ConfigError, DataError, UnknownNameError
from ..registry import load_plugins
from .. import runtime
from ..runtime import limit_threads

# Crossover measured on this project's 2-core CPU (FNO Darcy matrices, a in {3, 12}, tol
# 1e-10, setup included, median of 3 samples x 3 repeats): splu-MMD vs RS-AMG-PCG took
# 0.014 vs 0.022 s at 83^2 unknowns, 0.026 vs 0.030 s at 104^2, 0.038 vs 0.038 s at 119^2,
# 0.053 vs 0.048 s at 139^2, 0.16 vs 0.096 s at 209^2 and 0.85 vs 0.40 s at 419^2.
DIRECT_MAX_2D = 12_000
# 7-point (3-D) stencils fill in much faster (3-D Laplacian, same protocol): 0.0026 vs
# 0.0070 s at 8^3, 0.012 vs 0.010 s at 10^3, 0.031 vs 0.014 s at 12^3, 0.41 vs 0.042 s at 20^3.
DIRECT_MAX_3D = 1_000
# Beyond these sizes the structured multigrid (pcg-mg) beats RS-AMG-PCG on grid stencils
# (`python benchmarks/multigrid.py --crossover`, tol 1e-10, 1 and 2 torch threads, median of
# 3 samples): Darcy 0.078 vs 0.077 s at 193^2 (36k unknowns), 0.12 vs 0.15 s at 257^2, 0.27
# vs 0.40 s at 385^2; 3-D obstacles 0.53 vs 0.50 s at 48^3 (111k), 0.73 vs 0.83 s at 56^3.
MG_MIN_2D = 40_000
MG_MIN_3D = 120_000


@dataclasses.dataclass(frozen=True)
class SolveResult:
    """Outcome of one linear solve.

    Attributes
    ----------
    x : solution, shape ``(n,)``, float64.
    converged : whether ``||b - A x|| / ||b|| <= tol`` was reached (a direct solve counts as
        converged when its residual is at most ``max(tol, 1e-12)``, the round-off floor).
    iterations : Krylov iterations (1 for a direct solve).
    residuals : relative residual history ``||b - A x_k|| / ||b||``, ``residuals[0]`` for the
        initial guess; the last entry is the true residual of ``x`` (not a recurrence value).
    setup_time, solve_time : wall seconds of the set-up (factorisation, AMG hierarchy) and of
        the solve proper.
    method : the method that ran (``auto`` resolved).
    notes : what the user should know about the run, e.g. the iteration at which a neural
        preconditioner stopped helping and the classical fallback took over.
    """

    x: np.ndarray
    converged: bool
    iterations: int
    residuals: np.ndarray
    setup_time: float
    solve_time: float
    method: str
    notes: tuple[str, ...] = ()

    @property
    def total_time(self) -> float:
        return self.setup_time + self.solve_time

    @property
    def residual(self) -> float:
        """Final relative residual ``||b - A x|| / ||b||``."""
        return float(self.residuals[-1])


_METHODS: dict[str, Callable[..., SolveResult]] = {}


def register(name: str):
    """Decorator: register ``fn(A, b, tol, maxiter, x0) -> SolveResult`` under ``name``."""

    def deco(fn: Callable[..., SolveResult]) -> Callable[..., SolveResult]:
        _METHODS[name] = fn
        return fn

    return deco


# methods that take a trained run, ``NAME:RUN_DIR``: registered by the package that trains them
# (sciml.learned), found through the plugin entry points (see sciml.registry.load_plugins)
_RUN_METHODS: dict[str, Callable[..., SolveResult]] = {}


def register_run_method(name: str):
    """Decorator: register ``fn(A, b, tol, maxiter, x0, run_dir) -> SolveResult`` as method ``NAME:RUN``."""

    def deco(fn: Callable[..., SolveResult]) -> Callable[..., SolveResult]:
        _RUN_METHODS[name] = fn
        return fn

    return deco


def _run_methods() -> dict[str, Callable[..., SolveResult]]:
    load_plugins()
    return _RUN_METHODS


def available() -> list[str]:
    """Names of the solve methods, ``auto`` first; ``NAME:RUN`` methods take a trained run directory
    (``dcdm:RUN``; ``fcg:RUN``, ``fgmres:RUN``, ``hints:RUN`` with a trained neural preconditioner)."""
    return ["auto", *_METHODS, *(f"{k}:RUN" for k in sorted(_run_methods()))]


def relative_residual(A: sp.spmatrix, x: np.ndarray, b: np.ndarray) -> float:
    """``||b - A x||_2 / ||b||_2`` in float64 (``||b - A x||`` when ``b = 0``)."""
    b = np.asarray(b, dtype=np.float64)
    r = np.linalg.norm(b - A @ np.asarray(x, dtype=np.float64))
    nb = np.linalg.norm(b)
    return float(r / nb) if nb > 0 else float(r)


def is_symmetric(A: sp.spmatrix, rtol: float = 1e-12) -> bool:
    """Whether ``A`` equals its transpose up to ``rtol`` times its largest entry."""
    diff = abs(A - A.T)
    return diff.nnz == 0 or diff.max() <= rtol * abs(A).max()


def choose_method(A: sp.spmatrix, symmetric: bool | None = None, grid: tuple[int, ...] | None = None) -> str:
    """The method ``auto`` runs: direct below the measured crossover, then AMG-PCG, and the
    structured multigrid (``pcg-mg``) beyond ``MG_MIN_2D`` / ``MG_MIN_3D`` unknowns when ``A`` is
    a stencil on a grid (``grid``, its shape when the caller knows it; else looked up).

    Fill-in of a sparse direct factorisation grows with the stencil's dimension, which the
    average number of nonzeros per row tells apart (at most 5 for 5-point, 7 for 7-point).
    A nonsymmetric matrix gets the direct solver on 2-D stencils at any size (unpreconditioned
    GMRES stalls on elliptic problems: residual 3e-3 after 500 iterations on Darcy 127^2)
    and GMRES only where a direct solve would fill in too much. ``symmetric`` skips the
    symmetry test when the caller knows the answer.
    """
    n = A.shape[0]
    two_d = A.nnz <= 5 * n
    if n <= (DIRECT_MAX_2D if two_d else DIRECT_MAX_3D):
        return "direct"
    if symmetric is None:
        symmetric = is_symmetric(A)
    if symmetric:
        return "pcg-mg" if _on_grid(A, grid, two_d) else "pcg-amg"
    return "direct" if two_d else "gmres"


def _on_grid(A: sp.spmatrix, grid: tuple[int, ...] | None, two_d: bool) -> bool:
    """Whether ``A`` is large enough for pcg-mg to win and a stencil on a structured grid."""
    if A.shape[0] < (MG_MIN_2D if two_d else MG_MIN_3D) or A.nnz > 27 * A.shape[0]:
        return False
    from . import multigrid  # torch: imported when a system this large is solved

    try:
        multigrid.grid_shape_of(A, grid)
    except ConfigError:
        return False
    return True


def solve(
    A: sp.spmatrix,
    b: np.ndarray,
    method: str = "auto",
    tol: float = 1e-10,
    maxiter: int | None = None,
    x0: np.ndarray | None = None,
    device: str | None = None,
) -> SolveResult:
    """Solve ``A x = b`` to relative residual ``||b - A x|| / ||b|| <= tol``.

    Parameters
    ----------
    A : sparse square matrix ``(n, n)`` (SPD for the CG methods).
    b : right-hand side ``(n,)``.
    method : one of :func:`available`; ``dcdm:RUN`` runs the Deep Conjugate Direction Method
        with the network trained in run directory ``RUN`` (:mod:`sciml.learned.dcdm`).
    tol : relative residual target.
    maxiter : iteration cap (default: ``10 n`` for CG/Jacobi-PCG, 500 for AMG-PCG and
        GMRES inner iterations).
    x0 : initial guess ``(n,)`` (default zero; ignored by ``direct``).
    device : where ``pcg-mg`` and ``pcg-amg`` run their cycle (``cpu``, ``cuda``, ``auto``);
        default the CPU (``pcg-amg``: pyamg's compiled cycle; on a GPU the same hierarchy's
        cycle in torch). The other methods run on the CPU and refuse another device.

    Returns
    -------
    SolveResult; non-convergence is reported in ``converged``, never raised.
    """
    kind, _, run = method.partition(":")
    if kind not in _METHODS and kind != "auto" and kind in _run_methods():
        if not run:
            raise ConfigError(f"method {kind!r} needs a trained run directory: {kind}:RUN, e.g. {kind}:runs/{kind}")
        A, b, x0 = _check_system(A, b, x0, tol, maxiter)
        with limit_threads(blas=1):  # see runtime.limit_threads: BLAS threads only cost here
            return _RUN_METHODS[kind](A, b, tol, maxiter, x0, run)
    if method != "auto" and method not in _METHODS:
        raise UnknownNameError("solver method", method, available())
    A, b, x0 = _check_system(A, b, x0, tol, maxiter)
    name = choose_method(A) if method == "auto" else method
    if device is not None:
        if name not in DEVICE_METHODS:
            if runtime.device(device).type != "cpu":
                raise ConfigError(f"method {name} runs on the CPU only; --device applies to {', '.join(DEVICE_METHODS)}")
        else:
            with limit_threads(blas=1):
                return _METHODS[name](A, b, tol, maxiter, x0, device=device)
    with limit_threads(blas=1):  # see runtime.limit_threads: BLAS threads only cost here
        return _METHODS[name](A, b, tol, maxiter, x0)


def _check_system(A, b, x0, tol, maxiter):
    if not sp.issparse(A):
        A = sp.csr_matrix(np.asarray(A))
    if A.ndim != 2 or A.shape[0] != A.shape[1]:
        raise ConfigError(f"the matrix must be square, got shape {A.shape}")
    n = A.shape[0]
    b = np.asarray(b, dtype=np.float64).reshape(-1)
    if b.shape != (n,):
        raise ConfigError(f"right-hand side must have {n} entries to match the matrix, got {b.size}")
    if x0 is not None:
        x0 = np.asarray(x0, dtype=np.float64).reshape(-1)
        if x0.shape != (n,):
            raise ConfigError(f"initial guess must have {n} entries to match the matrix, got {x0.size}")
    if not tol > 0:
        raise ConfigError(f"tol must be positive, got {tol}")
    if maxiter is not None and maxiter < 1:
        raise ConfigError(f"maxiter must be at least 1, got {maxiter}")
    A = sp.csr_matrix(A, dtype=np.float64)
    for what, values in (("the matrix", A.data), ("the right-hand side", b), ("the initial guess", x0)):
        if values is not None and not np.all(np.isfinite(values)):
            bad = int(np.size(values) - np.count_nonzero(np.isfinite(values)))
            raise DataError(f"{what} holds {bad} NaN or Inf entr{'y' if bad == 1 else 'ies'}; fix the data it came from")
    return A, b, x0


@register("direct")
def _direct(A, b, tol, maxiter, x0) -> SolveResult:
    import scipy.sparse.linalg as spla  # deferred: 0.2 s of import that `sciml --help` need not pay

    t0 = time.perf_counter()
    try:
        lu = spla.splu(A.tocsc(), permc_spec="MMD_AT_PLUS_A")
    except RuntimeError as exc:  # "Factor is exactly singular"
        raise DataError(f"the matrix is singular (SuperLU: {exc}); check its boundary conditions, or use an "
                        "iterative method such as gmres for a least-squares answer") from None
    t1 = time.perf_counter()
    x = lu.solve(b)
    t2 = time.perf_counter()
    r0 = relative_residual(A, np.zeros_like(b) if x0 is None else x0, b)
    r = relative_residual(A, x, b)
    converged = bool(np.isfinite(r) and r <= max(tol, 1e-12))
    return SolveResult(x, converged, 1, np.array([r0, r]), t1 - t0, t2 - t1, "direct")


def pcg(A, b, tol, maxiter, x0, precondition: Callable[[np.ndarray], np.ndarray] | None,
        notes: list[str] | None = None):
    """Preconditioned CG; returns ``(x, converged, iterations, residual history)``.

    The recurrence residual is checked against ``tol`` and, on convergence, confirmed with
    the true residual (which can drift from the recurrence in finite precision); if it
    does not hold, CG restarts from the current iterate. A breakdown (``p.Ap <= 0`` or
    ``r.z <= 0``: the matrix or the preconditioner is not SPD) or a non-finite residual stops
    it, reported as not converged; the reason is appended to ``notes`` when given. ``x`` is
    then the last iterate (the initial guess if the residual became non-finite), and the
    history's last entry its true residual.
    """
    notes = [] if notes is None else notes
    nb = np.linalg.norm(b) or 1.0
    x = np.zeros_like(b) if x0 is None else x0.copy()
    r = b - A @ x
    history = [np.linalg.norm(r) / nb]
    iterations, converged = 0, history[0] <= tol
    while not converged and iterations < maxiter:
        z = precondition(r) if precondition else r
        p, rz = z.copy(), r @ z
        while iterations < maxiter:
            Ap = A @ p
            pAp = p @ Ap
            if not pAp > 0 or not rz > 0:  # A (or the preconditioner) is not SPD: stop
                what = "p.Ap" if not pAp > 0 else "r.z"
                notes.append(f"CG broke down at iteration {iterations} ({what} = {float(pAp if what == 'p.Ap' else rz):.3g}): "
                             "the matrix or the preconditioner is not symmetric positive definite; try gmres or direct")
                history[-1] = np.linalg.norm(b - A @ x) / nb
                return x, False, iterations, np.array(history)
            alpha = rz / pAp
            x += alpha * p
            r -= alpha * Ap
            iterations += 1
            history.append(np.linalg.norm(r) / nb)
            if history[-1] <= tol:
                break
            z = precondition(r) if precondition else r
            rz_new = r @ z
            p *= rz_new / rz
            p += z
            rz = rz_new
        r = b - A @ x
        history[-1] = np.linalg.norm(r) / nb
        converged = history[-1] <= tol
        if not np.isfinite(history[-1]):
            notes.append(f"CG diverged (non-finite residual at iteration {iterations}); x is the initial guess")
            x = np.zeros_like(b) if x0 is None else x0.copy()
            history[-1] = np.linalg.norm(b - A @ x) / nb
            break
    return x, bool(converged), iterations, np.array(history)


def _pcg_result(name, A, b, tol, maxiter, x0, setup, precondition) -> SolveResult:
    t0 = time.perf_counter()
    notes: list[str] = []
    x, converged, its, hist = pcg(A, b, tol, maxiter, x0, precondition, notes)
    return SolveResult(x, converged, its, hist, setup, time.perf_counter() - t0, name, tuple(notes))


@register("cg")
def _cg(A, b, tol, maxiter, x0) -> SolveResult:
    return _pcg_result("cg", A, b, tol, maxiter or 10 * A.shape[0], x0, 0.0, None)


CLASSICAL_PRECONDITIONERS = ("jacobi", "sgs", "ic", "amg")


def classical_preconditioner(A: sp.csr_matrix, name: str) -> Callable[[np.ndarray], np.ndarray]:
    """``r -> M^-1 r`` of a classical preconditioner of the SPD matrix ``A``.

    ``jacobi``: the inverse diagonal. ``sgs``: one symmetric Gauss-Seidel sweep (forward, then
    backward; pyamg's compiled relaxation) from zero. ``ic``: IC(0) (:mod:`.incomplete`).
    ``amg``: one classical Ruge-Stuben V-cycle (pyamg) with one forward Gauss-Seidel sweep
    before and one backward sweep after the coarse correction, which keeps it symmetric at half
    the smoothing of pyamg's default: 17 instead of 14 iterations but 0.39-0.41 vs 0.47-0.50 s
    per Darcy solve at 421^2. Classical AMG keeps its convergence at high coefficient contrast,
    where smoothed aggregation degrades (TARGETS.md: 15 vs 54 iterations at 1024^2).
    """
    if name == "jacobi":
        d = A.diagonal()
        if np.any(d <= 0):
            raise ConfigError("Jacobi preconditioning needs a positive diagonal; use method 'gmres' or 'direct'")
        inv = 1.0 / d
        return lambda r: inv * r
    if name == "sgs":
        from pyamg.relaxation.relaxation import gauss_seidel

        if np.any(A.diagonal() == 0):
            raise ConfigError("Gauss-Seidel needs a nonzero diagonal; use method 'gmres' or 'direct'")

        def sgs(r: np.ndarray) -> np.ndarray:
            z = np.zeros_like(r)
            gauss_seidel(A, z, r, iterations=1, sweep="symmetric")
            return z

        return sgs
    if name == "ic":
        from .incomplete import ichol0, triangular_solver

        return triangular_solver(ichol0(A))
    if name == "amg":
        import pyamg

        hierarchy = pyamg.ruge_stuben_solver(
            A,
            presmoother=("gauss_seidel", {"sweep": "forward"}),
            postsmoother=("gauss_seidel", {"sweep": "backward"}),
        )
        return hierarchy.aspreconditioner(cycle="V").matvec
    raise UnknownNameError("classical preconditioner", name, list(CLASSICAL_PRECONDITIONERS))


def _classical_pcg(name: str, A, b, tol, maxiter, x0, default_maxiter: int) -> SolveResult:
    t0 = time.perf_counter()
    precondition = classical_preconditioner(A, name)
    setup = time.perf_counter() - t0
    return _pcg_result(f"pcg-{name}", A, b, tol, maxiter or default_maxiter, x0, setup, precondition)


@register("pcg-jacobi")
def _pcg_jacobi(A, b, tol, maxiter, x0) -> SolveResult:
    return _classical_pcg("jacobi", A, b, tol, maxiter, x0, 10 * A.shape[0])


@register("pcg-ic")
def _pcg_ic(A, b, tol, maxiter, x0) -> SolveResult:
    return _classical_pcg("ic", A, b, tol, maxiter, x0, 10 * A.shape[0])


@register("pcg-amg")
def _pcg_amg(A, b, tol, maxiter, x0, device=None) -> SolveResult:
    if device is not None and runtime.device(device).type != "cpu":
        from . import amg_torch  # the pyamg hierarchy's cycle in torch, on the device

        return amg_torch.solve(A, b, tol, maxiter or 500, x0, device=device)
    return _classical_pcg("amg", A, b, tol, maxiter, x0, 500)


@register("pcg-mg")
def _pcg_mg(A, b, tol, maxiter, x0, device=None) -> SolveResult:
    from . import multigrid  # torch: imported when used

    return multigrid.solve(A, b, tol, maxiter, x0, device=device)


#: methods whose work runs on a chosen torch device (``solve(..., device=)``, ``sciml solve --device``)
DEVICE_METHODS = ("pcg-mg", "pcg-amg")


@register("gmres")
def _gmres(A, b, tol, maxiter, x0) -> SolveResult:
    import scipy.sparse.linalg as spla

    nb = np.linalg.norm(b) or 1.0
    restart = min(100, A.shape[0])
    total = maxiter or 500
    start = np.zeros_like(b) if x0 is None else x0
    history = [np.linalg.norm(b - A @ start) / nb]
    t0 = time.perf_counter()
    # with no preconditioner the 'pr_norm' callback reports ||r_k|| / ||b|| per inner step
    x, _ = spla.gmres(A, b, x0=start, rtol=tol, atol=0.0, restart=restart,
                      maxiter=max(1, -(-total // restart)), callback=history.append,
                      callback_type="pr_norm")
    elapsed = time.perf_counter() - t0
    final = relative_residual(A, x, b) if np.linalg.norm(b) > 0 else np.linalg.norm(A @ x)
    history.append(final)
    its = len(history) - 2
    return SolveResult(x, bool(final <= tol), its, np.array(history), 0.0, elapsed, "gmres")
