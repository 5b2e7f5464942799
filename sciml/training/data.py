"""Load a sciml dataset file into grid tensors ``(sample, channel, *spatial)``.

Input variables (``inputs`` attribute) are stacked along the channel axis in file order, the
same for outputs. A variable with extra non-spatial axes (``t``, ``component``) contributes one
channel per entry of those axes.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from ..datasets.format import open_dataset, spatial_dims
from ..errors import DataError


@dataclass(frozen=True)
class DatasetSignature:
    """What a model was trained on: the PDE, the variables, the grid and the channel counts."""

    pde: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    dims: tuple[str, ...]
    shape: tuple[int, ...]
    grid: str
    in_channels: int
    out_channels: int
    coords: tuple[tuple[float, ...], ...] = ()

    def describe(self) -> str:
        """E.g. ``pde=darcy inputs a -> u``."""
        return f"pde={self.pde} inputs {' '.join(self.inputs)} -> {' '.join(self.outputs)}"

    def to_dict(self) -> dict:
        d = asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}

    @classmethod
    def from_dict(cls, d: dict) -> "DatasetSignature":
        return cls(
            pde=str(d["pde"]),
            inputs=tuple(d["inputs"]),
            outputs=tuple(d["outputs"]),
            dims=tuple(d["dims"]),
            shape=tuple(int(s) for s in d["shape"]),
            grid=str(d.get("grid", "")),
            in_channels=int(d["in_channels"]),
            out_channels=int(d["out_channels"]),
            coords=tuple(tuple(float(v) for v in c) for c in d.get("coords", ())),
        )

    def check_same_problem(self, other: "DatasetSignature", where: str) -> None:
        """Raise DataError unless ``other`` has the same PDE, variables, dims and channels.

        The grid size may differ (resolution transfer is decided by the caller).
        """
        if (self.pde, self.inputs, self.outputs) != (other.pde, other.inputs, other.outputs):
            raise DataError(
                f"{where}: model was trained on {self.describe()}, got {other.describe()}; "
                f"evaluate it on a {self.pde} dataset"
            )
        if self.dims != other.dims:
            raise DataError(
                f"{where}: model was trained on spatial dims ({', '.join(self.dims)}), got ({', '.join(other.dims)})"
            )
        if (self.in_channels, self.out_channels) != (other.in_channels, other.out_channels):
            raise DataError(
                f"{where}: model was trained on {self.in_channels} input / {self.out_channels} output channels, "
                f"got {other.in_channels} / {other.out_channels}"
            )


@dataclass
class GridData:
    """Inputs ``x`` ``(N, C_in, *S)`` and outputs ``y`` ``(N, C_out, *S)`` as float32 tensors."""

    x: torch.Tensor
    y: torch.Tensor
    signature: DatasetSignature
    path: Path
    coords: dict

    def __len__(self) -> int:
        return self.x.shape[0]

    def subset(self, start: int, stop: int) -> "GridData":
        return GridData(self.x[start:stop], self.y[start:stop], self.signature, self.path, self.coords)


def _stack(ds, names: list[str], dims: list[str], n: int, path: Path) -> np.ndarray:
    parts = []
    for name in names:
        var = ds[name]
        missing = [d for d in dims if d not in var.dims]
        if missing:
            raise DataError(
                f"{path}: variable {name!r} has dims {var.dims}, expected the spatial dims {tuple(dims)} of the inputs"
            )
        extra = [d for d in var.dims if d != "sample" and d not in dims]
        arr = var.isel(sample=slice(0, n)).transpose("sample", *extra, *dims).values
        arr = np.asarray(arr, dtype=np.float32)
        parts.append(arr.reshape(arr.shape[0], -1, *arr.shape[1 + len(extra):]))
    return parts[0] if len(parts) == 1 else np.concatenate(parts, axis=1)


def load_grid_data(path: str | Path, n: int | None = None, clip: bool = False) -> GridData:
    """Read the first ``n`` samples (all when None) of the dataset at ``path``.

    Raises DataError for a missing/invalid file or when fewer than ``n`` samples are stored
    (unless ``clip``, which reads as many as there are).
    """
    path = Path(path)
    ds = open_dataset(path)
    try:
        total = int(ds.sizes["sample"])
        if n is not None and clip:
            n = min(n, total)
        if n is not None and n > total:
            raise DataError(f"{path}: asked for the first {n} samples but the file holds {total}; lower n_train")
        n = total if n is None else int(n)
        inputs = str(ds.attrs["inputs"]).split()
        outputs = str(ds.attrs["outputs"]).split()
        dims = spatial_dims(ds)
        if not dims:
            raise DataError(f"{path}: input {inputs[0]!r} has no spatial dimension; grid models need one")
        x = _stack(ds, inputs, dims, n, path)
        y = _stack(ds, outputs, dims, n, path)
        coords = {d: np.asarray(ds[d].values, dtype=np.float64) for d in dims if d in ds.coords or d in ds}
        if len(coords) != len(dims):
            coords = {}
        signature = DatasetSignature(
            pde=str(ds.attrs["pde"]),
            inputs=tuple(inputs),
            outputs=tuple(outputs),
            dims=tuple(dims),
            shape=tuple(int(s) for s in x.shape[2:]),
            grid=str(ds.attrs.get("grid", "")),
            in_channels=int(x.shape[1]),
            out_channels=int(y.shape[1]),
            coords=tuple(tuple(float(v) for v in coords[d]) for d in dims) if coords else (),
        )
    finally:
        ds.close()
    return GridData(torch.from_numpy(x), torch.from_numpy(y), signature, path, coords)


def read_signature(path: str | Path) -> DatasetSignature:
    """The signature of a dataset file, reading one sample only."""
    return load_grid_data(path, n=1).signature
