"""Latent Spectral Model (Wu, Hu, Luo, Wang, Long, "Solving High-Dimensional PDEs with Latent
Spectral Models", ICML 2023).

One class for 1D, 2D and 3D grids. The input and its coordinates are lifted pointwise to
``d_model`` channels, zero-padded at the end of each axis, and passed through a U-Net style
encoder/decoder of ``n_scales`` scales (``n_scales - 1`` max-pool halvings, DoubleConv =
(conv3 -> BN -> ReLU) x 2, linear up-sampling with ``align_corners=True``). The skip connection of
every scale, and the coarsest map, first go through a :class:`NeuralSpectralBlock`: the map is
cut into patches of ``patch_size`` points, each patch is attended into ``num_token`` latent
tokens, the tokens pass through a learned sin/cos basis (:class:`LatentSpectral`) and are
attended back to the patch's points. The padding is cropped and a two-layer pointwise projection
gives the output. Every padded size must be a multiple of ``patch * 2^(n_scales - 1)``:
:func:`resolve_padding` derives the minimal padding for any grid (the paper pads 85 to 96 for
patch 6 and 4 halvings).
"""

from __future__ import annotations

import dataclasses
import math

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError, ModelError
from .adapters import grid_points
from .base import Operator, register
from .fno import Pointwise

_AXES = "xyz"
_CONV = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}
_NORM = {1: nn.BatchNorm1d, 2: nn.BatchNorm2d, 3: nn.BatchNorm3d}
_POOL = {1: nn.MaxPool1d, 2: nn.MaxPool2d, 3: nn.MaxPool3d}
_UPSAMPLE = {1: "linear", 2: "bilinear", 3: "trilinear"}


@dataclasses.dataclass(frozen=True)
class LSMConfig:
    """LSM architecture (defaults: the paper's Darcy model, ``scripts/darcy_lsm.sh``, with automatic
    padding, which is its 11 points at s=85).

    ``patch_size`` (points per patch along each axis, the same at every scale) and ``padding``
    (zero points appended at the end of each axis after the lift) take one entry per spatial axis
    or a single entry for all; ``dim`` defaults to their length (2 when both are single).
    ``padding=None`` pads each axis of size ``n`` minimally to a multiple of
    ``patch * 2^(n_scales - 1)``; an explicit padding must make every size such a multiple (the
    paper's 11 at s=85 for patch 6 and 5 scales). Axis order is x, y, z (the authors' scripts
    list padding in reversed axis order, e.g. 12,1,11 for plasticity's x, y, t = 11, 1, 12).
    ``heads`` must divide ``d_model``; scale ``s`` has ``d_model * 2^s`` channels, except the
    coarsest, which keeps those of the scale above (the bilinear U-Net; 64 ... 512, 512 in the
    paper). ``projection`` is the hidden width of the output projection.
    """

    in_channels: int = 1
    out_channels: int = 1
    d_model: int = 64
    num_token: int = 4
    num_basis: int = 12
    patch_size: tuple[int, ...] = (6,)
    heads: int = 8
    padding: tuple[int, ...] | None = None
    n_scales: int = 5
    projection: int = 128
    dim: int | None = None

    def __post_init__(self) -> None:
        patch = tuple(int(p) for p in self.patch_size)
        padding = None if self.padding is None else tuple(int(p) for p in self.padding)
        dim = self.dim
        if dim is None:
            lengths = [len(t) for t in (patch, padding or ()) if len(t) > 1]
            dim = lengths[0] if lengths else 2
        dim = int(dim)
        if dim not in (1, 2, 3):
            raise ConfigError(f"lsm dim must be 1, 2 or 3, got {dim}; set dim or give 1-3 patch sizes")
        patch = _per_axis(patch, dim, "patch_size")
        if padding is not None:
            padding = _per_axis(padding, dim, "padding")
            if min(padding) < 0:
                raise ConfigError(f"lsm padding must be >= 0 grid points per axis, got {list(padding)}")
        for key in ("in_channels", "out_channels", "d_model", "num_token", "num_basis", "heads", "n_scales",
                    "projection"):
            if getattr(self, key) < 1:
                raise ConfigError(f"lsm {key} must be >= 1, got {getattr(self, key)}")
        if min(patch) < 1:
            raise ConfigError(f"lsm patch_size must be >= 1 point per axis, got {list(patch)}")
        if self.d_model % self.heads:
            raise ConfigError(
                f"lsm heads={self.heads} must divide d_model={self.d_model} (every scale splits its channels "
                "evenly over the heads); change heads or d_model"
            )
        object.__setattr__(self, "patch_size", patch)
        object.__setattr__(self, "padding", padding)
        object.__setattr__(self, "dim", dim)

    @property
    def multiple(self) -> tuple[int, ...]:
        """What every padded size must be a multiple of, per axis: ``patch * 2^(n_scales - 1)``."""
        return tuple(p * 2 ** (self.n_scales - 1) for p in self.patch_size)

    @property
    def channels(self) -> tuple[int, ...]:
        """Channels of each scale, finest first: ``d_model * 2^s``, the coarsest repeating the one above."""
        if self.n_scales == 1:
            return (self.d_model,)
        return tuple(self.d_model * 2 ** min(s, self.n_scales - 2) for s in range(self.n_scales))


def _per_axis(values: tuple[int, ...], dim: int, name: str) -> tuple[int, ...]:
    if len(values) == 1:
        return values * dim
    if len(values) != dim:
        raise ConfigError(
            f"lsm {name} {list(values)} has {len(values)} entries but dim is {dim}; "
            "give one entry per spatial axis (or a single one for all)"
        )
    return values


def resolve_padding(sizes: tuple[int, ...], config: LSMConfig) -> tuple[int, ...]:
    """Zero points appended along each axis so that ``n + pad`` is a multiple of ``config.multiple``.

    With ``config.padding=None`` the minimal one, ``(-n) mod m``; an explicit padding is checked
    and a ModelError names the sizes it works for and the automatic padding.
    """
    auto = tuple((-n) % m for n, m in zip(sizes, config.multiple))
    if config.padding is None:
        return auto
    for axis, (n, pad, m, p) in enumerate(zip(sizes, config.padding, config.multiple, config.patch_size)):
        if (n + pad) % m:
            first = (-pad) % m or m
            works = ", ".join(str(first + k * m) for k in range(3))
            raise ModelError(
                f"lsm padding {pad} along {_AXES[axis]} does not fit size {n}: {n} + {pad} = {n + pad} is not a "
                f"multiple of {m} (patch {p} x 2^{config.n_scales - 1} for {config.n_scales - 1} halvings); "
                f"with this padding the sizes that work are {works}, ...; "
                f"set padding to null for automatic padding ({auto[axis]} here)"
            )
    return tuple(config.padding)


# ----------------------------------------------------------------------------- neural spectral block


class LatentSpectral(nn.Module):
    """Learned sin/cos basis applied to each latent token value, with a residual.

    ``z'_c = z_c + sum_{k<K} a_{c,k} sin(k pi z_c / K) + b_{c,k} cos(k pi z_c / K)`` per channel
    ``c``: the ``K = num_basis`` trigonometric basis operators of the neural spectral block (Wu et
    al. 2023, sec. 3), acting elementwise on the token values.
    ``weight`` is ``(C, 2K)``: ``[a_{c,0..K-1}, b_{c,0..K-1}]``, initialised ``U[0, 1) / C`` as
    in the authors' code. ``sin(0)`` vanishes, so ``a_{c,0}`` never acts (kept so that the
    layout and parameter count are the paper's).
    """

    def __init__(self, channels: int, num_basis: int):
        super().__init__()
        self.num_basis = num_basis
        self.weight = nn.Parameter(torch.rand(channels, 2 * num_basis) / channels)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """``(..., C) -> (..., C)``."""
        k = torch.arange(self.num_basis, device=z.device, dtype=z.dtype)
        phase = z.unsqueeze(-1) * (k * (math.pi / self.num_basis))  # (..., C, K)
        basis = torch.cat([torch.sin(phase), torch.cos(phase)], -1)  # (..., C, 2K)
        return z + (basis * self.weight).sum(-1)


class LatentAttention(nn.Module):
    """Attention between a patch's points and ``num_token`` latent tokens, ``heads`` heads.

    The latent projection of Wu et al. 2023 (sec. 3), per head: encode ``z = T + softmax(T K^T) V``
    with learned tokens ``T`` and ``K, V`` linear in the points' features; decode
    ``x' = x + softmax(Q z^T) z`` with ``Q`` linear in the points' features. Dot products are
    unscaled, as in the authors' code. The encoding is a sum over the patch's points, so it does
    not depend on their order.
    """

    def __init__(self, channels: int, heads: int, num_token: int):
        super().__init__()
        self.heads = heads
        self.tokens = nn.Parameter(torch.rand(heads, num_token, channels // heads) / channels)
        self.key_value = nn.Linear(channels, 2 * channels)
        self.query = nn.Linear(channels, channels)

    def _split(self, t: torch.Tensor) -> torch.Tensor:
        """``(B, L, C) -> (B, heads, L, C / heads)``."""
        return t.unflatten(-1, (self.heads, -1)).transpose(1, 2)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Points ``(B, P, C)`` -> tokens ``(B, num_token, C)``."""
        k, v = self.key_value(x).chunk(2, -1)
        k, v = self._split(k), self._split(v)
        attn = torch.softmax(torch.einsum("hmc,bhpc->bhmp", self.tokens, k), -1)
        z = attn @ v + self.tokens
        return z.transpose(1, 2).flatten(2)

    def decode(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """Points ``(B, P, C)`` and tokens ``(B, num_token, C)`` -> points ``(B, P, C)``."""
        q, zh = self._split(self.query(x)), self._split(z)
        attn = torch.softmax(q @ zh.transpose(-1, -2), -1)  # (B, heads, P, num_token)
        return x + (attn @ zh).transpose(1, 2).flatten(2)


class NeuralSpectralBlock(nn.Module):
    """Patch-wise latent spectral block: ``(B, C, *S) -> (B, C, *S)``, ``S`` divisible by the patch.

    Each patch (``patch_size`` points) is encoded into tokens, transformed by :class:`LatentSpectral`
    and decoded back onto its own points (Wu et al. 2023, sec. 3).
    """

    def __init__(self, channels: int, heads: int, num_token: int, num_basis: int, patch_size: tuple[int, ...]):
        super().__init__()
        self.patch_size = tuple(patch_size)
        self.attention = LatentAttention(channels, heads, num_token)
        self.spectral = LatentSpectral(channels, num_basis)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, *S) -> (B, C, *S)``."""
        points = patchify(x, self.patch_size)
        z = self.spectral(self.attention.encode(points))
        return unpatchify(self.attention.decode(points, z), self.patch_size, tuple(x.shape))


def patchify(x: torch.Tensor, patch: tuple[int, ...]) -> torch.Tensor:
    """``(B, C, n_1 p_1, ..., n_d p_d) -> (B * n_1 ... n_d, p_1 ... p_d, C)``, patches and points row-major."""
    b, c, *sizes = x.shape
    d = len(sizes)
    split = [v for n, p in zip(sizes, patch) for v in (n // p, p)]
    order = [0, *range(2, 2 + 2 * d, 2), *range(3, 3 + 2 * d, 2), 1]
    return x.reshape(b, c, *split).permute(order).reshape(-1, math.prod(patch), c)


def unpatchify(points: torch.Tensor, patch: tuple[int, ...], shape: tuple[int, ...]) -> torch.Tensor:
    """Inverse of :func:`patchify` for an output of ``shape = (B, C, *S)``."""
    b, c, *sizes = shape
    d = len(sizes)
    counts = [n // p for n, p in zip(sizes, patch)]
    order = [0, 2 * d + 1, *(v for i in range(d) for v in (1 + i, 1 + d + i))]
    return points.reshape(b, *counts, *patch, c).permute(order).reshape(shape)


# ----------------------------------------------------------------------------- multiscale modules


class DoubleConv(nn.Sequential):
    """``(conv3 -> BN -> ReLU) x 2``, convolutions without bias: ``(B, C_in, *S) -> (B, C_out, *S)``."""

    def __init__(self, dim: int, in_channels: int, out_channels: int, mid_channels: int | None = None):
        mid = mid_channels or out_channels
        conv, norm = _CONV[dim], _NORM[dim]
        super().__init__(
            conv(in_channels, mid, 3, padding=1, bias=False), norm(mid), nn.ReLU(inplace=True),
            conv(mid, out_channels, 3, padding=1, bias=False), norm(out_channels), nn.ReLU(inplace=True),
        )


class Up(nn.Module):
    """Linear up-sampling by 2, concatenation after the skip, DoubleConv with ``in // 2`` mid channels."""

    def __init__(self, dim: int, in_channels: int, out_channels: int):
        super().__init__()
        self.mode = _UPSAMPLE[dim]
        self.conv = DoubleConv(dim, in_channels, out_channels, in_channels // 2)

    def forward(self, coarse: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        """``coarse (B, C_c, *S/2)``, ``skip (B, C_s, *S)`` -> ``(B, C_out, *S)``, ``C_c + C_s = in``."""
        up = F.interpolate(coarse, size=skip.shape[2:], mode=self.mode, align_corners=True)
        return self.conv(torch.cat([skip, up], 1))


@register("lsm")
class LSM(Operator):
    """Latent Spectral Model (Wu et al. 2023): ``(B, C_in, *S) -> (B, C_out, *S)``, 1D-3D.

    ``u = Q(crop(U(pad(P([a, grid])))))`` with pointwise lift ``P``, a U-Net ``U`` whose skip
    connections and bottleneck pass through a :class:`NeuralSpectralBlock` at each scale, and a
    two-layer pointwise projection ``Q`` (GELU, width ``projection``) after a pointwise ``outc``.
    Works at any resolution: the padding is derived from the grid (:func:`resolve_padding`).
    """

    Config = LSMConfig
    input_kind = "grid"

    def __init__(self, config: LSMConfig):
        super().__init__(config)
        c, d = config, config.dim
        chans = c.channels
        self.lift = Pointwise(c.in_channels + d, c.d_model)
        self.inc = DoubleConv(d, c.d_model, chans[0])
        self.downs = nn.ModuleList(
            nn.Sequential(_POOL[d](2), DoubleConv(d, chans[s - 1], chans[s])) for s in range(1, c.n_scales)
        )
        self.blocks = nn.ModuleList(
            NeuralSpectralBlock(ch, c.heads, c.num_token, c.num_basis, c.patch_size) for ch in chans
        )
        # decoder level s joins the skip of scale s with the up-sampled output of level s + 1
        out = [c.d_model * 2 ** max(s - 1, 0) for s in range(c.n_scales)]
        out[-1] = chans[-1]
        self.ups = nn.ModuleList(Up(d, chans[s] + out[s + 1], out[s]) for s in range(c.n_scales - 1))
        self.outc = Pointwise(c.d_model, c.d_model)
        self.project1 = Pointwise(c.d_model, c.projection)
        self.project2 = Pointwise(c.projection, c.out_channels)

    @classmethod
    def example_configs(cls) -> list[LSMConfig]:
        return [
            LSMConfig(d_model=8, num_token=2, num_basis=4, patch_size=(3,), heads=2, n_scales=3, projection=8, dim=1),
            LSMConfig(in_channels=2, out_channels=3, d_model=4, num_token=3, num_basis=3, patch_size=(2, 1),
                      heads=2, n_scales=5, projection=8),
            LSMConfig(d_model=8, num_token=2, num_basis=2, patch_size=(3, 2), heads=4, n_scales=2, padding=(1, 1),
                      projection=8),
            LSMConfig(d_model=4, num_token=2, num_basis=3, patch_size=(2, 1, 2), heads=2, n_scales=2, projection=4),
        ]

    def example_input(self, batch: int = 2) -> tuple[torch.Tensor]:
        # non-square odd/even sizes catch axis mix-ups; an explicit padding gets sizes it fits
        c = self.config
        sizes = (17, 11, 9)[: c.dim]
        if c.padding is not None:
            sizes = tuple(m * math.ceil((n + p) / m) - p for n, p, m in zip(sizes, c.padding, c.multiple))
        return (torch.randn(batch, c.in_channels, *sizes),)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map ``x: (B, C_in, *S)`` to ``(B, C_out, *S)`` with ``len(S) == dim``, any sizes ``S``."""
        c = self.config
        if x.ndim != 2 + c.dim or x.shape[1] != c.in_channels:
            raise ModelError(
                f"lsm expects input (batch, {c.in_channels}, {', '.join(_AXES[: c.dim])}), "
                f"got shape {tuple(x.shape)}; check in_channels and dim"
            )
        b, sizes = x.shape[0], tuple(x.shape[2:])
        pads = resolve_padding(sizes, c)
        grid = grid_points(sizes, x.device, x.dtype).T.expand(b, -1, -1)
        v = self.lift(torch.cat([x.reshape(b, c.in_channels, -1), grid], 1)).reshape(b, c.d_model, *sizes)
        v = F.pad(v, [q for pad in reversed(pads) for q in (0, pad)])
        feats = [self.inc(v)]
        for down in self.downs:
            feats.append(down(feats[-1]))
        v = self.blocks[-1](feats[-1])
        for s in reversed(range(c.n_scales - 1)):
            v = self.ups[s](v, self.blocks[s](feats[s]))
        v = v[(..., *(slice(0, n) for n in sizes))].reshape(b, c.d_model, -1)
        u = self.project2(F.gelu(self.project1(self.outc(v))))
        return u.reshape(b, c.out_channels, *sizes)
