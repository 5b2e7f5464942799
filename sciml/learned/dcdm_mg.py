"""DCDM inside the multigrid cycle: the network as the finest level's smoother (``dcdm-mg:RUN``).

A DCDM network used alone (:mod:`.dcdm`) has to approximate ``A^-1`` at every scale, and at
scales it never saw in training it does not: on the 3-D obstacles a network trained at 32^3
takes 13 / 19 / 27 iterations at 32^3 / 64^3 / 128^3, 2.08x, and deflating the lowest modes
does not fix it (``benchmarks/measured/cpu-2026-12-05/dcdm-deflation-probe.md``). Here the
network only has to do what a smoother does, and the classical hierarchy of ``pcg-mg``
(:class:`sciml.solvers.multigrid.Multigrid`: Dendy's interpolation, Galerkin coarse grids)
does the rest. For a residual ``r`` the search direction is ``x`` after, from ``x = 0``:

1. ``sweeps`` Gauss-Seidel sweeps on ``A x = r`` (the V-cycle's pre-smoothing), then the local
   solve (below);
2. a network step: ``q = f(r - A x)`` (:class:`.dcdm.Direction`, which works up to a scalar),
   ``x += a q`` with ``a`` the exact A-line search for the error;
3. the coarse-grid correction ``x += P B_1 P^T (r - A x)``, with ``B_1`` ``coarse_iterations``
   (2) CG iterations on the level-1 problem preconditioned by its V-cycle, i.e. the coarse solve of
   a K-cycle (Notay & Vassilevski 2008) (:meth:`~sciml.solvers.multigrid.Multigrid.coarse_correction`);
4. a second network step as in 2, then the local solve;
5. ``sweeps`` Gauss-Seidel sweeps in the reverse order (post-smoothing).

The local solve is an exact block Gauss-Seidel step on the fluid points at which the coarse
space does not reproduce a constant, ``(P 1)_i < local_threshold`` (0.95; the values there are
0-0.9, so the set is the same for any threshold in 0.95-0.99): the cells next to the Dirichlet
boundary on the sides without a coarse point, and cells in gaps between obstacles narrower than a
coarse cell. It is Brandt's extra relaxation where the coarse grid does not reach, with a sparse LU
(6 % of the fluid cells at 128^3, mostly the boundary layer). With ``coarse_iterations=0,
local_threshold=0`` and no network this is exactly the classical V(1,1)-cycle (tested). Each
step never increases the error's A-norm: a line search along any ``q`` removes the error's
A-orthogonal projection onto ``q``, the local solve is the A-orthogonal projection onto its points,
and Gauss-Seidel and the coarse correction are A-norm contractions. The network and the inner CG
are nonlinear, so the cycle is not a fixed SPD matrix and plain PCG does not apply; the DCDM
iteration does (every direction A-orthogonalised against all previous ones, exact line search:
:func:`.dcdm.dcdm_solve`), with the hand-over to PCG-IC(0) of :func:`.dcdm.solve_with_fallback`
when the directions stop helping. Any DCDM run works, unchanged: the network is the one
``sciml train dcdm`` trained alone.

Measured on the 2-core CPU with networks trained for DCDM alone (``benchmarks/dcdm.py``, method
``+mg``; ``benchmarks/measured/cpu-2026-12-05c/``), iterations to 1e-6 on unseen samples:

* 3-D obstacles (``dcdm-plain-16-32u2``, trained up to 32^3): 4, 4 / 5 / 6 at 32^3 / 64^3 / 128^3
  (``dcdm-obstacles-kcycle.md``), 1.25x and 1.50x, against ``pcg-mg`` 9, 8 / 9 / 13, this cycle
  without the network 8, 8 / 9 / 9 and the network alone 13, 12 / 19 / 27. On three more geometries
  4 at 32^3 and 5 at 128^3. With the V-cycle's own coarse correction and no local solve it took
  5, 4 / 5 / 8: two CG iterations on level 1 are as good as an exact coarse solve (7 -> 5 at 128^3 on
  seed 101) and the local solve handles the one-cell crack of the 128^3 sample (``dcdm-kcycle-probes.md``).
* ConDiff variance 2.0 (trained at 64^2): 4-5 / 4-5 at 64^2 / 128^2 against ``pcg-mg`` 7 / 7,
  this cycle without the network 6-7 / 6, PCG-IC(0) 97-104 / 181-189 and the networks alone
  41-187 / 100-631 (``dcdm-condiff-kcycle.md``).

On the CPU the network dominates the cost: about 50 s per solve at 128^3 against 3-4 s for ``pcg-mg``.
"""

from __future__ import annotations

import dataclasses
import time

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla
import torch

from .. import runtime
from ..solvers import multigrid as mgm
from ..solvers.linear import SolveResult, register_run_method
from .dcdm import Direction, cached_network, fluid_rows, grid_shape, solve_with_fallback

KIND = "dcdm-mg"
COARSE_ITERATIONS = 2  # CG iterations on level 1 per coarse correction (0: the V-cycle's own)
LOCAL_THRESHOLD = 0.95  # exact local solve where the interpolated coarse constant is below this (0: none)


class CycleDirection:
    """``r -> x``: one multigrid cycle on ``A x = r`` whose finest-level smoothing includes the
    network's line-searched steps (module docstring). ``direction`` ``None``: the same cycle without
    them, which with ``coarse_iterations=0`` and ``local_threshold=0`` is the classical
    V(``sweeps``, ``sweeps``)-cycle. ``coarse_iterations``: CG iterations on level 1 per coarse
    correction (0: the V-cycle's); ``local_threshold``: the local exact solve acts where the
    interpolated coarse constant is below it (0: nowhere). Vectors are float64 numpy ``(N,)``, as for
    :class:`.dcdm.Direction`; the hierarchy lives on ``device`` (the network's, in :meth:`for_matrix`),
    in float64."""

    def __init__(self, A: sp.spmatrix, direction=None, shape: tuple[int, ...] | None = None, sweeps: int = 1,
                 device: str = "cpu", coarse_iterations: int = COARSE_ITERATIONS,
                 local_threshold: float = LOCAL_THRESHOLD):
        A = sp.csr_matrix(A)
        self.shape = tuple(shape) if shape is not None else getattr(direction, "shape", None)
        self.device = torch.device(device)
        self.mg = mgm.Multigrid(mgm.stencils([A], self.shape, self.device))  # float64, where the network runs
        self.shape = self.mg.shape
        self.direction, self.sweeps, self.coarse_iterations = direction, int(sweeps), int(coarse_iterations)
        # the local exact solve: fluid points (rows that couple to a neighbour) the interpolation of
        # the coarse constant reaches by less than local_threshold
        reach = self.mg.interpolated_constant().reshape(-1).cpu().numpy()
        self.local = np.nonzero(fluid_rows(A) & (reach < local_threshold))[0]
        self._local_lu = spla.splu(A[self.local][:, self.local].tocsc()) if len(self.local) else None
        self._local_index = torch.from_numpy(self.local).to(self.device)

    def _tensor(self, v: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(v, dtype=np.float64)).reshape(1, *self.shape).to(self.device)

    def _network_step(self, x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
        res = f - self.mg.matvec(x)
        q = self._tensor(self.direction(res.reshape(-1).cpu().numpy()))
        qAq = float((q * self.mg.matvec(q)).sum())
        if not np.isfinite(qAq) or qAq <= 0:
            return x  # the network gave nothing usable here: skip the step (the A-norm stays)
        return x + float((q * res).sum()) / qAq * q

    def _local_solve(self, x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
        """``x`` with the residual zeroed exactly on the local points (a block Gauss-Seidel step)."""
        if self._local_lu is None:
            return x
        res = (f - self.mg.matvec(x)).reshape(-1)[self._local_index].cpu().numpy()
        x = x.clone()
        x.view(-1)[self._local_index] += torch.from_numpy(self._local_lu.solve(res)).to(self.device)
        return x

    def __call__(self, r: np.ndarray) -> np.ndarray:
        f = self._tensor(r)
        x = self._local_solve(self.mg.smooth(f, sweeps=self.sweeps), f)
        if self.direction is not None:
            x = self._network_step(x, f)
        x = x + self.mg.coarse_correction(f - self.mg.matvec(x), self.coarse_iterations)
        if self.direction is not None:
            x = self._network_step(x, f)
        x = self._local_solve(x, f)
        return self.mg.smooth(f, x, sweeps=self.sweeps, reverse=True).reshape(-1).cpu().numpy().copy()

    @classmethod
    def for_matrix(cls, net, A: sp.spmatrix, device: str = "cpu", **options) -> "CycleDirection":
        """The cycle of ``A``'s hierarchy with ``net`` (a :class:`.dcdm.DCDMNet`) as its network;
        ``options`` as for the constructor."""
        A = sp.csr_matrix(A)
        return cls(A, Direction.for_matrix(net, A, device=device), grid_shape(A.shape[0], net.config.dim),
                   device=device, **options)


@register_run_method(KIND)
def solve_with_run(A: sp.spmatrix, b: np.ndarray, tol: float, maxiter: int | None, x0, run: str) -> SolveResult:
    """The ``dcdm-mg:RUN`` solve method: DCDM with the run's network inside ``pcg-mg``'s cycle."""
    t0 = time.perf_counter()
    direction = CycleDirection.for_matrix(cached_network(run), A, device=runtime.device("auto"))
    setup = time.perf_counter() - t0
    result, _ = solve_with_fallback(A, b, direction, tol=tol, maxiter=maxiter, x0=x0, memory=None)
    return dataclasses.replace(result, setup_time=setup, method=f"{KIND}:{run}")
