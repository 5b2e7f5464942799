"""Data normalisers fitted on the training split only.

``pointwise``: FNO's ``UnitGaussianNormalizer`` (Li et al. 2021, ``utilities3.py``): mean and
unbiased std over the sample axis at every channel and grid point,
``encode(x) = (x - mean) / (std + eps)`` with ``eps = 1e-5``.
``global``: one mean/std per channel over samples and grid points (a scalar for one channel).
``none``: identity.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from ..errors import CheckpointError, ConfigError, DataError, ModelError

KINDS = ("pointwise", "global", "none")
EPS = 1e-5
_CHUNK = 256  # samples per chunk when fitting, so fitting never copies the whole set to float64


class Normaliser:
    """Base: identity. Subclasses hold ``mean``/``std`` tensors of shape ``(C, *S)`` or ``(C, 1, ...)``."""

    kind = "none"

    def __init__(self, mean: torch.Tensor | None = None, std: torch.Tensor | None = None, eps: float = EPS):
        self.mean, self.std, self.eps = mean, std, float(eps)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, *S) -> (B, C, *S)`` normalised."""
        if self.mean is None:
            return x
        return (x - self.mean) / (self.std + self.eps)

    def decode(self, x: torch.Tensor) -> torch.Tensor:
        """Inverse of :meth:`encode`."""
        if self.mean is None:
            return x
        return x * (self.std + self.eps) + self.mean

    def to(self, device: torch.device | str) -> "Normaliser":
        if self.mean is not None:
            self.mean, self.std = self.mean.to(device), self.std.to(device)
        return self

    def state(self) -> dict[str, torch.Tensor]:
        """Tensors to store in a checkpoint."""
        return {} if self.mean is None else {"mean": self.mean.detach().cpu(), "std": self.std.detach().cpu()}

    def resample(self, shape: Sequence[int], old_coords=None, new_coords=None) -> "Normaliser":
        """The normaliser for a grid of spatial ``shape`` (pointwise statistics are interpolated
        with :func:`interpolate_grid`; others are returned unchanged)."""
        return self

    @classmethod
    def fit(cls, x: torch.Tensor, eps: float = EPS) -> "Normaliser":
        return cls(eps=eps)


def _moments(x: torch.Tensor, reduce_dims: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and unbiased std of ``x`` over ``reduce_dims`` (0 always included), in float64 chunks."""
    n = x.shape[0]
    count = n
    for d in reduce_dims:
        if d != 0:
            count *= x.shape[d]
    if count < 2:
        raise DataError(f"cannot fit a normaliser on {n} sample(s); use at least 2 training samples")
    inner = tuple(d - 1 for d in reduce_dims if d != 0)
    total = None
    for i in range(0, n, _CHUNK):
        c = x[i : i + _CHUNK].double().sum(0)
        c = c.sum(inner, keepdim=True) if inner else c
        total = c if total is None else total + c
    mean = total / count
    sq = None
    for i in range(0, n, _CHUNK):
        c = ((x[i : i + _CHUNK].double() - mean) ** 2).sum(0)
        c = c.sum(inner, keepdim=True) if inner else c
        sq = c if sq is None else sq + c
    std = torch.sqrt(sq / (count - 1))
    return mean.float(), std.float()


class UnitGaussian(Normaliser):
    """Pointwise Gaussian normaliser: statistics of shape ``(C, *S)``."""

    kind = "pointwise"

    @classmethod
    def fit(cls, x: torch.Tensor, eps: float = EPS) -> "UnitGaussian":
        mean, std = _moments(x, (0,))
        return cls(mean, std, eps)

    def resample(self, shape: Sequence[int], old_coords=None, new_coords=None) -> "UnitGaussian":
        shape = tuple(int(s) for s in shape)
        if tuple(self.mean.shape[1:]) == shape:
            return self
        if len(shape) != self.mean.dim() - 1:
            raise ModelError(
                f"the normaliser was fitted on a {self.mean.dim() - 1}-D grid, got a {len(shape)}-D grid"
            )
        return UnitGaussian(
            interpolate_grid(self.mean, shape, old_coords, new_coords),
            interpolate_grid(self.std, shape, old_coords, new_coords),
            self.eps,
        )


def interpolate_grid(t: torch.Tensor, shape: Sequence[int], old_coords=None, new_coords=None) -> torch.Tensor:
    """Multilinear interpolation of ``t`` ``(C, *S_old)`` onto a grid of spatial ``shape``.

    With coordinates (one 1-D array per axis for the old and new grid) values are interpolated
    at the new coordinates (held constant beyond the old grid's ends). Without them both grids
    are taken to span the same interval including both ends, which is
    ``F.interpolate(..., mode="bilinear", align_corners=True)`` in 2-D.
    """
    out = t
    for axis, n_new in enumerate(shape):
        n_old = t.shape[1 + axis]
        if old_coords is not None and new_coords is not None:
            old = np.asarray(old_coords[axis], dtype=np.float64)
            new = np.asarray(new_coords[axis], dtype=np.float64)
        else:
            old, new = np.linspace(0.0, 1.0, n_old), np.linspace(0.0, 1.0, n_new)
        if len(old) != n_old or len(new) != n_new:
            raise ModelError(f"grid axis {axis}: {len(old)}/{len(new)} coordinates for {n_old}/{n_new} points")
        if n_old == 1:
            out = out.index_select(1 + axis, torch.zeros(n_new, dtype=torch.long))
            continue
        pos = np.interp(new, old, np.arange(n_old, dtype=np.float64))
        i0 = np.clip(np.floor(pos).astype(np.int64), 0, n_old - 2)
        w = torch.as_tensor(pos - i0, dtype=out.dtype)
        view = [1] * out.dim()
        view[1 + axis] = n_new
        w = w.reshape(view)
        i0 = torch.as_tensor(i0)
        lo = out.index_select(1 + axis, i0)
        hi = out.index_select(1 + axis, i0 + 1)
        out = lo + (hi - lo) * w
    return out


class GlobalGaussian(Normaliser):
    """One mean and unbiased std per channel (over samples and grid points); shape ``(C, 1, ...)``."""

    kind = "global"

    @classmethod
    def fit(cls, x: torch.Tensor, eps: float = EPS) -> "GlobalGaussian":
        mean, std = _moments(x, tuple(d for d in range(x.dim()) if d != 1))
        return cls(mean, std, eps)


_CLASSES = {"pointwise": UnitGaussian, "global": GlobalGaussian, "none": Normaliser}


def normaliser_class(kind: str) -> type[Normaliser]:
    if kind not in _CLASSES:
        raise ConfigError(f"unknown normaliser {kind!r}; valid normalisers are: {', '.join(KINDS)}")
    return _CLASSES[kind]


@dataclass
class DataNormaliser:
    """The input and output normalisers of a run (both of one ``kind``)."""

    inputs: Normaliser
    outputs: Normaliser

    @property
    def kind(self) -> str:
        return self.inputs.kind

    @classmethod
    def fit(cls, kind: str, x: torch.Tensor, y: torch.Tensor, eps: float = EPS) -> "DataNormaliser":
        """Fit on training inputs ``x`` and outputs ``y``, each ``(N, C, *S)``."""
        c = normaliser_class(kind)
        return cls(c.fit(x, eps), c.fit(y, eps))

    def encode_inputs(self, x: torch.Tensor) -> torch.Tensor:
        return self.inputs.encode(x)

    def encode_outputs(self, y: torch.Tensor) -> torch.Tensor:
        return self.outputs.encode(y)

    def decode_outputs(self, y: torch.Tensor) -> torch.Tensor:
        return self.outputs.decode(y)

    def to(self, device: torch.device | str) -> "DataNormaliser":
        self.inputs.to(device)
        self.outputs.to(device)
        return self

    def resample(self, shape: Sequence[int], old_coords=None, new_coords=None) -> "DataNormaliser":
        """Normalisers for a grid of spatial ``shape`` (see :func:`interpolate_grid`)."""
        return DataNormaliser(
            self.inputs.resample(shape, old_coords, new_coords), self.outputs.resample(shape, old_coords, new_coords)
        )

    @property
    def shape(self) -> tuple[int, ...] | None:
        """Spatial shape the statistics are tied to (None when they broadcast over any grid)."""
        if self.kind != "pointwise":
            return None
        return tuple(self.inputs.mean.shape[1:])

    def state(self) -> dict[str, torch.Tensor]:
        """Flat tensor dict: ``inputs.mean``, ``inputs.std``, ``outputs.mean``, ``outputs.std``."""
        out = {f"inputs.{k}": v for k, v in self.inputs.state().items()}
        out.update({f"outputs.{k}": v for k, v in self.outputs.state().items()})
        return out

    def meta(self) -> dict:
        return {"kind": self.kind, "eps": self.inputs.eps}

    @classmethod
    def from_state(cls, meta: dict, state: dict[str, torch.Tensor]) -> "DataNormaliser":
        """Rebuild from :meth:`meta` and :meth:`state`; missing tensors raise CheckpointError."""
        kind = meta.get("kind", "none")
        c = normaliser_class(kind)
        eps = float(meta.get("eps", EPS))
        parts = []
        for side in ("inputs", "outputs"):
            if c is Normaliser:
                parts.append(Normaliser(eps=eps))
                continue
            try:
                parts.append(c(state[f"{side}.mean"].float(), state[f"{side}.std"].float(), eps))
            except KeyError as exc:
                raise CheckpointError(f"the {kind} normaliser statistics {exc.args[0]!r} are missing from the checkpoint; the run is damaged, retrain it") from None
        return cls(*parts)
