"""U-Net (Ronneberger, Fischer, Brox, "U-Net: Convolutional Networks for Biomedical Image
Segmentation", MICCAI 2015), the convolutional baseline of operator learning (FNO, LSM, ConDiff).

One class for 1D, 2D and 3D grids: an encoder of ``depth + 1`` levels (``convs_per_level``
3^d convolutions each, with normalisation and activation), down-sampling by 2 between levels and
channels ``width * 2^i`` at level ``i``; a decoder that up-samples by 2, concatenates the encoder
features of the same level (skip connection) and convolves; a 1x1 convolution to the outputs.
Grids of any size are padded to a multiple of ``2^depth`` and cropped back.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError, ModelError
from .base import Operator, register

_AXES = "xyz"
_ACTIVATIONS = {"relu": F.relu, "gelu": F.gelu, "silu": F.silu, "tanh": torch.tanh}
_CONV = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}
_CONV_T = {1: nn.ConvTranspose1d, 2: nn.ConvTranspose2d, 3: nn.ConvTranspose3d}
_BATCH_NORM = {1: nn.BatchNorm1d, 2: nn.BatchNorm2d, 3: nn.BatchNorm3d}
_MAX_POOL = {1: F.max_pool1d, 2: F.max_pool2d, 3: F.max_pool3d}
_LINEAR_MODE = {1: "linear", 2: "bilinear", 3: "trilinear"}

# Size padding measured on Darcy (200 train / 50 test, depth 3, width 16, 40 epochs, Adam 1e-3,
# batch 20; test rel. L2 per training seed). At 32x32 nothing is padded; 29 -> 32 and 25 -> 32 pad:
#   29: replicate 0.049 0.047 | reflect 0.046 0.052 | zeros 0.045 0.046
#   25: replicate 0.034 0.033 0.044 | reflect 0.031 0.031 0.046 | zeros 0.028 0.031 0.048
# The modes differ by less than the spread over seeds; replicate is kept as the default (defined
# for every size, no mirrored features near the boundary).
_DEFAULT_PAD_MODE = "replicate"


@dataclasses.dataclass(frozen=True)
class UNetConfig:
    """U-Net architecture (defaults: the classic 2D U-Net, 4 down levels, 2 convs per level, width 32).

    ``depth`` down-samplings by 2 (channels ``width * 2^i`` at level ``i = 0..depth``), each level
    ``convs_per_level`` 3^d convolutions followed by ``norm`` and ``activation``;
    ``bottleneck_convs`` more at the coarsest level. ``downsample``: ``maxpool`` (2^d max-pool) or
    ``conv`` (2^d convolution of stride 2). ``upsample``: ``transpose`` (2^d transposed convolution
    of stride 2) or ``interp`` ((bi/tri)linear interpolation, then a 3^d convolution), both halving
    the channels. ``norm``: ``batch``, ``group`` (``norm_groups`` groups; ``width`` must be a
    multiple), ``instance`` (per-sample, per-channel, affine) or ``none``; convolutions followed by
    batch or instance norm have no bias (the norm removes it). ``padding_mode`` of the
    convolutions: ``zeros`` or ``circular`` (periodic problems). Inputs are padded at both ends of
    each axis to the next multiple of ``2^depth`` with ``pad_mode`` (``replicate``, ``reflect``,
    ``zeros`` or ``circular``) and the output is cropped back. ``add_grid`` appends the
    coordinates ``linspace(0, 1, s)`` per axis as input channels.
    """

    in_channels: int = 1
    out_channels: int = 1
    dim: int = 2
    depth: int = 4
    width: int = 32
    convs_per_level: int = 2
    bottleneck_convs: int = 0
    norm: Literal["batch", "group", "instance", "none"] = "batch"
    norm_groups: int = 8
    activation: Literal["relu", "gelu", "silu", "tanh"] = "relu"
    downsample: Literal["maxpool", "conv"] = "maxpool"
    upsample: Literal["transpose", "interp"] = "transpose"
    padding_mode: Literal["zeros", "circular"] = "zeros"
    pad_mode: Literal["replicate", "reflect", "zeros", "circular"] = _DEFAULT_PAD_MODE
    add_grid: bool = True

    def __post_init__(self) -> None:
        if self.dim not in (1, 2, 3):
            raise ConfigError(f"unet dim must be 1, 2 or 3, got {self.dim}; set dim to the number of spatial axes")
        for key in ("in_channels", "out_channels", "depth", "width", "convs_per_level", "norm_groups"):
            if getattr(self, key) < 1:
                raise ConfigError(f"unet {key} must be >= 1, got {getattr(self, key)}")
        if self.bottleneck_convs < 0:
            raise ConfigError(f"unet bottleneck_convs must be >= 0, got {self.bottleneck_convs}")
        choices = {
            "norm": ("batch", "group", "instance", "none"),
            "activation": tuple(_ACTIVATIONS),
            "downsample": ("maxpool", "conv"),
            "upsample": ("transpose", "interp"),
            "padding_mode": ("zeros", "circular"),
            "pad_mode": ("replicate", "reflect", "zeros", "circular"),
        }
        for key, valid in choices.items():
            if getattr(self, key) not in valid:
                raise ConfigError(f"unet {key} must be one of {list(valid)}, got {getattr(self, key)!r}")
        if self.norm == "group" and self.width % self.norm_groups:
            raise ConfigError(
                f"unet width {self.width} is not a multiple of norm_groups {self.norm_groups}; "
                "group norm splits every level's channels into norm_groups groups: change one of them"
            )

    @property
    def channels(self) -> tuple[int, ...]:
        """Channels of levels ``0..depth``: ``width * 2^i``."""
        return tuple(self.width * 2**i for i in range(self.depth + 1))

    @property
    def multiple(self) -> int:
        """Every spatial size is padded to a multiple of this (``2^depth``)."""
        return 2**self.depth


# ----------------------------------------------------------------------------- padding


def pad_amounts(size: int, multiple: int) -> tuple[int, int]:
    """``(before, after)`` points that take ``size`` to the next multiple of ``multiple``.

    The extra points are split between both ends (one more after when odd), so both boundaries of
    a non-periodic domain see the same treatment.
    """
    extra = -size % multiple
    return extra // 2, extra - extra // 2


def _pad_index(n: int, before: int, after: int, mode: str, device: torch.device) -> torch.Tensor:
    """Source index of every point of the padded axis ``-before .. n + after - 1``; any amount.

    ``replicate`` repeats the edge value, ``reflect`` mirrors about the edge point (period
    ``2n - 2``), ``circular`` wraps around (period ``n``).
    """
    i = torch.arange(-before, n + after, device=device)
    if mode == "replicate" or n == 1:
        return i.clamp(0, n - 1)
    if mode == "circular":
        return i.remainder(n)
    i = i.remainder(2 * n - 2)
    return torch.where(i < n, i, 2 * n - 2 - i)


def pad_to_multiple(x: torch.Tensor, multiple: int, mode: str) -> tuple[torch.Tensor, tuple[slice, ...]]:
    """Pad the spatial axes of ``x: (B, C, *S)`` to multiples of ``multiple``.

    Returns the padded tensor and the index that crops a same-sized output back to ``S``.
    """
    sizes = x.shape[2:]
    amounts = [pad_amounts(n, multiple) for n in sizes]
    crop = tuple(slice(b, b + n) for (b, _), n in zip(amounts, sizes))
    if not any(b or a for b, a in amounts):
        return x, crop
    if mode == "zeros":
        flat = [p for b, a in reversed(amounts) for p in (b, a)]
        return F.pad(x, flat), crop
    for axis, ((b, a), n) in enumerate(zip(amounts, sizes)):
        if b or a:
            x = x.index_select(2 + axis, _pad_index(n, b, a, mode, x.device))
    return x, crop


# ----------------------------------------------------------------------------- building blocks


def _conv(c: UNetConfig, c_in: int, c_out: int, kernel: int, stride: int = 1, bias: bool = True) -> nn.Module:
    padding = (kernel - 1) // 2 if stride == 1 else 0
    return _CONV[c.dim](c_in, c_out, kernel, stride=stride, padding=padding, bias=bias, padding_mode=c.padding_mode)


def _norm(c: UNetConfig, channels: int) -> nn.Module:
    if c.norm == "batch":
        return _BATCH_NORM[c.dim](channels)
    if c.norm == "group":
        return nn.GroupNorm(c.norm_groups, channels)
    if c.norm == "instance":
        # GroupNorm with one channel per group is instance norm (affine, no running stats); unlike
        # nn.InstanceNorm it accepts a single point at a coarse level instead of raising
        return nn.GroupNorm(channels, channels)
    return nn.Identity()


def _biased(c: UNetConfig) -> bool:
    # batch and instance norm subtract each channel's mean, so a bias before them is dead weight
    # (and would get an identically zero gradient)
    return c.norm in ("group", "none")


class ConvBlock(nn.Module):
    """``n`` times ``v -> act(norm(conv_3(v)))``: ``(B, C_in, *S) -> (B, C_out, *S)``."""

    def __init__(self, c: UNetConfig, c_in: int, c_out: int, n: int):
        super().__init__()
        self.convs = nn.ModuleList(_conv(c, c_in if k == 0 else c_out, c_out, 3, bias=_biased(c)) for k in range(n))
        self.norms = nn.ModuleList(_norm(c, c_out) for _ in range(n))
        self.act = _ACTIVATIONS[c.activation]

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        for conv, norm in zip(self.convs, self.norms):
            v = self.act(norm(conv(v)))
        return v


class Down(nn.Module):
    """Halve every spatial size: 2^d max-pool, or a learned 2^d convolution of stride 2."""

    def __init__(self, c: UNetConfig, channels: int):
        super().__init__()
        self.pool = _MAX_POOL[c.dim] if c.downsample == "maxpool" else None
        if self.pool is None:
            self.conv = _conv(c, channels, channels, 2, stride=2, bias=_biased(c))

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        return self.conv(v) if self.pool is None else self.pool(v, 2)


class Up(nn.Module):
    """Double every spatial size and halve the channels: ``(B, C, *S) -> (B, C/2, *2S)``.

    ``transpose``: a 2^d transposed convolution of stride 2 (Ronneberger et al.'s "up-convolution");
    ``interp``: linear interpolation (periodic under circular padding) followed by a 3^d convolution.
    """

    def __init__(self, c: UNetConfig, c_in: int, c_out: int):
        super().__init__()
        self.interp = c.upsample == "interp"
        self.periodic = c.padding_mode == "circular"
        if self.interp:
            self.conv = _conv(c, c_in, c_out, 3, bias=_biased(c))
        else:
            self.conv = _CONV_T[c.dim](c_in, c_out, 2, stride=2, bias=_biased(c))
        self.mode = _LINEAR_MODE[c.dim]

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        if not self.interp:
            return self.conv(v)
        d = v.ndim - 2
        if self.periodic:
            # one wrapped point per side makes the edge interpolation periodic; its 2 images are cut
            v = F.pad(v, [1, 1] * d, mode="circular")
        v = F.interpolate(v, scale_factor=2, mode=self.mode, align_corners=False)
        if self.periodic:
            v = v[(..., *[slice(2, -2)] * d)]
        return self.conv(v)


# ----------------------------------------------------------------------------- the model


@register("unet")
class UNet(Operator):
    """U-Net (Ronneberger et al. 2015): ``(B, C_in, *S) -> (B, C_out, *S)``, 1D-3D, any size.

    Encoder ``h_0 = B_0([a, grid])``, ``h_i = B_i(P(h_{i-1}))`` for ``i = 1..depth``; decoder
    ``g_depth = h_depth``, ``g_{i-1} = B'_{i-1}([h_{i-1}, U(g_i)])``; output ``u = W g_0 + b``
    (1x1 convolution). ``B`` are conv blocks, ``P`` halves and ``U`` doubles the grid.
    """

    Config = UNetConfig
    input_kind = "grid"

    def __init__(self, config: UNetConfig):
        super().__init__(config)
        c = config
        ch = c.channels
        c_in = c.in_channels + (c.dim if c.add_grid else 0)
        self.encoder = nn.ModuleList([ConvBlock(c, c_in, ch[0], c.convs_per_level)])
        for i in range(1, c.depth + 1):
            n = c.convs_per_level + (c.bottleneck_convs if i == c.depth else 0)
            self.encoder.append(ConvBlock(c, ch[i - 1], ch[i], n))
        self.down = nn.ModuleList(Down(c, ch[i]) for i in range(c.depth))
        self.up = nn.ModuleList(Up(c, ch[i + 1], ch[i]) for i in range(c.depth))
        self.decoder = nn.ModuleList(ConvBlock(c, 2 * ch[i], ch[i], c.convs_per_level) for i in range(c.depth))
        self.head = _conv(c, ch[0], c.out_channels, 1)

    @classmethod
    def example_configs(cls) -> list[UNetConfig]:
        return [
            UNetConfig(dim=1, depth=2, width=4),
            UNetConfig(
                in_channels=2, out_channels=3, dim=2, depth=2, width=4, convs_per_level=1, bottleneck_convs=1,
                norm="group", norm_groups=2, activation="gelu", downsample="conv", upsample="interp",
                pad_mode="reflect",
            ),
            UNetConfig(
                dim=2, depth=2, width=4, norm="none", activation="tanh", upsample="interp", padding_mode="circular",
                pad_mode="circular", add_grid=False,
            ),
            UNetConfig(dim=3, depth=1, width=2, norm="instance", activation="silu", pad_mode="zeros"),
        ]

    def example_input(self, batch: int = 2) -> tuple[torch.Tensor]:
        # sizes that are not multiples of 2^depth exercise the padding; non-square catches axis mix-ups
        sizes = (13, 11, 7)[: self.config.dim]
        return (torch.randn(batch, self.config.in_channels, *sizes),)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map ``x: (B, C_in, *S) -> (B, C_out, *S)`` with ``len(S) == dim``, any sizes ``S``."""
        c = self.config
        if x.ndim != 2 + c.dim or x.shape[1] != c.in_channels:
            raise ModelError(
                f"unet expects input (batch, {c.in_channels}, {', '.join(_AXES[: c.dim])}), "
                f"got shape {tuple(x.shape)}; check in_channels and dim"
            )
        if c.add_grid:
            x = torch.cat([x, _grid(tuple(x.shape[2:]), x.shape[0], x.device, x.dtype)], 1)
        x, crop = pad_to_multiple(x, c.multiple, c.pad_mode)
        skips = [self.encoder[0](x)]
        for down, block in zip(self.down, self.encoder[1:]):
            skips.append(block(down(skips[-1])))
        g = skips.pop()
        for i in reversed(range(c.depth)):
            g = self.decoder[i](torch.cat([skips[i], self.up[i](g)], 1))
        return self.head(g)[(..., *crop)]


def _grid(sizes: tuple[int, ...], batch: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """Normalised coordinates ``(B, dim, *S)``: ``linspace(0, 1, s)`` per axis, ``ij`` order."""
    axes = [torch.linspace(0, 1, s, device=device, dtype=dtype) for s in sizes]
    grid = torch.stack(torch.meshgrid(*axes, indexing="ij"), 0)
    return grid.unsqueeze(0).expand(batch, *grid.shape)
