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

from ..datasets.format import open_dataset, reading
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


def _axis_weights(src: np.ndarray, dst: np.ndarray, name: str, path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Left indices and right weights of linear interpolation from ``src`` to ``dst`` points."""
    tol = 1e-9 * max(1.0, float(np.ptp(src)))
    if dst.min() < src.min() - tol or dst.max() > src.max() + tol:
        raise DataError(f"{path}: the {name} grid [{dst.min():g}, {dst.max():g}] reaches outside its source grid "
                        f"[{src.min():g}, {src.max():g}]; the variables cannot be put on one grid")
    left = np.clip(np.searchsorted(src, dst, side="right") - 1, 0, len(src) - 2)
    w = np.clip((dst - src[left]) / (src[left + 1] - src[left]), 0.0, 1.0)
    return left, w


def _resample(arr: np.ndarray, src: list[np.ndarray], dst: list[np.ndarray], names: list[str], path: Path) -> np.ndarray:
    """Separable linear interpolation of the trailing ``len(src)`` axes of ``arr`` onto ``dst``.

    Puts a staggered field on the output grid: e.g. ConDiff's ``k`` at cell centres
    ``(i + 1/2) h`` becomes, at the nodes ``(i + 1) h``, the mean of the four surrounding cells.
    """
    nd = len(src)
    for axis, (s, d, name) in enumerate(zip(src, dst, names)):
        ax = arr.ndim - nd + axis
        left, w = _axis_weights(s, d, name, path)
        shape = [1] * arr.ndim
        shape[ax] = len(d)
        w = w.reshape(shape)
        arr = np.take(arr, left, axis=ax) * (1 - w) + np.take(arr, left + 1, axis=ax) * w
    return arr


def _stack(ds, names: list[str], dims: list[str], sel: int | slice | np.ndarray, path: Path) -> np.ndarray:
    """Stack variables as channels on the grid ``dims``; a variable on another grid with as many
    spatial axes (a staggered field) is linearly interpolated onto it by its coordinates.

    ``sel`` picks the samples: the first ``sel`` (an int), a slice, or increasing indices. Every
    operation is per sample, so a sample's channels do not depend on which others are read with it.
    """
    if isinstance(sel, (int, np.integer)):
        sel = slice(0, int(sel))
    parts = []
    for name in names:
        var = ds[name]
        own = [d for d in var.dims if d not in ("sample", "t", "component")]
        extra = [d for d in var.dims if d != "sample" and d not in own]
        arr = var.isel(sample=sel).transpose("sample", *extra, *own).values
        arr = np.asarray(arr, dtype=np.float64 if own != list(dims) else np.float32)
        if own != list(dims):
            if len(own) != len(dims) or not all(d in ds.coords for d in (*own, *dims)):
                raise DataError(
                    f"{path}: variable {name!r} has dims {var.dims}, expected the spatial dims {tuple(dims)} of "
                    "the outputs (or a staggered grid with coordinates)"
                )
            arr = _resample(arr, [ds[d].values.astype(np.float64) for d in own],
                            [ds[d].values.astype(np.float64) for d in dims], own, path)
        arr = np.asarray(arr, dtype=np.float32)
        parts.append(arr.reshape(arr.shape[0], -1, *arr.shape[1 + len(extra):]))
    return parts[0] if len(parts) == 1 else np.concatenate(parts, axis=1)


def _grid_dims(ds, path: Path) -> list[str]:
    """Spatial dims of the first output variable: the grid every channel is put on."""
    first = str(ds.attrs["outputs"]).split()[0]
    dims = [d for d in ds[first].dims if d not in ("sample", "t", "component")]
    if not dims:
        raise DataError(f"{path}: output {first!r} has no spatial dimension; grid models need one")
    return dims


def load_grid_data(path: str | Path, n: int | None = None, clip: bool = False) -> GridData:
    """Read the first ``n`` samples (all when None) of the dataset at ``path``.

    Raises DataError for a missing/invalid file or when fewer than ``n`` samples are stored
    (unless ``clip``, which reads as many as there are).
    """
    path = Path(path)
    ds = open_dataset(path)
    with reading(path):  # a damaged chunk met while reading: one DataError line
        return _load(ds, path, n, clip)


def _load(ds, path: Path, n: int | None, clip: bool) -> GridData:
    try:
        n = _count(ds, path, n, clip)
        inputs, outputs, dims = _layout(ds, path)
        x = _stack(ds, inputs, dims, n, path)
        y = _stack(ds, outputs, dims, n, path)
        signature, coords = _signature(ds, inputs, outputs, dims, x.shape, y.shape)
    finally:
        ds.close()
    return GridData(torch.from_numpy(x), torch.from_numpy(y), signature, path, coords)


def _count(ds, path: Path, n: int | None, clip: bool) -> int:
    """The number of samples to read: ``n`` (at most the file's, with ``clip``) or all of them."""
    total = int(ds.sizes["sample"])
    if n is not None and clip:
        n = min(n, total)
    if n is not None and n > total:
        raise DataError(f"{path}: asked for the first {n} samples but the file holds {total}; lower n_train")
    return total if n is None else int(n)


def _layout(ds, path: Path) -> tuple[list[str], list[str], list[str]]:
    """Input variables, output variables and the grid's spatial dims of a dataset."""
    return str(ds.attrs["inputs"]).split(), str(ds.attrs["outputs"]).split(), _grid_dims(ds, path)


def _signature(ds, inputs, outputs, dims, x_shape, y_shape) -> tuple[DatasetSignature, dict]:
    """The signature and the grid coordinates, from the stacked arrays' shapes."""
    coords = {d: np.asarray(ds[d].values, dtype=np.float64) for d in dims if d in ds.coords or d in ds}
    if len(coords) != len(dims):
        coords = {}
    signature = DatasetSignature(
        pde=str(ds.attrs["pde"]),
        inputs=tuple(inputs),
        outputs=tuple(outputs),
        dims=tuple(dims),
        shape=tuple(int(s) for s in x_shape[2:]),
        grid=str(ds.attrs.get("grid", "")),
        in_channels=int(x_shape[1]),
        out_channels=int(y_shape[1]),
        coords=tuple(tuple(float(v) for v in coords[d]) for d in dims) if coords else (),
    )
    return signature, coords


def read_signature(path: str | Path) -> DatasetSignature:
    """The signature of a dataset file, reading one sample only."""
    return load_grid_data(path, n=1).signature


def inside_domain(data: GridData) -> torch.Tensor:
    """``(N, *S)`` bool: the grid points inside the domain. All of them, unless the data carry a
    ``mask`` input (1 outside the domain, as ``poisson`` with ``domain=lshape|holes`` and
    ``poisson3d``)."""
    n, shape = data.x.shape[0], tuple(data.x.shape[2:])
    if "mask" not in data.signature.inputs:
        return torch.ones(n, *shape, dtype=torch.bool)
    return data.x[:, data.signature.inputs.index("mask")] < 0.5  # one channel per input on these grids
