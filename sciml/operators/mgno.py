"""Multigrid neural operator (He, Liu, Xu, "MgNO: Efficient parameterization of linear operators
via multigrid", ICLR 2024).

Each layer is ``u_{l+1} = act(W_l u_l + K_l u_l + b_l)``: ``W_l`` a learned multi-channel V-cycle
(:class:`VCycle`, MgNet style: Xu's multigrid for ``A u = f`` with every operator a learned
convolution), ``K_l`` and ``b_l`` a pointwise (1x1) linear map with bias. The first layer maps
``in_channels`` to ``channels`` (its V-cycle has ``in_channels`` right-hand-side channels), a
final 1x1 map without bias gives ``out_channels``. There is no lifting or projection network.

Boundary conditions live in the padding of every convolution: ``zeros`` for Dirichlet problems
(the field is zero outside the grid on every level), ``circular`` for periodic ones.

Grid hierarchy: coarse point ``j`` sits on fine point ``2 j + 1`` (``n -> floor(n / 2)``), so the
zero padding of a level (fine points ``-1`` and ``n``) is also its coarse grid's padding
(``-1`` and ``n_c``, exactly when ``n`` is odd): the grids nest like a vertex-centred multigrid
(31 -> 15 -> 7, 85 -> 42 -> 21). The authors' code pads stride-2 convolutions by one on both
sides (``n -> ceil(n / 2)``, coarse points on even fine points), which moves the coarse boundary
one fine cell outwards at every level; with textbook kernels that V-cycle diverges (measured
spectral radius 1.09 with 3 levels, 2.2 with 4, 1D Poisson n = 31), this one contracts by the
textbook factor (1/3 for V(1,0) with damped Jacobi; ``tests/test_mgno.py``).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError, ModelError
from .base import Operator, register

_AXES = "xyz"
_ACTIVATIONS = {"gelu": F.gelu, "relu": F.relu, "tanh": torch.tanh, "silu": F.silu}
_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
_CONV_T = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}


def paper_iterations(levels: int) -> tuple[tuple[int, int], ...]:
    """The authors' schedule: ``[1, 0]`` (pre, post) smoothing steps per level, ``[2, 0]`` on the
    coarsest (``--num_iteration 10 10 10 10 10 20`` in the MgNO README for 6 levels)."""
    return ((1, 0),) * (levels - 1) + ((2, 0),)


@dataclasses.dataclass(frozen=True)
class MgNOConfig:
    """MgNO architecture (defaults: the paper's smooth-Darcy model, ``MgNO_DC_smooth``, at 211x211).

    ``levels`` grids per V-cycle, each ``floor(n / 2)`` of the previous one per axis;
    ``iterations[l] = (pre, post)`` smoothing steps on level ``l`` (fine to coarse; ``pre >= 1``;
    post-smoothing runs after the coarse correction; on the coarsest only ``pre + post`` counts).
    ``None`` gives the paper's ``[1, 0]`` per level and ``[2, 0]`` on the coarsest.
    ``padding_mode``: ``zeros`` (Dirichlet; Darcy, Poisson, ConDiff) or ``circular`` (periodic;
    Burgers, Navier-Stokes). ``normalisation``: ``none`` (the Darcy models) or ``layer``: the
    field after each coarse correction is normalised over channels and grid per sample (the
    authors' Navier-Stokes ``MgConv`` uses LayerNorm([C, H, W]); here with a per-channel affine
    so that it works at every resolution). A grid needs ``2**(levels-1)`` points per axis.
    """

    in_channels: int = 1
    out_channels: int = 1
    dim: int = 2
    channels: int = 24
    n_layers: int = 5
    levels: int = 6
    iterations: tuple[tuple[int, int], ...] | None = None
    padding_mode: Literal["zeros", "circular"] = "zeros"
    activation: Literal["gelu", "relu", "tanh", "silu"] = "gelu"
    normalisation: Literal["none", "layer"] = "none"

    def __post_init__(self) -> None:
        if self.dim not in (1, 2, 3):
            raise ConfigError(f"mgno dim must be 1, 2 or 3, got {self.dim}; set dim to the data's spatial dimensions")
        for key in ("in_channels", "out_channels", "channels", "n_layers", "levels"):
            if getattr(self, key) < 1:
                raise ConfigError(f"mgno {key} must be >= 1, got {getattr(self, key)}")
        iterations = paper_iterations(self.levels) if self.iterations is None else self.iterations
        try:
            iterations = tuple((int(pre), int(post)) for pre, post in iterations)
        except (TypeError, ValueError):
            raise ConfigError(
                f"mgno iterations must be a list of [pre, post] pairs, one per level, got {self.iterations!r}"
            ) from None
        if len(iterations) != self.levels:
            raise ConfigError(
                f"mgno iterations has {len(iterations)} [pre, post] pairs but levels is {self.levels}; "
                "give one pair per level (or leave iterations unset for the paper's schedule)"
            )
        if min(pre for pre, _ in iterations) < 1 or min(post for _, post in iterations) < 0:
            raise ConfigError(
                f"mgno iterations needs pre >= 1 and post >= 0 on every level, got {[list(p) for p in iterations]}"
            )
        for key, valid in (("padding_mode", ("zeros", "circular")), ("activation", tuple(_ACTIVATIONS)),
                           ("normalisation", ("none", "layer"))):
            if getattr(self, key) not in valid:
                raise ConfigError(f"mgno {key} must be one of {list(valid)}, got {getattr(self, key)!r}")
        object.__setattr__(self, "iterations", iterations)

    @property
    def min_size(self) -> int:
        """Fewest grid points per axis: the coarsest grid keeps at least one."""
        return 2 ** (self.levels - 1)


def check_resolution(sizes: tuple[int, ...], levels: int) -> None:
    """Raise ModelError unless every axis has ``n >= 2**(levels-1)`` points, so that the
    ``levels - 1`` halvings ``n -> floor(n / 2)`` leave a point on the coarsest grid."""
    need = 2 ** (levels - 1)
    for axis, n in enumerate(sizes):
        if n < need:
            # the most levels that fit: 2**(L-1) <= n
            fix = (f"train with --set levels={n.bit_length()} (at most {n.bit_length()} levels fit) or use finer data"
                   if n >= 1 else "use finer data")
            raise ModelError(
                f"resolution {n} along {_AXES[axis]} is too small for levels={levels}: need >= {need} points "
                f"per axis (2**(levels-1)); {fix}"
            )


def level_sizes(sizes: tuple[int, ...], levels: int) -> list[tuple[int, ...]]:
    """Grid sizes of the ``levels`` grids, finest first: ``n -> floor(n / 2)`` per axis."""
    out = [tuple(sizes)]
    for _ in range(levels - 1):
        out.append(tuple(n // 2 for n in out[-1]))
    return out


class Stencil(nn.Module):
    """A learned ``3^d`` convolution without bias, stride 1 (``A``, ``S``) or 2 (``R``, ``Pi``).

    ``(B, C_in, *S) -> (B, C_out, *S')`` with ``S' = S`` (stride 1) or ``floor(S / 2)`` (stride 2:
    coarse point ``j`` sits on fine point ``2 j + 1``). Values beyond the grid are zero (``zeros``)
    or the periodic continuation (``circular``). Weights ``(C_out, C_in, 3, ..., 3)`` start as
    torch's convolution default, ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))``.
    """

    def __init__(self, c_in: int, c_out: int, dim: int, stride: int, padding_mode: str):
        super().__init__()
        self.dim, self.stride = dim, stride
        self.mode = "constant" if padding_mode == "zeros" else "circular"
        bound = 1.0 / math.sqrt(c_in * 3**dim)
        self.weight = nn.Parameter(torch.empty(c_out, c_in, *(3,) * dim).uniform_(-bound, bound))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        conv = _CONV[self.dim]
        if self.stride == 1:
            if self.mode == "constant":  # the convolution's own zero padding saves a copy
                return conv(x, self.weight, padding=1)
            return conv(F.pad(x, [1, 1] * self.dim, mode=self.mode), self.weight)
        # coarse j reads fine points 2j, 2j+1, 2j+2: only even sizes need a padded last point
        pad = [p for n in reversed(x.shape[2:]) for p in (0, 1 - n % 2)]
        if any(pad):
            x = F.pad(x, pad, mode=self.mode)
        return conv(x, self.weight, stride=2)


class Prolongation(nn.Module):
    """A learned ``4^d`` stride-2 transposed convolution ``RT``: ``(B, C, *S_c) -> (B, C, *S)``.

    ``u(i) = sum_j w[i - 2 j] u_c(j)`` per axis (coarse ``j`` on fine ``2 j + 1``), over the
    coarse field continued beyond its grid by zeros or periodically, and cropped to the finer
    grid's ``S`` (``2 S_c`` or ``2 S_c + 1`` points). ``w = [1/2, 1, 1/2, 0]`` is linear
    interpolation.
    """

    def __init__(self, channels: int, dim: int, padding_mode: str):
        super().__init__()
        self.dim, self.circular = dim, padding_mode == "circular"
        # torch's ConvTranspose default: fan_in from weight.size(1) * kernel volume
        bound = 1.0 / math.sqrt(channels * 4**dim)
        self.weight = nn.Parameter(torch.empty(channels, channels, *(4,) * dim).uniform_(-bound, bound))

    def forward(self, x: torch.Tensor, sizes: tuple[int, ...]) -> torch.Tensor:
        if not self.circular:
            y = _CONV_T[self.dim](x, self.weight, stride=2)
            return y[(..., *(slice(0, n) for n in sizes))]
        # one wrapped coarse point per side moves fine point i to index i + 2
        y = _CONV_T[self.dim](F.pad(x, [1, 1] * self.dim, mode="circular"), self.weight, stride=2)
        return y[(..., *(slice(2, 2 + n) for n in sizes))]


class VCycle(nn.Module):
    """Multi-channel V-cycle ``W: f (B, C_f, *S) -> u (B, C_u, *S)``, linear in ``f``.

    MgNO (He, Liu, Xu 2024, Algorithm 1; MgNet, He & Xu 2019). On level ``l`` (``l = 0`` finest)
    with operator ``A_l`` (``u -> f`` channels) and smoothers ``S_{l,i}`` (``f -> u``):

    - pre-smoothing ``u <- u + S_{l,i}(f_l - A_l u)`` for ``i < pre_l``, from ``u = 0`` on level 0;
    - restriction ``u_{l+1} = Pi_l u``, ``f_{l+1} = R_l (f_l - A_l u)`` (stride-2 ``3^d`` convs);
    - after the coarser levels: ``u <- u + RT_l u_{l+1}`` (``4^d`` stride-2 transposed conv),
      then ``post_l`` more smoothing steps.

    With ``Pi = 0`` this is the classical correction-scheme multigrid; with learned ``Pi`` the
    coarse iterate starts from the restricted fine iterate, as in the authors' ``Restrict``.
    One ``A_l`` per level (the level's operator), one smoother per smoothing step.
    """

    def __init__(self, f_channels: int, u_channels: int, config: MgNOConfig):
        super().__init__()
        c = config
        self.levels, self.iterations = c.levels, c.iterations
        pad, d = c.padding_mode, c.dim
        self.S = nn.ModuleList(
            nn.ModuleList(Stencil(f_channels, u_channels, d, 1, pad) for _ in range(pre + post))
            for pre, post in c.iterations
        )
        # level 0 starts from u = 0, so its A is needed only for a residual or a second step
        need_a0 = c.levels > 1 or sum(c.iterations[0]) > 1
        self.A = nn.ModuleList(
            Stencil(u_channels, f_channels, d, 1, pad) if (l > 0 or need_a0) else nn.Identity()
            for l in range(c.levels)
        )
        coarse = range(c.levels - 1)
        self.R = nn.ModuleList(Stencil(f_channels, f_channels, d, 2, pad) for _ in coarse)
        self.Pi = nn.ModuleList(Stencil(u_channels, u_channels, d, 2, pad) for _ in coarse)
        self.RT = nn.ModuleList(Prolongation(u_channels, d, pad) for _ in coarse)
        self.norm = nn.ModuleList(
            nn.GroupNorm(1, u_channels) if c.normalisation == "layer" else nn.Identity() for _ in coarse
        )

    def smooth(self, level: int, u: torch.Tensor | None, f: torch.Tensor, steps: range) -> torch.Tensor:
        """``steps`` smoothing iterations ``u <- u + S(f - A u)`` on ``level`` (``u = None``: zero)."""
        for i in steps:
            smoother = self.S[level][i]
            u = smoother(f) if u is None else u + smoother(f - self.A[level](u))
        return u

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        """Apply ``W``: ``(B, C_f, *S) -> (B, C_u, *S)``; needs ``S >= 2**(levels-1)`` per axis."""
        sizes = level_sizes(tuple(f.shape[2:]), self.levels)
        us: list[torch.Tensor] = []
        fs: list[torch.Tensor] = []
        u = None
        for l, (pre, _) in enumerate(self.iterations):
            if l > 0:
                f, u = self.R[l - 1](f - self.A[l - 1](u)), self.Pi[l - 1](u)
            u = self.smooth(l, u, f, range(pre))
            us.append(u)
            fs.append(f)
        for l in reversed(range(self.levels)):
            if l < self.levels - 1:
                u = self.norm[l](us[l] + self.RT[l](u, sizes[l]))
            pre, post = self.iterations[l]
            u = self.smooth(l, u, fs[l], range(pre, pre + post))
        return u


class Pointwise(nn.Module):
    """Pointwise linear map over channels ``(B, C_in, *S) -> (B, C_out, *S)``: ``W v(x) (+ b)``.

    A batched matmul over the flattened grid (cheaper than a 1x1 convolution on CPU, see
    :class:`sciml.operators.fno.Pointwise`); initialised as ``nn.Linear``.
    """

    def __init__(self, c_in: int, c_out: int, bias: bool = True):
        super().__init__()
        bound = 1.0 / math.sqrt(c_in)
        self.weight = nn.Parameter(torch.empty(c_out, c_in).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.empty(c_out).uniform_(-bound, bound)) if bias else None

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        b, sizes = v.shape[0], v.shape[2:]
        flat = v.reshape(b, v.shape[1], -1)
        w = self.weight.expand(b, *self.weight.shape)
        out = torch.bmm(w, flat) if self.bias is None else torch.baddbmm(self.bias[None, :, None], w, flat)
        return out.reshape(b, -1, *sizes)


@register("mgno")
class MgNO(Operator):
    """Multigrid neural operator (He, Liu, Xu 2024): ``(B, C_in, *S) -> (B, C_out, *S)``, 1D-3D.

    ``u_{l+1} = act(W_l u_l + K_l u_l + b_l)`` for ``l < n_layers`` (``W_l`` a :class:`VCycle`,
    ``K_l`` pointwise), output ``Q u_L`` with a pointwise ``Q`` without bias, as the authors'
    ``MgNO_DC``. Any grid with ``>= 2**(levels-1)`` points per axis (odd sizes included).
    The output is not masked on the boundary: the authors' Darcy ("DC") models rely on zero
    padding and on the pointwise output normaliser (zero std on a zero boundary) instead.
    """

    Config = MgNOConfig
    input_kind = "grid"

    def __init__(self, config: MgNOConfig):
        super().__init__(config)
        c = config
        widths = [c.in_channels] + [c.channels] * (c.n_layers - 1)
        self.vcycles = nn.ModuleList(VCycle(w, c.channels, c) for w in widths)
        self.pointwise = nn.ModuleList(Pointwise(w, c.channels) for w in widths)
        self.project = Pointwise(c.channels, c.out_channels, bias=False)
        self.act = _ACTIVATIONS[c.activation]

    @classmethod
    def example_configs(cls) -> list[MgNOConfig]:
        return [
            MgNOConfig(dim=1, channels=4, n_layers=2, levels=3),
            MgNOConfig(in_channels=2, out_channels=3, dim=2, channels=4, n_layers=2, levels=3,
                       iterations=((1, 1), (2, 1), (2, 0)), padding_mode="circular", normalisation="layer"),
            MgNOConfig(dim=3, channels=3, n_layers=1, levels=2, activation="tanh"),
        ]

    def example_input(self, batch: int = 2) -> tuple[torch.Tensor]:
        # non-square odd and even sizes exercise the floor(n / 2) coarsening and the cropping
        sizes = tuple(max(s, self.config.min_size) for s in (17, 10, 9)[: self.config.dim])
        return (torch.randn(batch, self.config.in_channels, *sizes),)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map ``x: (B, C_in, *S)`` to ``(B, C_out, *S)`` with ``len(S) == dim``."""
        c = self.config
        if x.ndim != 2 + c.dim or x.shape[1] != c.in_channels:
            raise ModelError(
                f"mgno expects input (batch, {c.in_channels}, {', '.join(_AXES[: c.dim])}), "
                f"got shape {tuple(x.shape)}; check in_channels and dim"
            )
        check_resolution(tuple(x.shape[2:]), c.levels)
        u = x
        for vcycle, pointwise in zip(self.vcycles, self.pointwise):
            u = self.act(vcycle(u) + pointwise(u))
        return self.project(u)
