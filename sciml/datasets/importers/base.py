"""What every importer provides: a :class:`Source` (an opened foreign file described in sciml
terms and read a block of samples at a time), the importer registry, and shared checks.
"""

from __future__ import annotations

import abc

from pathlib import Path
from typing import Any, ClassVar, Mapping, Sequence

import numpy as np

from ...errors import ConfigError, DataError
from ...registry import Registry


def _load_all() -> None:
    from . import condiff, fno_mat, neuralop, pdebench, the_well  # noqa: F401  (importing fills the registry)


IMPORTERS: Registry = Registry("import format", _load_all)


class Source(abc.ABC):
    """An opened file of a foreign format, described as a sciml dataset.

    Subclasses take the file path and their format options (named in ``options``), open
    the file, set the attributes below and implement :meth:`read`.

    Attributes
    ----------
    pde : the ``pde`` attribute of the sciml file.
    inputs, outputs : variable names (the ``inputs``/``outputs`` attributes).
    coords : ordered ``{dim: 1-D coordinates}`` of every non-sample dimension.
    variables : ``{name: dims after "sample"}`` of every stored variable.
    keys : ``{variable: where it comes from in the source}`` (recorded in ``params``).
    n : number of samples in the source.
    grid : the ``grid`` attribute: where the values sit.
    params : format-specific provenance merged into the ``params`` attribute.
    dtype : the floating dtype that keeps the source's precision.
    """

    name: ClassVar[str] = ""
    options: ClassVar[tuple[str, ...]] = ()

    pde: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    coords: dict[str, np.ndarray]
    variables: dict[str, tuple[str, ...]]
    keys: dict[str, str]
    n: int
    grid: str
    params: dict[str, Any]
    dtype: np.dtype

    @abc.abstractmethod
    def read(self, start: int, stop: int) -> dict[str, np.ndarray]:
        """Samples ``start..stop-1`` of every variable, each ``(stop - start, *dims)``."""
        ...

    def residuals(self, arrays: Mapping[str, np.ndarray]) -> np.ndarray | None:
        """Relative residual of each sample of a block, where the source's system is known."""
        return None

    def solver(self) -> dict[str, Any]:
        """The ``solver`` attribute (the residuals are added by the converter)."""
        return {"name": "imported"}

    def sample_bytes(self) -> int:
        """Bytes of one sample of all variables (sets how many samples are read at once)."""
        sizes = [int(np.prod([len(self.coords[d]) for d in dims])) for dims in self.variables.values()]
        return max(1, sum(sizes) * self.dtype.itemsize)

    def close(self) -> None:
        """Release the file."""

    def __enter__(self) -> "Source":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def check_file(path: Path, what: str) -> None:
    """DataError unless ``path`` is an existing regular file."""
    if not path.exists():
        raise DataError(f"{path}: file not found; expected {what}, check the path")
    if not path.is_file():
        raise DataError(f"{path}: is not a file; expected {what}")


def open_hdf5(path: Path, what: str, hint: str):
    """Open ``path`` read-only with h5py; DataError naming the expected format otherwise."""
    import h5py

    check_file(path, what)
    if not h5py.is_hdf5(path):
        raise DataError(f"{path}: not an HDF5 file; expected {what}{hint}")
    try:
        return h5py.File(path, "r")
    except OSError as exc:
        raise DataError(f"{path}: cannot be opened as HDF5 ({str(exc).splitlines()[0]}); the file is damaged") from None


def missing_key(path: Path, key: str, present: Sequence[str], hint: str) -> DataError:
    """The error for an absent key: it names the keys that are in the file."""
    listed = ", ".join(sorted(present)) or "none"
    return DataError(f"{path}: no dataset {key!r}; the file holds: {listed}{hint}")


def float_dtype(*dtypes: np.dtype) -> np.dtype:
    """The float dtype that holds every source dtype exactly: float32 unless one needs float64."""
    # numpy promotion: float32 with bool/int8/int16/float16 stays float32; int32/64, float64 widen
    return np.dtype(np.result_type(np.float32, *dtypes))


def check_subsample(subsample: Any) -> int:
    """A positive integer stride."""
    if isinstance(subsample, bool) or not isinstance(subsample, (int, np.integer)) or subsample < 1:
        raise ConfigError(f"subsample must be a positive integer, got {subsample!r}")
    return int(subsample)


def plain_attrs(attrs: Mapping[str, Any]) -> dict[str, Any]:
    """HDF5 attributes as JSON-friendly values (numpy scalars and arrays made plain)."""
    out: dict[str, Any] = {}
    for key, value in attrs.items():
        if isinstance(value, bytes):
            value = value.decode(errors="replace")
        elif isinstance(value, np.ndarray):
            value = value.tolist()
        elif isinstance(value, np.generic):
            value = value.item()
        out[str(key)] = value
    return out
