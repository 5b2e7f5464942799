"""Read MATLAB ``.mat`` files of either kind through one small interface.

v4/v5/v7 files are read with :func:`scipy.io.loadmat` (whole arrays: the format cannot be
sliced). v7.3 files are HDF5 with a 512-byte MATLAB header in the user block; they are read
with h5py a block of samples at a time. MATLAB stores arrays column-major, so h5py sees
every axis reversed: an ``(N, s1, s2)`` MATLAB array reads as ``(s2, s1, N)`` and is
transposed back here. Both readers present arrays in MATLAB's own axis order.
"""

from __future__ import annotations

import abc

from pathlib import Path

import numpy as np

from ...errors import DataError
from .base import check_file

_WHAT = "a MATLAB .mat file (v5 or v7.3)"
_CLASSES = {"double": "float64", "single": "float32", "logical": "bool", "int8": "int8", "uint8": "uint8",
            "int16": "int16", "uint16": "uint16", "int32": "int32", "uint32": "uint32",
            "int64": "int64", "uint64": "uint64"}


def _matlab_class(dset) -> str | None:
    value = dset.attrs.get("MATLAB_class")
    return value.decode() if isinstance(value, bytes) else None if value is None else str(value)


class MatFile(abc.ABC):
    """An opened .mat file: numeric arrays by key, in MATLAB axis order."""

    version: str

    @abc.abstractmethod
    def keys(self) -> list[str]:
        ...

    @abc.abstractmethod
    def shape(self, key: str) -> tuple[int, ...]:
        ...

    @abc.abstractmethod
    def dtype(self, key: str) -> np.dtype:
        ...

    @abc.abstractmethod
    def read(self, key: str, start: int, stop: int, stride: int = 1) -> np.ndarray:
        """Rows ``start..stop-1`` of the first axis, the other axes strided by ``stride``."""
        ...

    def close(self) -> None:
        pass


class Mat5(MatFile):
    """A v4/v5/v7 file: listed with ``whosmat``, a key loaded on first use."""

    version = "5"

    def __init__(self, path: Path, whos: list[tuple[str, tuple[int, ...], str]]):
        self.path = path
        self._whos = {name: (tuple(shape), cls) for name, shape, cls in whos if cls in _CLASSES}
        self._loaded: dict[str, np.ndarray] = {}

    def keys(self) -> list[str]:
        return list(self._whos)

    def shape(self, key: str) -> tuple[int, ...]:
        return self._whos[key][0]

    def dtype(self, key: str) -> np.dtype:
        return np.dtype(_CLASSES[self._whos[key][1]])

    def read(self, key: str, start: int, stop: int, stride: int = 1) -> np.ndarray:
        import scipy.io

        if key not in self._loaded:
            self._loaded[key] = scipy.io.loadmat(self.path, variable_names=[key])[key]
        array = self._loaded[key]
        return array[(slice(start, stop), *[slice(None, None, stride)] * (array.ndim - 1))]


class Mat73(MatFile):
    """A v7.3 file (HDF5): sliced on disk, axes reversed back to MATLAB order."""

    version = "7.3"

    def __init__(self, path: Path):
        import h5py

        self._f = h5py.File(path, "r")
        # '#refs#' and '#subsystem#' hold MATLAB internals; char, cell and struct are not arrays
        self._sets = {k: v for k, v in self._f.items()
                      if not k.startswith("#") and isinstance(v, h5py.Dataset) and v.dtype.kind in "biuf"
                      and _matlab_class(v) in (None, *_CLASSES)}

    def keys(self) -> list[str]:
        return list(self._sets)

    def shape(self, key: str) -> tuple[int, ...]:
        return tuple(reversed(self._sets[key].shape))

    def dtype(self, key: str) -> np.dtype:
        return self._sets[key].dtype

    def read(self, key: str, start: int, stop: int, stride: int = 1) -> np.ndarray:
        dset = self._sets[key]
        # MATLAB's first axis (samples) is the last one on disk
        block = dset[(*[slice(None, None, stride)] * (dset.ndim - 1), slice(start, stop))]
        return np.ascontiguousarray(np.transpose(block))

    def close(self) -> None:
        self._f.close()


def open_mat(path: Path) -> MatFile:
    """Open a .mat file, choosing the reader from the header (HDF5 means v7.3)."""
    import h5py
    import scipy.io

    check_file(path, _WHAT)
    with open(path, "rb") as fh:
        header = fh.read(128)
    if h5py.is_hdf5(path):
        if not header.startswith(b"MATLAB 7.3"):
            # without MATLAB's header nothing says the axes are stored reversed
            raise DataError(
                f"{path}: an HDF5 file without the 'MATLAB 7.3 MAT-file' header, so not a .mat file; "
                "for PDEBench or ConDiff files use `sciml import pdebench` or `sciml import condiff`"
            )
        return Mat73(path)
    try:
        whos = scipy.io.whosmat(path)
    except Exception as exc:  # scipy raises ValueError, MatReadError, TypeError for foreign bytes
        raise DataError(f"{path}: not {_WHAT} ({type(exc).__name__}: {exc}); check the file") from None
    return Mat5(path, whos)
