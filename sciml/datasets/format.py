"""The sciml dataset file: NetCDF4-conventions HDF5 written through h5netcdf.

Layout (``sciml_format`` = 1):

* dimensions ``sample`` and the spatial ``x``, ``y``, ``z`` (and ``t`` for trajectories);
* coordinate variables ``x``, ``y``, ... in physical units;
* data variables named after the physics (``a``, ``f``, ``u`` ...), shape ``(sample, *spatial)``,
  chunked one sample per chunk and streamed sample by sample;
* ``done`` (uint8, per sample) marks finished samples, ``residual`` (float64, per sample) the
  achieved relative residual of the solve that produced the sample;
* global attributes ``sciml_format``, ``pde``, ``inputs``, ``outputs``, ``params`` (JSON),
  ``seed``, ``grid``, ``solver`` (JSON), ``sciml_version``, ``created``.

Files are written under ``<name>.partial`` and renamed into place when every sample is done,
so a file under its final name is always complete.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import time
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from ..errors import DataError

FORMAT_VERSION = 1
REQUIRED_ATTRS = ("sciml_format", "pde", "inputs", "outputs", "params", "seed", "grid")


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


def partial_path(path: str | Path) -> Path:
    path = Path(path)
    return path.with_name(path.name + ".partial")


class DatasetWriter:
    """Stream samples into a new dataset file.

    Parameters
    ----------
    path : final file name; data go to ``path.partial`` until :meth:`finish`.
    n : number of samples.
    coords : ordered mapping of spatial dimension name -> 1-D coordinate array.
    variables : mapping of variable name -> dims after ``sample`` (e.g. ``("x", "y")``).
    attrs : global attributes (``pde``, ``inputs``, ``outputs``, ``params`` dict, ``seed``, ``grid``...).
    dtype : storage dtype of the data variables.
    resume : reopen an existing ``.partial`` file (its ``params``/``seed`` must match).
    """

    def __init__(
        self,
        path: str | Path,
        n: int,
        coords: Mapping[str, np.ndarray],
        variables: Mapping[str, Sequence[str]],
        attrs: Mapping[str, Any],
        dtype: str = "float32",
        resume: bool = False,
    ):
        import h5netcdf

        self.path = Path(path)
        self.tmp = partial_path(self.path)
        self.n = int(n)
        self._last_flush = time.monotonic()
        if self.n < 1:
            raise DataError(f"a dataset needs at least one sample, got n={n}")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        attrs = dict(attrs)
        attrs["params"] = json.dumps(attrs.get("params", {}), sort_keys=True)
        if resume and self.tmp.exists():
            self._f = h5netcdf.File(self.tmp, "a")
            # HDF5 hands attributes back as numpy scalars (seed 2 -> np.int64(2)); compare plain values
            old = {k: _plain(self._f.attrs.get(k)) for k in ("params", "seed", "pde")}
            new = {k: _plain(attrs.get(k)) for k in ("params", "seed", "pde")}
            if json.dumps(old, default=str, sort_keys=True) != json.dumps(new, default=str, sort_keys=True):
                self._f.close()
                raise DataError(
                    f"{self.tmp} was started with other parameters; delete it or drop --resume"
                )
            return
        from .. import __version__

        self._f = f = h5netcdf.File(self.tmp, "w")
        f.dimensions = {"sample": self.n, **{k: len(v) for k, v in coords.items()}}
        for name, values in coords.items():
            v = f.create_variable(name, (name,), "f8")
            v[:] = np.asarray(values, dtype="f8")
        for name, dims in variables.items():
            shape = tuple(len(coords[d]) for d in dims)
            f.create_variable(name, ("sample", *dims), dtype, chunks=(1, *shape))
        f.create_variable("done", ("sample",), "u1", fillvalue=0)
        f.create_variable("residual", ("sample",), "f8", fillvalue=np.nan)
        f.variables["done"][:] = np.zeros(self.n, "u1")
        f.attrs["sciml_format"] = FORMAT_VERSION
        f.attrs["sciml_version"] = __version__
        f.attrs["created"] = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
        for key, value in attrs.items():
            f.attrs[key] = value if not isinstance(value, (dict, list)) else json.dumps(value)

    def done(self) -> np.ndarray:
        """Boolean mask of finished samples."""
        return np.asarray(self._f.variables["done"][:], dtype=bool)

    def residuals(self) -> np.ndarray:
        """Achieved relative residual of every sample (NaN where not done)."""
        return np.asarray(self._f.variables["residual"][:], dtype=np.float64)

    def write(self, i: int, residual: float = float("nan"), **arrays: np.ndarray) -> None:
        """Store sample ``i`` (all its variables) and mark it done."""
        for name, value in arrays.items():
            self._f.variables[name][i] = value
        self._f.variables["residual"][i] = residual
        self._f.variables["done"][i] = 1
        # flushing costs ~2 ms; at most once a second keeps small samples cheap while an
        # interruption loses at most a second of work (unflushed samples are simply redone)
        now = time.monotonic()
        if now - self._last_flush > 1.0:
            self._f.flush()
            self._last_flush = now

    def set_attr(self, key: str, value: Any) -> None:
        self._f.attrs[key] = json.dumps(value) if isinstance(value, (dict, list)) else value

    def finish(self) -> Path:
        """Close and rename into place; refuses when samples are missing."""
        missing = int((~self.done()).sum())
        self._f.close()
        if missing:
            raise DataError(f"{missing} samples of {self.tmp} are not done; rerun with --resume")
        os.replace(self.tmp, self.path)
        return self.path

    def close(self) -> None:
        """Close without finishing (the ``.partial`` file stays for ``--resume``)."""
        try:
            self._f.close()
        except Exception:  # already closed
            pass


def _fail(path: Path, what: str) -> DataError:
    return DataError(f"{path}: {what}")


def open_dataset(path: str | Path, variables: Iterable[str] | None = None, check_finite: bool = True):
    """Open and validate a sciml dataset file; returns an ``xarray.Dataset``.

    Raises :class:`DataError` with one clear line for a missing, corrupt, incomplete or
    non-sciml file, for missing variables and for NaN/Inf in the data.
    """
    import h5py
    import xarray as xr

    path = Path(path)
    if not path.exists():
        hint = " (an unfinished generation is in the .partial file; rerun with --resume)" if partial_path(path).exists() else ""
        raise _fail(path, f"file not found{hint}; check the path or create it with `sciml generate`")
    if path.is_dir():
        raise _fail(path, "is a directory, expected a dataset file (.h5)")
    try:
        ok = h5py.is_hdf5(path)
    except OSError:
        ok = False
    if not ok:
        raise _fail(path, "not an HDF5 file (corrupt or another format); regenerate it with `sciml generate` or convert it with `sciml import`")
    try:
        ds = xr.open_dataset(path, engine="h5netcdf")
    except Exception as exc:  # h5py/h5netcdf raise many types for damaged files
        raise _fail(path, f"cannot be read as a dataset ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}); the file is damaged, regenerate it") from None
    missing = [k for k in REQUIRED_ATTRS if k not in ds.attrs]
    if missing:
        ds.close()
        raise _fail(path, f"not a sciml dataset (missing attributes {', '.join(missing)}); convert it with `sciml import`")
    if int(ds.attrs["sciml_format"]) > FORMAT_VERSION:
        ds.close()
        raise _fail(path, f"written by a newer sciml (format {ds.attrs['sciml_format']} > {FORMAT_VERSION}); upgrade sciml")
    names = str(ds.attrs["inputs"]).split() + str(ds.attrs["outputs"]).split()
    names += list(variables or [])
    absent = [v for v in names if v not in ds.data_vars]
    if absent:
        ds.close()
        raise _fail(path, f"missing variable(s) {', '.join(absent)}; the file is incomplete or damaged")
    try:
        if "done" in ds and not bool(ds["done"].values.all()):
            n = int((ds["done"].values == 0).sum())
            ds.close()
            raise _fail(path, f"{n} samples are not finished; rerun the generation with --resume")
        if check_finite:
            for v in names:
                if ds[v].dtype.kind == "f" and not np.isfinite(ds[v].values).all():
                    ds.close()
                    raise _fail(path, f"variable {v!r} contains NaN or Inf values; regenerate or clean the data")
    except DataError:
        raise
    except Exception as exc:
        ds.close()
        raise _fail(path, f"data cannot be read ({type(exc).__name__}); the file is damaged, regenerate it") from None
    return ds


def attrs_json(ds, key: str) -> Any:
    """Decode a JSON global attribute (``params``, ``solver``)."""
    value = ds.attrs.get(key)
    if value is None:
        return None
    try:
        return json.loads(value)
    except (TypeError, ValueError):
        return value


def spatial_dims(ds) -> list[str]:
    """Names of the spatial dimensions of the first input variable, in order."""
    first = str(ds.attrs["inputs"]).split()[0]
    return [d for d in ds[first].dims if d not in ("sample", "t", "component")]
