"""Adapters that let grid data flow through point operators."""

from __future__ import annotations

import torch
from torch import nn

from ..errors import ModelError


def grid_points(
    sizes: tuple[int, ...], device: torch.device | None = None, dtype: torch.dtype | None = None
) -> torch.Tensor:
    """Coordinates ``(N, d)`` of a grid, ``linspace(0, 1, s)`` per axis, row-major (``ij``) order.

    Row ``i`` is the point of flat index ``i`` of a ``(*sizes)`` array, so
    ``x.reshape(B, C, -1)`` lines up with it.
    """
    axes = [torch.linspace(0, 1, s, device=device, dtype=dtype) for s in sizes]
    return torch.stack(torch.meshgrid(*axes, indexing="ij"), -1).reshape(-1, len(sizes))


class PointsOnGrid(nn.Module):
    """A point operator applied to grid data: ``(B, C_in, *S) -> (B, C_out, *S)``.

    Every grid point is both a sensor and a query point, with coordinates from
    :func:`grid_points`; values are passed as ``(B, N, C_in)`` with ``N = prod(S)``.
    """

    input_kind = "grid"

    def __init__(self, model: nn.Module):
        super().__init__()
        if getattr(model, "input_kind", None) != "points":
            raise ModelError(
                f"PointsOnGrid wraps point operators, got a {type(model).__name__}; use the model directly"
            )
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x: (B, C_in, *S)`` -> ``(B, C_out, *S)``."""
        if x.ndim < 3:
            raise ModelError(f"expected a grid batch (batch, channel, *spatial), got shape {tuple(x.shape)}")
        b, c, sizes = x.shape[0], x.shape[1], tuple(x.shape[2:])
        points = grid_points(sizes, x.device, x.dtype).expand(b, -1, -1)
        values = x.reshape(b, c, -1).transpose(1, 2)
        out = self.model(values, points, points)  # (B, N, C_out)
        return out.transpose(1, 2).reshape(b, out.shape[-1], *sizes)


def as_grid_model(model: nn.Module) -> nn.Module:
    """The model itself for grid operators, :class:`PointsOnGrid` around point operators."""
    kind = getattr(model, "input_kind", "grid")
    if kind == "grid":
        return model
    if kind == "points":
        return PointsOnGrid(model)
    raise ModelError(f"{type(model).__name__} has input_kind {kind!r}; expected 'grid' or 'points'")
