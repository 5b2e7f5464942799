"""Neural multigrid: a learned smoother on every level of the classical hierarchy, SPD for plain CG.

The classical cycle (:class:`sciml.solvers.multigrid.Multigrid`: Dendy's black-box
interpolation, Galerkin coarse grids, multicolour Gauss-Seidel) stays as it is; on every level
but the coarsest a learned step joins its smoother. Why there: a network used alone as the
preconditioner only generalises near its training scale, whereas a local operator inside the
hierarchy sees the same kind of problem on every level and at every size (Huang, Li & Xi 2023,
"Learning optimal multigrid smoothers via neural networks", SISC 45; Greenfeld et al. 2019,
"Learning to optimize multigrid PDE solvers", ICML), so its iteration counts stay
grid-independent.

**The learned step.** Each level's matrix ``A = D^1/2 Â D^1/2`` gives per point its scaled
stencil (the ``3^d - 1`` features of :mod:`.stencil_features`: dimensionless, boundary and
contrast aware, the same on the 5-point fine level and the 9-point Galerkin levels). A small
convolutional network maps them to a local ``K^d``-point stencil ``Ŵ`` (one per point), and
the step is

    u <- u + H r,   H = D^-1/2 Ŵ Ŵ^T D^-1/2,   r = f - A u.

``H`` is symmetric positive semi-definite by construction. The network runs once per level
at set-up (the stencils depend on the matrix only); a cycle applies ``Ŵ`` and ``Ŵ^T`` as
``K^d``-point stencils (``4 K^d`` multiply-adds per point and level). One network, one set of
weights, serves every level and every grid size.

**Symmetric positive definite.** Pre-smoothing is the classical sweep(s) followed by the
learned step; post-smoothing is their adjoint (the learned step, then the sweeps in reverse
colour order). The cycle's error propagator is then ``E = S^* C S`` with
``S = (I - H A)(I - M A)`` (with ``stages`` learned steps ``S = (I - H_s A) ... (I - H_1 A)(I - M A)``,
post-smoothing applying ``H_s`` first), self-adjoint in the ``A`` inner product with
``eig(E) >= 0``, so the preconditioner is symmetric, and positive definite when ``||S||_A < 1``. Gauss-Seidel gives
``||I - M A||_A < 1``; ``||I - H A||_A <= 1`` holds when ``eig(Ŵ^T Â Ŵ) <= 2``. At set-up a
Lanczos estimate of that largest eigenvalue is taken on every level, and ``Ŵ`` is scaled down
where 1.1 times the estimate exceeds 2 (a trained network sits near 1.5; the check guards
untrained or mismatched networks). Plain PCG applies; the dense check on small grids is in
``tests/test_nmg.py``.

**Learned interpolation** (``NMGConfig.interpolation = "learned"``). A learned smoother trained
with Dendy's interpolation fixed leaves a broad band of error that no better interpolation of
the same sparsity removes alone, and vice versa (``benchmarks/interpolation_bound.py``,
``benchmarks/joint_interpolation_probe.py``): the two are learned together. A second small
network maps the same features of a level to corrections of Dendy's interpolation weights on
every offset of every fine class (2-D: 2 + 2 + 8 per point), zero at initialisation, so ``P``
keeps Dendy's sparsity and the Galerkin operators ``P^T A P`` their ``3^d``-point stencils. The
hierarchy is then built with the network (:func:`hierarchy`), level by level: the weights of a
level come from its own Galerkin stencil. Any weights keep the cycle SPD (``P`` injects the
coarse points, so it has full rank and ``P^T A P`` is SPD); non-finite weights, or a coarsest
matrix Cholesky rejects, fall back to Dendy's hierarchy with a note. Training differentiates
through the whole set-up (weights, Galerkin products, the coarsest Cholesky factor): the
multigrid transfers and sweeps run out of place when autograd records them.

**Training** (``sciml train nmg --data D.h5 --out RUN``): the hierarchies of the dataset's
matrices are built once; a step draws random errors ``e``, applies the cycle's error
propagator ``E = I - B A`` a few times and minimises the mean log of the energy-norm reduction
of the last application, ``log(||E^k e||_A / ||E^(k-1) e||_A)``, a differentiable estimate of
the cycle's convergence factor (the slowest modes dominate after the first applications).

**Safety.** A cycle that does not help is found and replaced by the classical one: non-finite
learned stencils at set-up, a CG breakdown, or a residual that fell by less than ``drop``
(10x) over the last ``patience`` (3) iterations hands the iterate to classical multigrid-PCG,
and the result's notes say at which iteration (``solve``).
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import time
from pathlib import Path
from typing import Literal, Optional, Sequence

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from torch import nn

from .. import runtime
from ..config import from_dict, to_dict
from ..errors import ConfigError, DataError, ModelError
from ..runs import check_new, load_state, read_network, register_kind, save_network, write_metrics
from ..solvers import multigrid as mgm
from ..solvers.krylov_torch import BatchedCG, pcg, solve_result, synchronize
from ..solvers.linear import SolveResult, register_run_method
from ..training.api import register_trainer
from .neural_precond import load_matrices
from .stencil_features import feature_count, stencil_features

KIND = "nmg"
#: ``eig(Ŵ^T Â Ŵ)`` must stay at most this for ``||I - H A||_A <= 1``
BOUND = 2.0
#: the Lanczos estimate is multiplied by this before it is compared with BOUND
MARGIN = 1.1
LANCZOS_STEPS = 10
INTERPOLATIONS = ("dendy", "learned")


@dataclasses.dataclass(frozen=True)
class NMGConfig:
    """The smoother network.

    dim : 2 or 3.
    kernel : the learned stencil ``Ŵ`` has ``kernel^dim`` points (odd; 3: a 3x3 stencil, so ``H``
        reaches 5x5). 5 (with 3 stages, 95.6 instead of 44.4 finest-grid stencil applications per
        cycle) lowers the held-out cycle factor on ConDiff variance 2.0 only from 0.087 to 0.078
        and takes 5/6/6/5/5 PCG iterations at 64^2..1024^2 against 5/6/6/6/5
        (``benchmarks/measured/cpu-2026-12-05/nmg3k5-condiff-high.md``): there the coarse space,
        not the smoother, limits the cycle.
    width, layers : channels and number of 3^d convolutions of the network (GELU between). The
        default (12, 2: 1,857 parameters) is as good as (24, 3) on Darcy (held-out cycle factor
        0.049 vs 0.047, 6 PCG iterations at 64^2..1024^2 both) and 5x cheaper at set-up.
    base : ``Ŵ`` at initialisation, ``base`` times the identity (``H = base^2 D^-1``, a damped Jacobi).
    stages : learned steps per smoothing side, each with its own stencil ``Ŵ_i`` (the network
        outputs all of them): pre-smoothing applies ``H_1 ... H_s`` after the sweeps,
        post-smoothing ``H_s ... H_1`` before the reversed sweeps (the adjoint, so the cycle stays
        symmetric). Two stages lower the held-out cycle factor 0.040 -> 0.028 (Darcy), 0.050 ->
        0.033 (ConDiff variance 0.1) and take 0-1 fewer PCG iterations, at 31.6 instead of 18.8
        finest-grid stencil applications per cycle (``benchmarks/precond.py``); three lower it to
        0.023 (Darcy) and 0.027 (variance 0.1) and meet issue 19's 0.6x of PCG-MG's iterations at
        64^2..1024^2 on both (5 vs 9, 4 vs 8), not at contrast 1e5 (5-6 vs 8-9), at 44.4 finest-grid
        stencil applications per cycle (``benchmarks/measured/cpu-2026-12-04/precond-nmg3-nmg2c3-all.md``);
        with ``coarse_repeats=3`` as well, 5 / 4 / 5 iterations at every size 64^2..1024^2 on the
        three families, against 8-9 / 8 / 8 of the classical cycle with the same sweeps: 0.6x
        only on variance 0.1 (``benchmarks/measured/cpu-2026-12-05e/precond-same-sweeps-all.md``),
        at 69.6 finest-grid stencil applications per cycle. Five, with ``coarse_repeats=3``,
        ``repeat_sweeps=False`` and ``interpolation="learned"``, meet it at contrast 1e5 as well:
        4, 5, 5, 5, 4 against plain PCG-MG's 9, 9, 9, 9, 8, at 106.4 finest-grid stencil
        applications per cycle (``benchmarks/measured/cpu-2026-12-05f/``). The default stays 1,
        the cheapest.
    coarse_repeats : the smoothing of every level but the finest (sweeps and learned steps, and
        their adjoint) runs this many times per cycle (still SPD); 3 brings the V-cycle close to
        the two-grid cycle (``benchmarks/nmg_recursion.py``), at a cost (2 stages, 1024^2) of 49.6
        instead of 31.6 finest-grid stencil applications per cycle (:func:`cycle_cost`). It
        repeats classical sweeps too, so its fair reference is the classical cycle with
        ``Multigrid(coarse_repeats=k)``, which also takes fewer iterations than V(1,1) (8 instead
        of 9 on contrast 1e5).
    repeat_sweeps : whether ``coarse_repeats`` repeats the classical sweeps too (True) or only
        the learned steps (False: every level keeps the classical V(1,1)'s sweeps, one per side,
        so the cycle's reference is plain PCG-MG).
    interpolation : ``"dendy"`` (the classical hierarchy) or ``"learned"``: a second network
        (``interp_width`` channels, ``interp_layers`` convolutions) corrects Dendy's interpolation
        weights on every offset of every fine class (so the Galerkin coarse stencils keep
        ``3^d`` points), on every level, trained jointly with the smoother. The hierarchy then
        depends on the network and is built with it (:func:`hierarchy`).
    """

    dim: int = 2
    kernel: int = 3
    width: int = 12
    layers: int = 2
    base: float = 0.5
    stages: int = 1
    coarse_repeats: int = 1
    repeat_sweeps: bool = True
    interpolation: str = "dendy"
    interp_width: int = 16
    interp_layers: int = 3

    def __post_init__(self):
        if self.interpolation not in INTERPOLATIONS:
            raise ConfigError(f"nmg interpolation must be one of {list(INTERPOLATIONS)}, got {self.interpolation!r}")
        if self.interp_width < 1 or self.interp_layers < 1:
            raise ConfigError(f"nmg interp_width and interp_layers must be >= 1, got {self.interp_width}, {self.interp_layers}")
        if self.dim not in (2, 3):
            raise ConfigError(f"nmg dim must be 2 or 3, got {self.dim}")
        if self.kernel < 1 or self.kernel % 2 == 0:
            raise ConfigError(f"nmg kernel must be odd and >= 1, got {self.kernel}")
        if self.coarse_repeats < 1:
            raise ConfigError(f"nmg coarse_repeats must be >= 1, got {self.coarse_repeats}")
        if self.width < 1 or self.layers < 1 or self.stages < 1:
            raise ConfigError(f"nmg width, layers and stages must be >= 1, got {self.width}, {self.layers}, {self.stages}")


class SmootherNet(nn.Module):
    """Features ``(B, 3^d - 1, *shape)`` -> local stencils ``Ŵ_1 .. Ŵ_s`` ``(B, stages * kernel^d, *shape)``."""

    name = KIND

    def __init__(self, config: NMGConfig):
        super().__init__()
        self.config = config
        conv = nn.Conv2d if config.dim == 2 else nn.Conv3d
        points = config.kernel**config.dim
        self.body = _body(conv, feature_count(config.dim), config.width, config.layers, config.stages * points)
        delta = torch.zeros((1, config.stages * points) + (1,) * config.dim)
        delta[0, points // 2::points] = config.base
        self.register_buffer("delta", delta, persistent=False)
        if config.interpolation == "learned":
            self.interp = _body(conv, feature_count(config.dim), config.interp_width, config.interp_layers,
                                interpolation_outputs(config.dim))

    def config_dict(self) -> dict:
        return to_dict(self.config)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.body(features) + self.delta

    def interpolation_weights(self, level: mgm.Level) -> dict:
        """Interpolation weights of ``level`` (the form of
        :func:`~sciml.solvers.multigrid.interpolation_weights`): Dendy's on every offset of every
        fine class plus the learned correction (zero at initialisation), in the level's dtype.

        The correction of a fine point sums to zero over its offsets, so ``P`` interpolates
        constants exactly wherever Dendy's does. Without it the learned weights perturb the
        interpolation of smooth errors by ``O(delta)``, whose energy grows like ``h^-2``: a network
        trained at 64^2 took 4 PCG iterations there and 11 at 1024^2 (factor 0.69); with it the
        perturbation is ``O(h delta)``, of bounded energy."""
        p = next(self.interp.parameters())
        delta = self.interp(stencil_features(level.S).to(dtype=p.dtype, device=p.device)).to(level.S.dtype)
        weights, k = {}, 0
        for cls, ws in dendy_all_offsets(level).items():
            start, counts = mgm._class_start_counts(level.shape, cls)
            index = (slice(None), slice(k, k + len(ws))) + tuple(slice(a, a + 2 * (c - 1) + 1, 2)
                                                                for a, c in zip(start, counts))
            d = delta[index]
            d = d - d.mean(dim=1, keepdim=True)  # zero sum: constants stay interpolated as Dendy does
            weights[cls] = [(off, w + d[:, i]) for i, (off, w) in enumerate(ws)]
            k += len(ws)
        return weights


def _body(conv, inputs: int, width: int, layers: int, outputs: int) -> nn.Sequential:
    """``layers`` 3^d convolutions ``inputs -> width -> ... -> outputs``, GELU between, the last zero."""
    chans = [inputs] + [width] * (layers - 1) + [outputs]
    mods: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(chans[:-1], chans[1:])):
        mods.append(conv(a, b, 3, padding=1))
        if i < len(chans) - 2:
            mods.append(nn.GELU())
    nn.init.zeros_(mods[-1].weight)
    nn.init.zeros_(mods[-1].bias)
    return nn.Sequential(*mods)


def interpolation_outputs(dim: int) -> int:
    """Interpolation weights per fine point and level: every offset of every fine class (2-D: 2 + 2 + 8)."""
    return sum(len(mgm._class_offsets(dim, c)) for c in mgm._fine_classes(dim))


def dendy_all_offsets(level: mgm.Level) -> dict:
    """Dendy's interpolation weights of ``level`` on every offset of every fine class (zero where
    Dendy's formula gives none)."""
    dendy, out = mgm.interpolation_weights(level), {}
    for cls in mgm._fine_classes(level.dim):
        _, counts = mgm._class_start_counts(level.shape, cls)
        have = dict(dendy.get(cls, []))
        out[cls] = [(o, have[o] if o in have else level.S.new_zeros((level.B, *counts)))
                    for o in mgm._class_offsets(level.dim, cls)]
    return out


def hierarchy(S: torch.Tensor, net: "SmootherNet", presmooth: int = 1, coarsest: int = mgm.COARSEST,
              grad: bool = False) -> tuple[mgm.Multigrid, list[str]]:
    """The multigrid hierarchy of stencils ``S`` for the network ``net``: classical (Dendy) unless
    ``net`` learns the interpolation; then with its weights, or, if they are non-finite or the
    coarsest Galerkin matrix is not positive definite, the classical one and a note saying so.
    ``grad``: keep the graph (training)."""
    if net.config.interpolation != "learned":
        return mgm.Multigrid(S, presmooth=presmooth, coarsest=coarsest), []
    with torch.set_grad_enabled(grad):
        try:
            mg = mgm.Multigrid(S, presmooth=presmooth, coarsest=coarsest, interpolation=net.interpolation_weights)
            finite = all(bool(torch.isfinite(w).all()) for level in mg.levels[:-1]
                         for ws in level.weights.values() for _, w in ws)
        except DataError:
            finite = False
    if finite:
        return mg, []
    return mgm.Multigrid(S.detach(), presmooth=presmooth, coarsest=coarsest), [
        "the nmg network's learned interpolation gave a non-finite or indefinite hierarchy; Dendy's ran instead"]


def local_offsets(dim: int, kernel: int) -> list[tuple[int, ...]]:
    h = kernel // 2
    return list(itertools.product(range(-h, h + 1), repeat=dim))


def _window(shape: Sequence[int], off: Sequence[int], h: int) -> tuple[slice, ...]:
    """Slice of an ``h``-padded ``(B, *(shape + 2h))`` tensor selecting the points ``p + off``."""
    return (slice(None),) + tuple(slice(h + o, h + o + m) for o, m in zip(off, shape))


def apply_local(W: torch.Tensor, v: torch.Tensor, offs) -> torch.Tensor:
    """``y[p] = sum_k W[:, k, p] v[p + o_k]`` (``v`` zero beyond the grid)."""
    dim, shape = v.dim() - 1, tuple(v.shape[1:])
    h = max(max(abs(o) for o in off) for off in offs)
    vp = F.pad(v, (h, h) * dim)
    y = W[:, 0] * vp[_window(shape, offs[0], h)]
    for k in range(1, len(offs)):
        y = y + W[:, k] * vp[_window(shape, offs[k], h)]
    return y


def apply_local_T(W: torch.Tensor, v: torch.Tensor, offs) -> torch.Tensor:
    """The transpose of :func:`apply_local`: ``y[q] = sum_k W[:, k, q - o_k] v[q - o_k]``."""
    dim, shape = v.dim() - 1, tuple(v.shape[1:])
    h = max(max(abs(o) for o in off) for off in offs)
    y = v.new_zeros((v.shape[0], *(m + 2 * h for m in shape)))
    for k, off in enumerate(offs):
        y[_window(shape, off, h)] += W[:, k] * v
    return y[_window(shape, (0,) * dim, h)]


def _inside(shape: Sequence[int], offs, like: torch.Tensor) -> torch.Tensor:
    """``(len(offs), *shape)`` mask: 1 where ``p + o_k`` lies on the grid."""
    h = max(max(abs(o) for o in off) for off in offs)
    ones = F.pad(like.new_ones((1, *shape)), (h, h) * len(shape))
    return torch.cat([ones[_window(shape, off, h)] for off in offs])


def _lanczos_max(op, shape: Sequence[int], B: int, like: torch.Tensor, steps: int = LANCZOS_STEPS) -> torch.Tensor:
    """Largest Ritz value ``(B,)`` of the symmetric batched operator ``op`` after ``steps`` Lanczos steps."""
    gen = torch.Generator(device="cpu").manual_seed(0)
    q = torch.randn((B, *shape), generator=gen, dtype=like.dtype).to(like.device)
    q = q / torch.linalg.vector_norm(q.flatten(1), dim=1).reshape((-1,) + (1,) * len(shape))
    prev = torch.zeros_like(q)
    alphas, betas = [], []
    beta = torch.zeros(B, dtype=like.dtype, device=like.device)
    for _ in range(min(steps, math.prod(shape))):
        w = op(q)
        alpha = (w * q).flatten(1).sum(1)
        w = w - alpha.reshape((-1,) + (1,) * len(shape)) * q - beta.reshape((-1,) + (1,) * len(shape)) * prev
        alphas.append(alpha)
        beta = torch.linalg.vector_norm(w.flatten(1), dim=1)
        betas.append(beta)
        prev, q = q, w / torch.where(beta > 0, beta, torch.ones_like(beta)).reshape((-1,) + (1,) * len(shape))
    k = len(alphas)
    T = torch.diag_embed(torch.stack(alphas, 1))
    if k > 1:
        off = torch.stack(betas[:-1], 1)
        T = T + torch.diag_embed(off, 1) + torch.diag_embed(off, -1)
    return torch.linalg.eigvalsh(T)[:, -1]


class NeuralMultigrid:
    """The neural V-cycle on the classical hierarchy ``mg`` with the smoother network ``net``.

    ``NeuralMultigrid(mg, net)(f)`` applies one cycle from a zero guess (an SPD approximation of
    ``A^-1``, see the module docstring); ``solve`` runs PCG with it and the classical fallback.
    ``check``: the Lanczos bound of the learned step (set-up). ``grad``: keep the set-up's graph
    (training: the bound is differentiable, so the network learns the stencils as they are used).
    ``coarse_repeats``: the smoothing of every level but the finest (sweeps, then the learned
    steps; the adjoint after the coarse correction) runs this many times, which brings the
    V-cycle closer to the two-grid cycle at little cost (``benchmarks/nmg_recursion.py``);
    default: the network config's.
    """

    def __init__(self, mg: mgm.Multigrid, net: SmootherNet, check: bool = True, grad: bool = False,
                 notes: Sequence[str] = (), coarse_repeats: int | None = None):
        coarse_repeats = net.config.coarse_repeats if coarse_repeats is None else coarse_repeats
        if coarse_repeats < 1:
            raise ConfigError(f"coarse_repeats must be >= 1, got {coarse_repeats}")
        self.coarse_repeats = int(coarse_repeats)
        if net.config.dim != mg.levels[0].dim:
            raise DataError(f"the nmg network was trained on {net.config.dim}-D grids; this matrix is {mg.levels[0].dim}-D")
        self.mg, self.net = mg, net
        self.offs = local_offsets(net.config.dim, net.config.kernel)
        self.notes: list[str] = list(notes)
        self._classical: Optional[mgm.Multigrid] = None
        with torch.set_grad_enabled(grad):
            self.local = [self._learned(level, check) for level in mg.levels[:-1]]
        self.finite = all(bool(torch.isfinite(W).all()) for W, _ in self.local)
        if not self.finite:
            self.notes.append("the nmg network gave non-finite smoother stencils; the classical V-cycle ran instead")

    def _learned(self, level: mgm.Level, check: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """``(Ŵ_1 .. Ŵ_s (B, s K^d, *shape) float64, D^-1/2 (B, *shape))`` of one level."""
        p = next(self.net.parameters())
        feats = stencil_features(level.S).to(dtype=p.dtype, device=p.device)
        W = self.net(feats).to(dtype=level.S.dtype, device=level.S.device)
        W = W * _inside(level.shape, self.offs, level.S).repeat((self.net.config.stages,) + (1,) * level.dim)
        dis = level.S[:, level.centre].rsqrt()
        if check and bool(torch.isfinite(W).all()):  # differentiable: training learns the scaled stencils
            K = len(self.offs)
            stages = []
            for i in range(self.net.config.stages):
                Wi = W[:, i * K:(i + 1) * K]
                top = _lanczos_max(lambda v: self._gram(level, Wi, dis, v), level.shape, level.B, level.S)
                scale = torch.where(MARGIN * top > BOUND, (BOUND / (MARGIN * top.clamp_min(1e-300))).sqrt(),
                                    torch.ones_like(top))
                if bool((scale < 1).any()):
                    self.notes.append(f"level {level.shape}: the learned smoother{f' {i + 1}' if i else ''} was scaled "
                                      f"by {float(scale.min().detach()):.3g} (its estimated largest eigenvalue "
                                      f"{float(top.max().detach()):.3g} > {BOUND / MARGIN:.3g})")
                stages.append(Wi * scale.reshape((-1,) + (1,) * (W.dim() - 1)))
            W = torch.cat(stages, 1)
        return W, dis

    def _gram(self, level: mgm.Level, W: torch.Tensor, dis: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """``Ŵ^T Â Ŵ v`` with ``Â = D^-1/2 A D^-1/2`` for one stage's ``Ŵ``."""
        u = level.padded()
        u[mgm._interior(level.dim)] = dis * apply_local(W, v, self.offs)
        return apply_local_T(W, dis * level.matvec(u), self.offs)

    def smoother(self, l: int, r: torch.Tensor, stage: int = 0) -> torch.Tensor:
        """``H_stage r`` on level ``l``."""
        W, dis = self.local[l]
        K = len(self.offs)
        W = W[:, stage * K:(stage + 1) * K]
        return dis * apply_local(W, apply_local_T(W, dis * r, self.offs), self.offs)

    @property
    def classical(self) -> mgm.Multigrid:
        """The classical cycle of the fallback: ``mg`` itself, or, when ``mg`` has a learned
        interpolation, Dendy's hierarchy of the same matrices (built when first needed)."""
        if self._classical is None:
            self._classical = self.mg if isinstance(self.mg.interpolation, str) else mgm.Multigrid(
                self.mg.levels[0].S.detach(), presmooth=self.mg.presmooth, postsmooth=self.mg.postsmooth,
                coarse_repeats=self.mg.coarse_repeats)
        return self._classical

    @property
    def shape(self) -> tuple[int, ...]:
        return self.mg.shape

    def matvec(self, x: torch.Tensor) -> torch.Tensor:
        return self.mg.matvec(x)

    def __call__(self, f: torch.Tensor) -> torch.Tensor:
        if not self.finite:
            return self.classical(f)
        return self._cycle(0, f)

    def _cycle(self, l: int, f: torch.Tensor) -> torch.Tensor:
        mg = self.mg
        level = mg.levels[l]
        if l == len(mg.levels) - 1:
            return torch.cholesky_solve(f.reshape(level.B, -1, 1), mg.coarse_factor).reshape(f.shape)
        inner = mgm._interior(level.dim)
        pad = (1, 1) * level.dim
        u = level.padded()
        repeats = 1 if l == 0 else self.coarse_repeats
        sweeps = self.net.config.repeat_sweeps
        stages = range(self.net.config.stages)
        for k in range(repeats):
            if k == 0 or sweeps:
                for _ in range(mg.presmooth):
                    u = level.smooth(u, f)
                r = f - level.matvec(u)
            for i in stages:  # u += H_i r (out of place: training differentiates through it)
                du = F.pad(self.smoother(l, r, i), pad)
                u, r = u + du, r - level.matvec(du)
        u = u + mgm.prolong(level, self._cycle(l + 1, mgm.restrict(level, r)))
        for k in range(repeats):  # the adjoint order
            for i in reversed(stages):
                u = u + F.pad(self.smoother(l, f - level.matvec(u), i), pad)
            if k == repeats - 1 or sweeps:
                for _ in range(mg.postsmooth):
                    u = level.smooth(u, f, reverse=True)
        return u[inner].contiguous()

    def error_propagation(self, e: torch.Tensor) -> torch.Tensor:
        """``(I - B A) e`` for errors ``e`` ``(B, *shape)``: one cycle on ``A x = 0`` from ``x = e``."""
        return e - self(self.mg.matvec(e))

    def solve(self, b: torch.Tensor, tol: float = 1e-8, maxiter: int = 200, x0: torch.Tensor | None = None,
              patience: int = 3, drop: float = 10.0) -> tuple[BatchedCG, Optional[int]]:
        """PCG with the neural cycle; a system whose residual fell less than ``drop``-fold over the
        last ``patience`` iterations (or that broke down) continues with the classical cycle from
        its iterate. Returns the merged :class:`BatchedCG` and the hand-over iteration (None if none)."""
        def stalled(history: list[torch.Tensor]) -> torch.Tensor:
            if len(history) <= patience:
                return torch.zeros_like(history[-1], dtype=torch.bool)
            return history[-1] * drop > history[-1 - patience]

        with torch.no_grad():
            if not self.finite:
                out = pcg(self.mg.matvec, b, tol, maxiter, x0, self.classical)
                return BatchedCG(out.x, out.converged, out.iterations, out.residuals, self.notes + out.notes), 0
            first = pcg(self.mg.matvec, b, tol, maxiter, x0, self, stop=stalled)
            if bool(first.converged.all()):
                return BatchedCG(first.x, first.converged, first.iterations, first.residuals,
                                 self.notes + first.notes), None
            at = int(first.iterations[~first.converged].min())
            rest = pcg(self.mg.matvec, b, tol, max(maxiter - int(first.iterations.max()), 0), first.x, self.classical)
            notes = self.notes + first.notes + [
                f"the neural cycle stopped helping at iteration {at} (residual fell less than {drop:g}x over "
                f"{patience} iterations, or CG broke down); the classical V-cycle finished the solve"] + rest.notes
            residuals = torch.cat([first.residuals[:-1], rest.residuals])
            return BatchedCG(rest.x, rest.converged, first.iterations + rest.iterations, residuals, notes), at

    # ------------------------------------------------------------------------- cost
    def cost(self) -> dict:
        """Multiply-adds of one cycle in units of one finest-level stencil application
        (``A u`` on the finest grid): ``{"classical": V-cycle alone, "neural": with the learned steps}``."""
        neural = cycle_cost(self.mg, self.net.config.kernel**self.net.config.dim, self.net.config.stages,
                            self.coarse_repeats, self.net.config.repeat_sweeps)
        return {"classical": cycle_cost(self.classical)["classical"], "neural": neural["neural"]}


def cycle_cost(mg: mgm.Multigrid, local_points: int = 0, stages: int = 1, coarse_repeats: int = 1,
               repeat_sweeps: bool = True) -> dict:
    """Cost of one V-cycle of ``mg`` (and with ``stages`` learned ``local_points``-point stencils
    ``Ŵ`` on each level but the coarsest), in finest-grid stencil applications: Gauss-Seidel sweeps and residuals
    count the level's stencil entries per point, transfers their interpolation weights, the
    coarsest solve its two triangular solves. ``coarse_repeats``: the neural cycle's smoothing
    (sweeps, residual, learned steps) runs that many times on every level but the finest (only
    the learned steps when ``repeat_sweeps`` is False); the classical cost counts
    ``mg.coarse_repeats`` (the classical cycle's own coarse sweeps)."""
    fine = mg.levels[0]
    unit = math.prod(fine.shape) * (len(fine.active) + 1)
    classical = learned = 0.0
    for l, level in enumerate(mg.levels[:-1]):
        n, nnz = math.prod(level.shape), len(level.active) + 1
        transfers = 2 * sum(w.numel() // level.B for ws in level.weights.values() for _, w in ws)
        smoothing = (mg.presmooth + mg.postsmooth) * n * nnz + n * nnz  # the sweeps and the residual
        repeats = 1 if l == 0 else coarse_repeats
        sweeps = 1 if l == 0 else mg.coarse_repeats  # the classical cycle's own coarse repeats
        classical += smoothing + (sweeps - 1) * (mg.presmooth + mg.postsmooth) * n * nnz + transfers
        # the learned steps: the post-smoothing residual, the pre-smoothing update of r, and
        # Ŵ and Ŵ^T twice; repeated coarse smoothing adds its sweeps and residuals too
        learned += repeats * stages * (2 * n * nnz + 4 * n * local_points) + (repeats - 1) * smoothing * repeat_sweeps
    coarse = math.prod(mg.levels[-1].shape) ** 2
    classical += coarse
    return {"classical": classical / unit, "neural": (classical + learned) / unit}


# ----------------------------------------------------------------------------- training


@dataclasses.dataclass(frozen=True)
class NMGTrainOptions:
    """Training of the neural multigrid smoother on a dataset's matrices.

    n_train : coefficient samples of the file used (default: all); ``val_fraction`` of them are
        held out and their cycle convergence factor is logged.
    steps : optimiser steps; each takes ``batch_size`` systems and one random error per system.
    cycles : cycles applied per step; the loss is the log energy reduction of the last one.
    lr : Adam learning rate, cosine-annealed to 1 % over the steps.
    presmooth : classical Gauss-Seidel sweeps before (and after) the learned step, as in the
        classical cycle it is compared with.
    init : a trained nmg run to start from, with its network config (fine-tuning, e.g. a network
        trained at 64^2 on 128^2 fields, whose deeper hierarchies it then sees).
    loss : ``cycle`` (the stationary iteration: log energy reduction of the last of ``cycles``
        cycles) or ``pcg`` (what the solve does: the log energy-norm error left after ``cycles``
        steps of PCG with the cycle as preconditioner on ``A x = A e``, per step). PCG's error
        depends on the whole spectrum of the preconditioned matrix, not only its extreme
        eigenvalue, so the ``pcg`` loss may trade a few outliers (which CG removes in a step
        each) for a tighter bulk.
    coarsest : the training hierarchies coarsen down to this many points (a solve coarsens to
        :data:`~sciml.solvers.multigrid.COARSEST`); small, so that the loss sees the deep
        V-cycles of large grids and the network the coarse Galerkin levels.
    """

    n_train: Optional[int] = None
    val_fraction: float = 0.1
    steps: int = 400
    batch_size: int = 8
    cycles: int = 6
    lr: float = 3e-3
    presmooth: int = 1
    coarsest: int = 16
    seed: int = 0
    log_every: int = 25
    device: str = "auto"
    num_threads: Optional[int] = None
    init: Optional[str] = None
    loss: Literal["cycle", "pcg"] = "cycle"

    def __post_init__(self):
        if self.loss not in ("cycle", "pcg"):
            raise ConfigError(f"nmg training loss must be 'cycle' or 'pcg', got {self.loss!r}")
        if self.steps < 1 or self.batch_size < 1 or self.cycles < 2 or self.presmooth < 0 or self.log_every < 1:
            raise ConfigError("nmg training needs steps, batch_size, log_every >= 1, cycles >= 2 and presmooth >= 0")
        if not (0 <= self.val_fraction < 1) or self.lr <= 0:
            raise ConfigError(f"nmg training needs 0 <= val_fraction < 1 and lr > 0, got {self.val_fraction}, {self.lr}")


def _energy(mg: mgm.Multigrid, e: torch.Tensor) -> torch.Tensor:
    return (e * mg.matvec(e)).flatten(1).sum(1)


def cycle_loss(nmg: NeuralMultigrid, e: torch.Tensor, cycles: int) -> torch.Tensor:
    """``(B,)`` log energy-norm reduction of the last of ``cycles`` applications of ``I - B A`` to ``e``."""
    for _ in range(cycles):
        prev, e = e, nmg.error_propagation(e)
    return 0.5 * (_energy(nmg.mg, e).clamp_min(1e-300) / _energy(nmg.mg, prev).clamp_min(1e-300)).log()


def _dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a * b).flatten(1).sum(1).reshape(-1, *[1] * (a.dim() - 1))


def pcg_loss(nmg: NeuralMultigrid, e: torch.Tensor, steps: int) -> torch.Tensor:
    """``(B,)`` log energy-norm error reduction per step of ``steps`` PCG iterations with the
    preconditioner ``nmg`` on ``A x = A e`` from ``x = 0`` (differentiable: the loss of ``loss="pcg"``)."""
    x = torch.zeros_like(e)
    r = nmg.matvec(e)
    z = nmg(r)
    p, rz = z, _dot(r, z)
    for _ in range(steps):
        Ap = nmg.matvec(p)
        alpha = rz / _dot(p, Ap)
        x, r = x + alpha * p, r - alpha * Ap
        z = nmg(r)
        rz_new = _dot(r, z)
        p, rz = z + (rz_new / rz) * p, rz_new
    ratio = _energy(nmg.mg, e - x).clamp_min(1e-300) / _energy(nmg.mg, e).clamp_min(1e-300)
    return 0.5 * ratio.log() / steps


def convergence_factor(nmg, cycles: int = 12, seed: int = 0) -> torch.Tensor:
    """``(B,)`` energy-norm convergence factor per cycle of ``nmg`` (a :class:`NeuralMultigrid` or
    a classical :class:`~sciml.solvers.multigrid.Multigrid`), from random errors: the geometric
    mean over the second half of ``cycles``."""
    mg = getattr(nmg, "mg", nmg)
    gen = torch.Generator(device="cpu").manual_seed(seed)
    e = torch.randn((mg.levels[0].B, *mg.shape), generator=gen, dtype=torch.float64).to(mg.levels[0].S.device)
    half = None
    with torch.no_grad():
        for k in range(cycles):
            e = e - nmg(mg.matvec(e))
            if k == cycles // 2 - 1:
                half = _energy(mg, e)
    return (_energy(mg, e) / half).clamp_min(0) ** (0.5 / (cycles - cycles // 2))


def _hierarchies(matrices, shape, batch: int, presmooth: int, coarsest: int, device) -> list[mgm.Multigrid]:
    return [mgm.Multigrid(mgm.stencils(matrices[i:i + batch], shape, device), presmooth=presmooth, coarsest=coarsest)
            for i in range(0, len(matrices), batch)]


def _neural(mg: mgm.Multigrid, net: SmootherNet, grad: bool = False) -> NeuralMultigrid:
    """The neural cycle of the classical hierarchy ``mg``'s matrices: on ``mg`` itself, or on the
    hierarchy rebuilt with the network's interpolation when it learns one."""
    if net.config.interpolation == "learned":
        learned, notes = hierarchy(mg.levels[0].S, net, mg.presmooth, math.prod(mg.levels[-1].shape), grad)
        return NeuralMultigrid(learned, net, grad=grad, notes=notes)
    return NeuralMultigrid(mg, net, grad=grad)


def train_nmg(data: str | Path, out: str | Path, config: NMGConfig | dict | None = None, progress: bool = True,
              **options) -> dict:
    """Train the smoother network on the matrices of dataset ``data`` and write the run ``out``.

    Returns ``{"run_dir", "steps", "train_factor", "val_factor", "classical_factor", "parameters", "seconds", "shape"}``
    (factors: energy-norm convergence per cycle, mean over systems).
    """
    out = check_new(out)
    opts = from_dict(NMGTrainOptions, options, "nmg training options")
    device = runtime.device(opts.device)
    with runtime.limit_threads(opts.num_threads):
        matrices, shape, info = load_matrices(data, opts.n_train)
        dim = len(shape)
        start = None
        if opts.init is not None:
            start = load_nmg(opts.init)[0]
            if config:
                raise ConfigError(f"the network config comes from the init run {opts.init}; drop --set")
            config = start.config
        if config is None or isinstance(config, dict):
            config = from_dict(NMGConfig, {"dim": dim, **(config or {})}, "nmg network config")
        if config.dim != dim:
            raise ConfigError(f"the nmg network is {config.dim}-D but {data} holds {dim}-D grids; set dim={dim}")
        n_val = int(round(opts.val_fraction * len(matrices)))
        if len(matrices) - n_val < 1:
            raise ConfigError(f"{len(matrices)} samples leave none for training with val_fraction={opts.val_fraction}")
        torch.manual_seed(opts.seed)
        net = SmootherNet(config)
        if start is not None:
            net.load_state_dict(start.state_dict())
        net = net.to(device)
        train_mg = _hierarchies(matrices[: len(matrices) - n_val], shape, opts.batch_size, opts.presmooth, opts.coarsest, device)
        val_mg = _hierarchies(matrices[len(matrices) - n_val:], shape, opts.batch_size, opts.presmooth, opts.coarsest, device)
        classical = float(torch.cat([convergence_factor(mg) for mg in (val_mg or train_mg)]).mean())
        optimiser = torch.optim.Adam(net.parameters(), lr=opts.lr)
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, opts.steps, eta_min=opts.lr / 100)
        gen = torch.Generator(device="cpu").manual_seed(opts.seed)
        order = torch.randperm(len(train_mg), generator=gen).tolist()
        rows: list[dict] = []
        running: list[float] = []
        t0 = time.perf_counter()
        meta = {"dim": dim, "shape": list(shape), "pde": info.get("pde"), "data": str(Path(data).resolve()),
                "train": to_dict(opts), "parameters": sum(p.numel() for p in net.parameters()), "init": opts.init,
                "classical_factor": classical}
        with runtime.progress(opts.steps, "nmg", enabled=progress, text="factor {task.fields[factor]}",
                              fields={"factor": "-"}) as advance:
            for step in range(1, opts.steps + 1):
                mg = train_mg[order[(step - 1) % len(order)]]
                if (step - 1) % len(order) == len(order) - 1:
                    order = torch.randperm(len(train_mg), generator=gen).tolist()
                e = torch.randn((mg.levels[0].B, *shape), generator=gen, dtype=torch.float64).to(device)
                objective = pcg_loss if opts.loss == "pcg" else cycle_loss
                loss = objective(_neural(mg, net, grad=True), e, opts.cycles).mean()
                if not torch.isfinite(loss):
                    raise ModelError(f"nmg training diverged at step {step}; lower lr (lr={opts.lr:g})")
                optimiser.zero_grad(set_to_none=True)
                loss.backward()
                optimiser.step()
                schedule.step()
                running.append(float(loss.detach().exp()))
                advance(factor=f"{running[-1]:.3f}")
                if step % opts.log_every == 0 or step == opts.steps:
                    with torch.no_grad():
                        val = [convergence_factor(_neural(m, net)) for m in val_mg]
                    row = {"step": step, "train_factor": float(np.mean(running)), "lr": optimiser.param_groups[0]["lr"],
                           "val_factor": float(torch.cat(val).mean()) if val else None,
                           "seconds": time.perf_counter() - t0}
                    rows.append(row)
                    running = []
                    write_metrics(out, rows)
                    save_network(out, KIND, to_dict(config), net, extra={**meta, **row})
    last = rows[-1]
    return {"run_dir": str(out), "steps": opts.steps, "train_factor": last["train_factor"],
            "val_factor": last["val_factor"], "classical_factor": classical, "parameters": meta["parameters"],
            "seconds": last["seconds"], "shape": shape}


def load_nmg(run_dir: str | Path) -> tuple[SmootherNet, dict]:
    """The trained smoother network (eval mode, CPU) and the run's metadata."""
    state, meta = read_network(run_dir, KIND)
    config = from_dict(NMGConfig, meta["config"], f"{run_dir}: nmg network config")
    return load_state(SmootherNet(config), state, run_dir), meta


register_kind(KIND, load_nmg)

_CACHE: dict[str, tuple[SmootherNet, dict]] = {}


def _network(run: str | Path, device) -> SmootherNet:
    key = str(Path(run).resolve())
    if key not in _CACHE:
        _CACHE[key] = load_nmg(run)
    return _CACHE[key][0].to(device)


def solve_batch(matrices: Sequence[sp.spmatrix], rhs: Sequence[np.ndarray], run: str | Path, tol: float = 1e-8,
                maxiter: int = 200, x0: Sequence[np.ndarray] | None = None, shape: Sequence[int] | None = None,
                device=None, presmooth: int = 1) -> tuple[BatchedCG, Optional[int], float, float]:
    """``B`` systems of one grid with neural-multigrid PCG: ``(result, hand-over iteration, setup s, solve s)``."""
    dev = runtime.device(device or "auto")
    net = _network(run, dev)
    t0 = time.perf_counter()
    with torch.no_grad():
        mg, notes = hierarchy(mgm.stencils(matrices, shape, dev), net, presmooth)
        nmg = NeuralMultigrid(mg, net, notes=notes)
    synchronize(dev)
    setup = time.perf_counter() - t0
    b = torch.from_numpy(np.stack([np.asarray(v, dtype=np.float64) for v in rhs])).to(dev).reshape(len(rhs), *mg.shape)
    start = None if x0 is None else torch.from_numpy(np.stack(x0)).to(dev).reshape(b.shape)
    t0 = time.perf_counter()
    out, at = nmg.solve(b, tol, maxiter, start)
    synchronize(dev)
    return out, at, setup, time.perf_counter() - t0


@register_run_method(KIND)
def solve_with_run(A: sp.spmatrix, b: np.ndarray, tol: float, maxiter: int | None, x0, run: str) -> SolveResult:
    """The ``nmg:RUN`` solve method (on the GPU when torch sees one)."""
    out, _, setup, seconds = solve_batch([sp.csr_matrix(A)], [b], run, tol, maxiter or 200,
                                         None if x0 is None else [np.asarray(x0, dtype=np.float64)])
    return solve_result(out, setup, seconds, f"{KIND}:{run}")


def _summary(r: dict) -> str:
    return (f"run {r['run_dir']}: neural multigrid smoother, {r['steps']} steps, {r['parameters']} parameters, "
            f"cycle convergence factor {r['train_factor']:.3f} (held out {r['val_factor'] if r['val_factor'] is None else round(r['val_factor'], 3)}; "
            f"classical {r['classical_factor']:.3f}); use it with `sciml solve ... --method nmg:{r['run_dir']},pcg-mg`")


@register_trainer(KIND, NMGTrainOptions, _summary)
def _fit(model, data, out: Path, options: dict, progress: bool, test_data) -> dict:
    """``sciml.training.train("nmg", data=...)``; ``model_config``: :class:`NMGConfig`."""
    options.pop("model", None)
    if data is None:
        raise ConfigError("--data is required: a Darcy or ConDiff dataset (.h5) whose matrices the smoother learns")
    return train_nmg(data, out, config=options.pop("model_config", None), progress=progress, **options)
