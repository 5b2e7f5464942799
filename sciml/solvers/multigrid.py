"""Robust structured multigrid in torch: black-box interpolation, Galerkin coarse grids, batched.

For the conservative 5-point (2-D) and 7-point (3-D) stencils our generators assemble, with
variable and jumping coefficients, zero Dirichlet data and decoupled (masked) rows. One code
path runs on the CPU and on a GPU, in float64, for ``B`` systems of one grid size at once
(set-up included). Used as the preconditioner of CG (method ``pcg-mg`` of
:func:`sciml.solvers.solve`), it reaches ``1e-8`` in a grid-independent number of iterations.

The method (Dendy 1982, "Black box multigrid", J. Comput. Phys. 48; Trottenberg, Oosterlee &
Schueller, *Multigrid*, 2001, sections 7.7 and A.8 for the Galerkin operator):

* **Grids.** ``n`` unknowns per axis coarsen to ``n // 2``: coarse point ``i`` is fine point
  ``2 i + 1`` (0-based), so ``2^k - 1`` nests exactly and any other ``n`` works as well (the
  last coarse point then sits next to the boundary). A level is stored as a stencil tensor
  ``S`` of shape ``(B, 3^d, *shape)``: ``S[:, k, p] = A[p, p + o_k]`` for the offsets
  ``o_k in {-1, 0, 1}^d`` (zero where ``p + o_k`` leaves the grid). The fine level has 5 (7)
  nonzero offsets, the coarse ones 9 (27).
* **Interpolation** (operator dependent). A fine point whose index is even along the axes
  ``F`` and odd along the others is interpolated from its neighbours one step away along
  ``F`` (those are coarse along one more axis, so the points are filled in order of
  ``|F| = 1, 2, 3``): the stencil is summed ("collapsed") over the offsets along the other
  axes, ``a(o) = sum_{o'} S[p, (o, o')]``, and ``u_p = -sum_{o != 0} a(o) u_{p+o} / a(0)``.
  Across a jump the weights follow the flux (the large coefficient side gets the weight),
  where bilinear interpolation (``interpolation="bilinear"``, kept to show it) averages and
  loses grid independence: at contrast 1e5 it needs several times the iterations
  (``benchmarks/multigrid.py``).
* **Restriction** is the transpose ``P^T``, applied matrix-free by reversing the
  interpolation's steps. **Coarse operators** are Galerkin, ``A_c = P^T A P``, computed by
  probing with the ``3^d`` colour vectors of the coarse grid (coarse points equal modulo 3
  along every axis never share a fine neighbour of the product), then symmetrised.
* **Smoothing**: multicolour Gauss-Seidel with the ``2^d`` parity classes of the grid, in the
  order ``(0,0), (1,1), (0,1), (1,0)`` (2-D), which is red-black Gauss-Seidel on the 5-point
  level and a 4-colour Gauss-Seidel on 9-point ones; points of one class never couple, so a
  class updates at once (parallel on a GPU). Post-smoothing runs the classes in reverse
  order, the adjoint of pre-smoothing, so the V-cycle is symmetric positive definite.
* **Coarsest grid** (at most ``COARSEST`` points, or an axis shorter than 3): dense batched
  Cholesky.

Reference: ``tests/test_multigrid.py`` builds the same cycle point by point in scipy
(interpolation from Dendy's formulas, ``P^T A P`` by scipy) and checks the two agree to round-off.
"""

from __future__ import annotations

import itertools
import math
import time
from typing import Callable, Sequence

import numpy as np
import scipy.sparse as sp
import torch

from .. import runtime
from ..errors import ConfigError, DataError, UnknownNameError
from .krylov_torch import BatchedCG, pcg, solve_result, synchronize

#: the coarsest level is solved densely once it has at most this many points
COARSEST = 512
INTERPOLATIONS = ("dendy", "bilinear")


def offsets(dim: int) -> list[tuple[int, ...]]:
    """The ``3^dim`` stencil offsets in C order; ``offsets(d)[3^d // 2]`` is the centre."""
    return list(itertools.product((-1, 0, 1), repeat=dim))


def parity_classes(dim: int) -> list[tuple[int, ...]]:
    """The ``2^dim`` parity classes in smoothing order: even coordinate sum first (red-black
    order on a ``(2d+1)``-point stencil)."""
    return sorted(itertools.product((0, 1), repeat=dim), key=lambda c: (sum(c) % 2, c))


# ----------------------------------------------------------------------------- stencils


def grid_shape_of(A: sp.spmatrix, shape: Sequence[int] | None = None) -> tuple[int, ...]:
    """The grid on which ``A`` is a ``3^d``-point stencil: ``shape`` if given, else the square
    (``m^2``) or cube (``m^3``) grid of ``A``'s size whose stencil holds every nonzero."""
    return _locate(A, shape)[0]


def _locate(A: sp.spmatrix, shape: Sequence[int] | None):
    """``(shape, (rows, offset index, values))`` of ``A`` as a stencil (see :func:`grid_shape_of`)."""
    n = A.shape[0]
    if shape is not None:
        shape = tuple(int(s) for s in shape)
        if math.prod(shape) != n:
            raise ConfigError(f"grid shape {shape} has {math.prod(shape)} points but the matrix has {n} rows")
        found = _stencil_index(A, shape)
        if found is None:
            raise ConfigError(f"the matrix has entries outside the 3^{len(shape)}-point stencil of the grid {shape}; "
                              "pcg-mg needs a structured-grid stencil, use pcg-amg")
        return shape, found
    for dim in (2, 3, 1):
        m = round(n ** (1.0 / dim))
        for mm in (m - 1, m, m + 1):
            if mm >= 1 and mm**dim == n:
                found = _stencil_index(A, (mm,) * dim)
                if found is not None:
                    return (mm,) * dim, found
    raise ConfigError(f"the matrix ({n} unknowns) is not a 5-, 7- or 9-point stencil on a square or cube grid; "
                      "pcg-mg needs a structured grid (pass its shape) or use pcg-amg")


def _stencil_index(A: sp.spmatrix, shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """``(rows, offset index k, values)`` of the nonzeros of ``A`` on the grid ``shape``, or None
    when an entry couples points more than one step apart along some axis."""
    A = sp.csr_matrix(A)
    A.sum_duplicates()
    itype = np.int32 if A.shape[0] < 2**31 else np.int64
    rows = np.repeat(np.arange(A.shape[0], dtype=itype), np.diff(A.indptr))
    r, c = rows.copy(), A.indices.astype(itype)
    k = np.zeros_like(r)
    weight = 1
    for m in reversed(shape):
        d = c % m - r % m
        if np.any(np.abs(d) > 1):
            return None
        k += (d + 1) * weight
        weight *= 3
        r //= m
        c //= m
    return rows, k, A.data


def _fits(A: sp.spmatrix, shape: tuple[int, ...]) -> bool:
    return _stencil_index(A, shape) is not None


def stencil_from_csr(A: sp.spmatrix, shape: Sequence[int] | None = None) -> np.ndarray:
    """``S`` of shape ``(3^d, *shape)`` with ``S[k, p] = A[p, p + o_k]`` (float64); ``shape``
    default: the square or cube grid of :func:`grid_shape_of`."""
    shape, (rows, k, values) = _locate(A, shape)
    S = np.zeros((3 ** len(shape), math.prod(shape)))
    S[k, rows] = values
    return S.reshape((3 ** len(shape), *shape))


def _interior(dim: int) -> tuple[slice, ...]:
    return (slice(None),) + (slice(1, -1),) * dim


def _shifted(shape: Sequence[int], off: Sequence[int], start: Sequence[int] = None, step: int = 1) -> tuple[slice, ...]:
    """Slice of a zero-padded ``(B, *(shape + 2))`` tensor: the points ``start + step * j + off``
    (interior coordinates) for the ``j`` of the class, which has ``shape`` points."""
    start = start or (0,) * len(shape)
    return (slice(None),) + tuple(slice(1 + s + o, 1 + s + o + step * (m - 1) + 1, step)
                                  for m, o, s in zip(shape, off, start))


def _count(n: int, parity: int) -> int:
    """How many of ``0..n-1`` have ``parity``."""
    return (n - parity + 1) // 2


def apply_stencil(S: torch.Tensor, upad: torch.Tensor, active: Sequence[int] | None = None) -> torch.Tensor:
    """``y[p] = sum_k S[:, k, p] u[p + o_k]`` for ``u`` in the interior of the zero-padded ``upad``;
    ``active`` lists the off-centre offsets to visit (default: all)."""
    dim = S.dim() - 2
    shape, offs = tuple(S.shape[2:]), offsets(dim)
    centre = len(offs) // 2
    y = S[:, centre] * upad[_interior(dim)]
    for k in (range(len(offs)) if active is None else active):
        if k != centre:
            y.addcmul_(S[:, k], upad[_shifted(shape, offs[k])])
    return y


# ----------------------------------------------------------------------------- levels


class Level:
    """One grid of the hierarchy: its stencil, smoother data and the interpolation to it from
    the next coarser grid (``weights``)."""

    def __init__(self, S: torch.Tensor):
        self.S = S
        self.B, self.shape = S.shape[0], tuple(S.shape[2:])
        self.dim = len(self.shape)
        self.offs = offsets(self.dim)
        self.centre = len(self.offs) // 2
        # offsets carrying a nonzero anywhere (5 of 9 on the fine 2-D level)
        nz = S.flatten(2).abs().amax(dim=(0, 2)) > 0
        self.active = [k for k in range(len(self.offs)) if k != self.centre and bool(nz[k])]
        diag = S[:, self.centre]
        if bool((diag <= 0).any()):
            raise DataError("the matrix has a non-positive diagonal entry; pcg-mg needs a symmetric positive "
                            "definite matrix (use direct or gmres)")
        # smoother data per parity class: the class's stencil (contiguous) and inverse diagonal
        self.classes = []
        for c in parity_classes(self.dim):
            counts = tuple(_count(m, p) for m, p in zip(self.shape, c))
            if 0 in counts:
                continue
            index = (slice(None),) + tuple(slice(p, None, 2) for p in c)
            coeffs = [(self.offs[k], S[:, k][index].contiguous()) for k in self.active]
            self.classes.append((c, counts, index, coeffs, (1.0 / diag[index]).contiguous()))
        self.weights: dict[tuple[int, ...], list] = {}  # set by the coarser level's setup

    def padded(self) -> torch.Tensor:
        return self.S.new_zeros((self.B, *(m + 2 for m in self.shape)))

    def matvec(self, upad: torch.Tensor) -> torch.Tensor:
        """``A u`` for ``u`` held in the interior of the zero-padded ``upad``."""
        return apply_stencil(self.S, upad, self.active)

    def smooth(self, upad: torch.Tensor, f: torch.Tensor, reverse: bool = False) -> torch.Tensor:
        """One multicolour Gauss-Seidel sweep on ``A u = f``; returns the new ``upad``: ``upad``
        itself, updated in place, unless autograd must see the sweep (a stencil that requires
        gradients: a hierarchy with learned interpolation in training), then a new tensor."""
        graph = _graph(self.S)
        for c, counts, index, coeffs, inv in (reversed(self.classes) if reverse else self.classes):
            if graph:
                r = f[index] - sum(s * upad[_shifted(counts, off, c, 2)] for off, s in coeffs)
                upad = upad.clone()
            else:
                r = f[index].clone()
                for off, s in coeffs:
                    r.addcmul_(s, upad[_shifted(counts, off, c, 2)], value=-1.0)
            upad[_shifted(counts, (0,) * self.dim, c, 2)] = r * inv
        return upad


def coarse_shape(shape: Sequence[int]) -> tuple[int, ...]:
    return tuple(m // 2 for m in shape)


def _fine_classes(dim: int) -> list[tuple[int, ...]]:
    """Non-coarse fine classes as the tuple of axes along which the point index is even (F),
    in interpolation order (fewest F axes first)."""
    axes = [tuple(a for a in range(dim) if mask[a]) for mask in itertools.product((0, 1), repeat=dim)]
    return sorted((f for f in axes if f), key=lambda f: (len(f), f))


def _class_start_counts(shape, F):
    """Fine coordinates of class ``F``: start index and count per axis (even along F, odd else)."""
    start = tuple(0 if a in F else 1 for a in range(len(shape)))
    counts = tuple(_count(m, s) for m, s in zip(shape, start))
    return start, counts


def _class_offsets(dim, F):
    """Offsets within the axes F (zero elsewhere), centre excluded."""
    out = []
    for sub in itertools.product((-1, 0, 1), repeat=len(F)):
        if any(sub):
            off = [0] * dim
            for a, o in zip(F, sub):
                off[a] = o
            out.append(tuple(off))
    return out


def interpolation_weights(level: Level, kind: str = "dendy") -> dict:
    """Weights of the interpolation to ``level`` from its coarse grid, per fine class ``F``:
    a list of ``(offset, weight tensor (B, *class counts))``."""
    dim, shape = level.dim, level.shape
    weights = {}
    for F in _fine_classes(dim):
        start, counts = _class_start_counts(shape, F)
        if 0 in counts:
            weights[F] = []
            continue
        offs = _class_offsets(dim, F)
        if kind == "bilinear":
            corner = [o for o in offs if all(o[a] != 0 for a in F)]
            weights[F] = [(o, level.S.new_full((level.B, *counts), 0.5 ** len(F))) for o in corner]
            continue
        index = (slice(None),) + tuple(slice(s, None, 2) for s in start)
        collapsed: dict[tuple[int, ...], torch.Tensor] = {}
        for k, off in enumerate(level.offs):
            key = tuple(off[a] if a in F else 0 for a in range(dim))
            value = level.S[:, k][index]
            collapsed[key] = value if key not in collapsed else collapsed[key] + value
        centre = collapsed[(0,) * dim]
        safe = torch.where(centre != 0, centre, torch.ones_like(centre))
        weights[F] = [(o, torch.where(centre != 0, -collapsed[o] / safe, torch.zeros_like(centre)).contiguous())
                      for o in offs if bool((collapsed[o] != 0).any())]
    return weights


def _graph(*tensors: torch.Tensor) -> bool:
    """Whether autograd records operations on ``tensors`` (then the transfers and sweeps run out
    of place: an in-place update of a view saved for the backward pass breaks it)."""
    return torch.is_grad_enabled() and any(t.requires_grad for t in tensors)


def _learned(level: Level) -> bool:
    return _graph(*(w for ws in level.weights.values() for _, w in ws))


def prolong(level: Level, coarse: torch.Tensor) -> torch.Tensor:
    """``P e`` on ``level`` (zero-padded result) of the coarse vector ``coarse`` ``(B, *coarse shape)``."""
    v = level.padded()
    dim, shape = level.dim, level.shape
    graph = _learned(level)
    cstart, ccounts = _class_start_counts(shape, ())
    v[_shifted(ccounts, (0,) * dim, cstart, 2)] = coarse
    for F, ws in level.weights.items():
        start, counts = _class_start_counts(shape, F)
        if not ws:
            continue
        if graph:  # out of place: each class is written into a fresh copy
            value = sum(w * v[_shifted(counts, off, start, 2)] for off, w in ws)
            v = v.clone()
            v[_shifted(counts, (0,) * dim, start, 2)] = value
            continue
        target = v[_shifted(counts, (0,) * dim, start, 2)]
        for off, w in ws:
            target.addcmul_(w, v[_shifted(counts, off, start, 2)])
    return v


def restrict(level: Level, r: torch.Tensor) -> torch.Tensor:
    """``P^T r`` of the fine vector ``r`` ``(B, *shape)``: the interpolation's steps reversed."""
    dim, shape = level.dim, level.shape
    graph = _learned(level)
    t = level.padded()
    t[_interior(dim)] = r
    for F in reversed(list(level.weights)):
        ws = level.weights[F]
        if not ws:
            continue
        start, counts = _class_start_counts(shape, F)
        source = t[_shifted(counts, (0,) * dim, start, 2)]
        if graph:
            t = t.clone()
            for off, w in ws:
                target = _shifted(counts, off, start, 2)
                t[target] = t[target] + w * source
            continue
        for off, w in ws:
            t[_shifted(counts, off, start, 2)].addcmul_(w, source)
    cstart, ccounts = _class_start_counts(shape, ())
    return t[_shifted(ccounts, (0,) * dim, cstart, 2)].contiguous()


def galerkin(level: Level) -> torch.Tensor:
    """Stencil ``(B, 3^d, *coarse shape)`` of ``P^T A P``, by probing with the ``3^d`` colour
    vectors (coarse points equal modulo 3), symmetrised."""
    dim = level.dim
    cshape = coarse_shape(level.shape)
    offs = offsets(dim)
    Sc = level.S.new_zeros((level.B, len(offs), *cshape))
    for colour in itertools.product(range(3), repeat=dim):
        e = level.S.new_zeros((level.B, *cshape))
        e[(slice(None),) + tuple(slice(c, None, 3) for c in colour)] = 1.0
        z = restrict(level, level.matvec(prolong(level, e)))
        for k, off in enumerate(offs):
            # row K's entry towards K + off comes from the probe whose colour K + off has
            index = (slice(None),) + tuple(slice((c - o) % 3, None, 3) for c, o in zip(colour, off))
            Sc[:, k][index] = z[index]
    # zero the couplings leaving the grid, then average A[K, K+o] with A[K+o, K]
    for k, off in enumerate(offs):
        for a, o in enumerate(off):
            if o:
                edge = [slice(None)] * (dim + 1)
                edge[1 + a] = slice(-1, None) if o > 0 else slice(0, 1)
                Sc[:, k][tuple(edge)] = 0.0
    sym = Sc.clone()
    for k, off in enumerate(offs):
        if any(off):
            back = offs.index(tuple(-o for o in off))
            src = (slice(None),) + tuple(slice(max(-o, 0), m + min(-o, 0)) for o, m in zip(off, cshape))
            dst = (slice(None),) + tuple(slice(max(o, 0), m + min(o, 0)) for o, m in zip(off, cshape))
            # A[K, K+o] (row K, at K in src) and A[K+o, K] (row K+o, offset -o, at K+o in dst)
            sym[:, k][src] = 0.5 * (Sc[:, k][src] + Sc[:, back][dst])
    return sym


def dense_matrix(S: torch.Tensor) -> torch.Tensor:
    """The dense ``(n, n)`` matrix of one stencil ``S`` ``(3^d, *shape)`` (columns ``A e_j``)."""
    shape = tuple(S.shape[1:])
    n = math.prod(shape)
    upad = S.new_zeros((n, *(m + 2 for m in shape)))
    upad[_interior(len(shape))] = torch.eye(n, dtype=S.dtype, device=S.device).reshape(n, *shape)
    return apply_stencil(S.unsqueeze(0).expand(n, *S.shape), upad).reshape(n, n).T


# ----------------------------------------------------------------------------- hierarchy


class Multigrid:
    """Batched multigrid hierarchy of ``B`` stencils ``S`` ``(B, 3^d, *shape)`` (torch, float64).

    ``Multigrid(S)(f)`` applies one symmetric V(``presmooth``, ``postsmooth``)-cycle from a zero
    initial guess to ``f`` ``(B, *shape)``: an SPD approximation of ``A^-1``. ``interpolation``:
    ``"dendy"``, ``"bilinear"`` or a function of a :class:`Level` returning its weights in the
    form of :func:`interpolation_weights` (a learned interpolation, :mod:`sciml.learned.nmg`; any
    weights keep the cycle SPD, since ``P`` injects the coarse points and so has full rank).
    ``coarse_repeats``: every level but the finest runs ``coarse_repeats`` times its sweeps per
    side (still symmetric): the classical cycle with the classical sweeps of a neural cycle
    with ``NMGConfig.coarse_repeats`` (:mod:`sciml.learned.nmg`), its fair reference.
    """

    def __init__(self, S: torch.Tensor, presmooth: int = 1, postsmooth: int | None = None,
                 interpolation: str | Callable[[Level], dict] = "dendy", coarsest: int = COARSEST,
                 coarse_repeats: int = 1):
        if not callable(interpolation) and interpolation not in INTERPOLATIONS:
            raise UnknownNameError("interpolation", interpolation, list(INTERPOLATIONS))
        if S.dtype != torch.float64:
            raise ConfigError(f"multigrid stencils must be float64, got {S.dtype}")
        self.interpolation = interpolation
        self.presmooth = int(presmooth)
        self.postsmooth = self.presmooth if postsmooth is None else int(postsmooth)
        if coarse_repeats < 1:
            raise ConfigError(f"multigrid coarse_repeats must be >= 1, got {coarse_repeats}")
        self.coarse_repeats = int(coarse_repeats)
        self.levels = [Level(S)]
        while math.prod(self.levels[-1].shape) > coarsest and min(self.levels[-1].shape) >= 3:
            fine = self.levels[-1]
            fine.weights = (interpolation(fine) if callable(interpolation)
                            else interpolation_weights(fine, interpolation))
            self.levels.append(Level(galerkin(fine)))
        self._factor_coarsest()

    def _factor_coarsest(self) -> None:
        level = self.levels[-1]
        n = math.prod(level.shape)
        if n > 20_000:
            raise ConfigError(f"the coarsest grid {level.shape} is too large for a dense solve; pcg-mg coarsens every "
                              "axis by 2 and needs axes of similar length")
        dense = torch.stack([dense_matrix(level.S[b]) for b in range(level.B)])
        factor, info = torch.linalg.cholesky_ex(0.5 * (dense + dense.transpose(1, 2)))
        if bool((info != 0).any()):
            raise DataError("the coarsest multigrid matrix is not positive definite: the matrix is not SPD "
                            "(or singular, e.g. a pure Neumann problem); use pcg-amg, direct or gmres")
        self.coarse_factor = factor

    @property
    def shape(self) -> tuple[int, ...]:
        return self.levels[0].shape

    def __call__(self, f: torch.Tensor) -> torch.Tensor:
        return self._cycle(0, f)

    def _cycle(self, l: int, f: torch.Tensor) -> torch.Tensor:
        level = self.levels[l]
        if l == len(self.levels) - 1:
            rhs = f.reshape(level.B, -1, 1)
            return torch.cholesky_solve(rhs, self.coarse_factor).reshape(f.shape)
        u = level.padded()
        repeats = 1 if l == 0 else self.coarse_repeats
        for _ in range(repeats * self.presmooth):
            u = level.smooth(u, f)
        r = f - level.matvec(u)
        e = self._cycle(l + 1, restrict(level, r))
        u = u + prolong(level, e) if _graph(level.S) else u.add_(prolong(level, e))
        for _ in range(repeats * self.postsmooth):
            u = level.smooth(u, f, reverse=True)
        return u[_interior(level.dim)].contiguous()

    def coarse_correction(self, r: torch.Tensor, iterations: int = 0) -> torch.Tensor:
        """``P B_1 P^T r`` for a finest-level residual ``r`` ``(B, *shape)``: the correction the
        V-cycle adds after pre-smoothing, with ``B_1`` the V-cycle of the levels below the finest
        (the exact solve when level 1 is the coarsest; ``A^-1 r`` when the finest level is).

        ``iterations`` > 0: ``B_1`` is instead that many iterations of CG on the level-1 problem,
        from zero, preconditioned by its V-cycle (``pcg-mg`` on level 1, a K-cycle's coarse solve,
        Notay & Vassilevski 2008): closer to the exact two-grid correction, but a nonlinear map
        of ``r``, so a cycle using it needs a flexible outer iteration (FCG, DCDM)."""
        if len(self.levels) == 1:
            return self._cycle(0, r)
        level = self.levels[0]
        rc = restrict(level, r)
        if iterations > 0 and len(self.levels) > 2:
            coarse = self.levels[1]

            def matvec(v: torch.Tensor) -> torch.Tensor:
                vp = coarse.padded()
                vp[_interior(coarse.dim)] = v
                return coarse.matvec(vp)

            ec = pcg(matvec, rc, 0.0, int(iterations), None, lambda v: self._cycle(1, v)).x
        else:
            ec = self._cycle(1, rc)
        return prolong(level, ec)[_interior(level.dim)].contiguous()

    def interpolated_constant(self) -> torch.Tensor:
        """``P 1``: the interpolation of the coarse grid's constant to the finest grid ``(B, *shape)``
        (1 where the coarse space represents a locally constant error, below 1 near Dirichlet
        boundaries and where walls cut the coarse cells); all ones on a one-level hierarchy."""
        level = self.levels[0]
        if len(self.levels) == 1:
            return torch.ones((level.B, *level.shape), dtype=level.S.dtype, device=level.S.device)
        ones = torch.ones((level.B, *self.levels[1].shape), dtype=level.S.dtype, device=level.S.device)
        return prolong(level, ones)[_interior(level.dim)].contiguous()

    def smooth(self, f: torch.Tensor, x: torch.Tensor | None = None, sweeps: int = 1,
               reverse: bool = False) -> torch.Tensor:
        """``sweeps`` Gauss-Seidel sweeps of the finest level on ``A x = f`` from ``x`` (zero by
        default), in the post-smoothing order when ``reverse``: the new ``x`` ``(B, *shape)``."""
        level = self.levels[0]
        u = level.padded()
        if x is not None:
            u[_interior(level.dim)] = x
        for _ in range(sweeps):
            u = level.smooth(u, f, reverse=reverse)
        return u[_interior(level.dim)].contiguous()

    def matvec(self, x: torch.Tensor) -> torch.Tensor:
        """``A x`` of the finest level for ``x`` ``(B, *shape)``."""
        level = self.levels[0]
        upad = level.padded()
        upad[_interior(level.dim)] = x
        return level.matvec(upad)

    def solve(self, b: torch.Tensor, tol: float = 1e-8, maxiter: int = 200, x0: torch.Tensor | None = None) -> BatchedCG:
        """Multigrid-preconditioned CG on the batch: :class:`~.krylov_torch.BatchedCG`."""
        return pcg(self.matvec, b, tol, maxiter, x0, self)


# ----------------------------------------------------------------------------- entry points


def stencils(matrices: Sequence[sp.spmatrix], shape: Sequence[int] | None = None, device=None) -> torch.Tensor:
    """Batched stencil tensor ``(B, 3^d, *shape)`` on ``device`` of CSR matrices of one grid
    (``shape`` default: the first matrix's square or cube grid)."""
    first = stencil_from_csr(matrices[0], shape)
    shape = first.shape[1:]
    S = np.stack([first, *(stencil_from_csr(A, shape) for A in matrices[1:])])
    return torch.from_numpy(S).to(device or "cpu")


def _setup(matrices, shape, device, cycle) -> tuple[Multigrid, torch.device, float]:
    """The hierarchy of ``matrices`` on ``device`` and its set-up seconds."""
    dev = runtime.device(device or "cpu")
    t0 = time.perf_counter()
    mg = Multigrid(stencils(matrices, shape, dev), **cycle)
    synchronize(dev)
    return mg, dev, time.perf_counter() - t0


def _on(vectors, mg: Multigrid, dev) -> torch.Tensor:
    return torch.from_numpy(np.stack([np.asarray(v, dtype=np.float64) for v in vectors])).to(dev).reshape(
        len(vectors), *mg.shape)


def _timed_solve(mg: Multigrid, dev, b: torch.Tensor, tol, maxiter, x0=None) -> tuple[BatchedCG, float]:
    t0 = time.perf_counter()
    out = mg.solve(b, tol, maxiter, x0)
    synchronize(dev)
    return out, time.perf_counter() - t0


def solve_batch(matrices: Sequence[sp.spmatrix], rhs: Sequence[np.ndarray], tol: float = 1e-8,
                maxiter: int = 200, shape: Sequence[int] | None = None, device=None,
                **cycle) -> tuple[np.ndarray, np.ndarray, np.ndarray, float, float]:
    """Solve ``B`` systems of one grid at once with ``pcg-mg``: ``(x (B, n), converged (B,),
    true relative residuals (B,), setup s, solve s)``."""
    mg, dev, setup = _setup(matrices, shape, device, cycle)
    out, seconds = _timed_solve(mg, dev, _on(rhs, mg, dev), tol, maxiter)
    x = out.x.reshape(len(rhs), -1).cpu().numpy()
    return x, out.converged.cpu().numpy(), out.residuals[-1].cpu().numpy(), setup, seconds


def solve(A: sp.spmatrix, b: np.ndarray, tol: float, maxiter: int | None, x0: np.ndarray | None,
          device=None, shape: Sequence[int] | None = None, **cycle):
    """``pcg-mg`` on one system: :class:`~sciml.solvers.linear.SolveResult`."""
    mg, dev, setup = _setup([A], shape, device, cycle)
    out, seconds = _timed_solve(mg, dev, _on([b], mg, dev), tol, maxiter or 200, None if x0 is None else _on([x0], mg, dev))
    return solve_result(out, setup, seconds, "pcg-mg")
