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

import contextlib
import datetime as _dt
import gc
import json
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from ..errors import DataError
from ..runtime import JOB_SIGNALS

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
    resume : reopen an existing ``.partial`` file (its ``pde``, ``params``, ``seed``, ``n``
        and ``dtype`` must match; DataError otherwise, and for a file a hard kill damaged).

    Samples are flushed to disk at most once a second (:meth:`flush`), the ``done`` flags
    after the data, so a ``.partial`` file left by any interruption names only samples
    that are really in it.
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
            try:
                self._h5, self._f = _open(self.tmp, "a")
            except Exception as exc:  # h5py raises OSError, KeyError... for damaged files
                raise _damaged(self.tmp, exc) from None
            try:
                self._check_resumable(attrs, variables, dtype)
                self._done = np.asarray(self._f.variables["done"][:], dtype=bool)
                self._residual = np.asarray(self._f.variables["residual"][:], dtype=np.float64)
                self._datasets = {v: self._h5[v] for v in variables}
            except BaseException as exc:
                self._f.close()  # without our flush (h5netcdf writes nothing to an existing file)
                self._h5.close()
                if isinstance(exc, Exception) and not isinstance(exc, DataError):
                    raise _damaged(self.tmp, exc) from None  # h5py raises many types for damaged files
                raise
            return
        from .. import __version__

        self._h5, self._f = _open(self.tmp, "w")
        f = self._f
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
        self._done = np.zeros(self.n, dtype=bool)
        self._residual = np.full(self.n, np.nan)
        # h5netcdf's Variable.__setitem__ looks the dataset up four times per call (0.76 ms
        # against 0.19 ms for the write itself); for plain numeric variables it is the
        # h5py dataset's __setitem__, so samples are written through h5py directly
        self._datasets = {v: self._h5[v] for v in variables}
        f.attrs["sciml_format"] = FORMAT_VERSION
        f.attrs["sciml_version"] = __version__
        f.attrs["created"] = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
        for key, value in attrs.items():
            f.attrs[key] = value if not isinstance(value, (dict, list)) else json.dumps(value)
        self.flush()  # the empty file's structure is on disk before any sample: a kill leaves it readable

    def _check_resumable(self, attrs: Mapping[str, Any], variables: Mapping[str, Sequence[str]], dtype: str) -> None:
        f = self._f
        # HDF5 hands attributes back as numpy scalars (seed 2 -> np.int64(2)); compare plain values
        old = {k: _plain(f.attrs.get(k)) for k in ("params", "seed", "pde")}
        new = {k: _plain(attrs.get(k)) for k in ("params", "seed", "pde")}
        if json.dumps(old, default=str, sort_keys=True) != json.dumps(new, default=str, sort_keys=True):
            changed = sorted(k for k in old if old[k] != new[k])
            raise DataError(
                f"{self.tmp} was started with other parameters ({_describe(old, new, changed)}); "
                "resume with the same settings, or delete it to start again"
            )
        held = int(f.dimensions["sample"].size)
        if held != self.n:
            raise DataError(
                f"{self.tmp} holds {held} samples, not n={self.n}; resume with n={held}, or delete it to start again"
            )
        missing = [v for v in (*variables, "done", "residual") if v not in f.variables]
        if missing:
            raise DataError(f"{self.tmp} lacks variable(s) {', '.join(missing)}; delete it and start again")
        stored = {str(f.variables[v].dtype) for v in variables}
        if stored != {str(np.dtype(dtype))}:
            raise DataError(
                f"{self.tmp} stores {', '.join(sorted(stored))}, not {dtype}; resume with dtype "
                f"{sorted(stored)[0]}, or delete it to start again"
            )

    def done(self) -> np.ndarray:
        """Boolean mask of finished samples (written ones, flushed to disk or not)."""
        return self._done.copy()

    def residuals(self) -> np.ndarray:
        """Achieved relative residual of every sample (NaN where not done)."""
        return np.where(self._done, self._residual, np.nan)

    def write(self, i: int, residual: float = float("nan"), **arrays: np.ndarray) -> None:
        """Store sample ``i`` (all its variables) and mark it done."""
        for name, value in arrays.items():
            self._datasets[name][i] = value
        self._residual[i] = residual
        self._done[i] = True
        # flushing costs ~2 ms; at most once a second keeps small samples cheap while an
        # interruption loses at most a second of work (unflushed samples are simply redone)
        if time.monotonic() - self._last_flush > 1.0:
            self.flush()

    def flush(self) -> None:
        """Put every written sample on disk, data first, ``residual`` and ``done`` flags after.

        A hard kill (SIGKILL, a node failure) can stop the process at any point, so the
        on-disk ``done`` flags only ever name samples whose data were flushed before them;
        samples written since the last flush are lost and redone on resume. Ctrl-C during
        the flush is held back until the file is consistent.
        """
        # h5netcdf's flush() only writes its attributes (_NCProperties); H5Fflush is h5py's
        with _sigint_deferred():
            self._f.flush()
            self._h5.flush()
            self._h5["residual"][:] = self._residual
            self._h5["done"][:] = self._done.astype("u1")
            self._h5.flush()
        self._last_flush = time.monotonic()

    def set_attr(self, key: str, value: Any) -> None:
        self._f.attrs[key] = json.dumps(value) if isinstance(value, (dict, list)) else value

    def finish(self) -> Path:
        """Close and rename into place; refuses when samples are missing."""
        missing = int((~self._done).sum())
        self.close()
        if missing:
            raise DataError(f"{missing} samples of {self.tmp} are not done; rerun with --resume")
        os.replace(self.tmp, self.path)
        return self.path

    def close(self) -> None:
        """Flush and close without finishing (the ``.partial`` file stays for ``--resume``)."""
        if not self._h5.id.valid:  # closed already
            return
        with _sigint_deferred():
            try:
                self.flush()
                self._f.close()
            finally:
                self._h5.close()


@contextlib.contextmanager
def _sigint_deferred():
    """Hold SIGINT (Ctrl-C) and the job signals (SIGTERM, SIGUSR1) off for the block; deliver the
    first that came after it, to the handler that was in place (KeyboardInterrupt for Ctrl-C)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []
    previous = {sig: signal.signal(sig, lambda signum, frame: received.append(signum))
                for sig in (signal.SIGINT, *JOB_SIGNALS)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
    if not received:
        return
    sig = received[0]
    old = previous[sig]
    if old is signal.default_int_handler:
        raise KeyboardInterrupt
    if callable(old):
        old(sig, None)
    elif old == signal.SIG_DFL:
        signal.raise_signal(sig)


def _open(path: Path, mode: str):
    """``(h5py.File, h5netcdf.File)`` on ``path``; the h5py handle is kept for real flushes."""
    import h5netcdf
    import h5py

    h5 = h5py.File(path, mode, track_order=True)  # track_order as h5netcdf sets it (netCDF4 wants it)
    try:
        return h5, h5netcdf.File(h5, mode)
    except BaseException:
        h5.close()
        raise


def _damaged(path: Path, exc: BaseException) -> DataError:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    if isinstance(exc, BlockingIOError) or "unable to lock file" in text:
        return DataError(
            f"{path} is open in another process (another generation still running?); "
            "wait for it or stop it, then resume"
        )
    return DataError(
        f"{path} cannot be reopened ({text}); a hard kill left it damaged: delete it and start again"
    )


def _describe(old: dict, new: dict, keys: list[str]) -> str:
    parts = []
    for k in keys:
        if k == "params":
            a, b = json.loads(old[k] or "{}"), json.loads(new[k] or "{}")
            parts += [f"{p} {a.get(p)!r} there, {b.get(p)!r} now" for p in sorted(set(a) | set(b)) if a.get(p) != b.get(p)]
        else:
            parts.append(f"{k} {old[k]!r} there, {new[k]!r} now")
    return "; ".join(parts)


def _fail(path: Path, what: str) -> DataError:
    return DataError(f"{path}: {what}")


def _first_nonfinite(var, block_bytes: int = 64 * 2**20) -> int | None:
    """Index of the first sample of ``var`` holding NaN/Inf, or None; reads ~64 MB at a time so a
    multi-GB file is checked in bounded memory."""
    if var.dtype.kind != "f":
        return None
    if "sample" not in var.dims:
        return None if np.isfinite(var.values).all() else 0
    n = var.sizes["sample"]
    per_sample = max(1, var.dtype.itemsize * int(np.prod([var.sizes[d] for d in var.dims if d != "sample"])))
    step = max(1, block_bytes // per_sample)
    for start in range(0, n, step):
        block = np.asarray(var.isel(sample=slice(start, start + step)).values)
        finite = np.isfinite(block.reshape(block.shape[0], -1)).all(axis=1)
        if not finite.all():
            return start + int(np.argmin(finite))
    return None


@contextlib.contextmanager
def reading(path: str | Path):
    """Turn the errors h5py raises while reading a damaged file (OSError, RuntimeError: a bad
    chunk offset, a failed checksum, ...) into one :class:`DataError` line naming ``path``."""
    try:
        yield
    except (OSError, RuntimeError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise _fail(Path(path), f"cannot read its data ({first}); the file is damaged, regenerate it") from None


@contextlib.contextmanager
def _quiet_half_open_files():
    """Silence the error of a half-built ``h5netcdf.File`` being collected.

    When a damaged file fails to open part-way, h5netcdf's ``File.__del__`` -> ``close`` runs
    on an object whose ``__init__`` never finished and raises AttributeError, which Python
    prints as "Exception ignored in ..." with a traceback on the user's terminal after our
    one-line error (found by tests/test_fuzz.py). Other unraisable errors pass through.
    """
    previous = sys.unraisablehook

    def hook(unraisable):
        if not (isinstance(unraisable.exc_value, AttributeError)
                and str(getattr(unraisable.object, "__module__", "")).startswith("h5netcdf")):
            previous(unraisable)

    sys.unraisablehook = hook
    try:
        yield
    finally:
        sys.unraisablehook = previous


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
    failure = None
    with _quiet_half_open_files():
        try:
            ds = xr.open_dataset(path, engine="h5netcdf", phony_dims="sort")
        except Exception as exc:  # h5py/h5netcdf raise many types for damaged files
            failure = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        gc.collect()
    if failure is not None:
        raise _fail(path, f"cannot be read as a dataset ({failure}); the file is damaged, regenerate it")
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
    for v in dict.fromkeys(names):
        var = ds[v]
        if not var.dims or var.dims[0] != "sample":
            ds.close()
            raise _fail(path, f"variable {v!r} has dims {tuple(var.dims)}, expected ('sample', ...); the file is damaged "
                              "or not written by sciml, convert it with `sciml import`")
        if var.dtype.kind not in "fiub":
            ds.close()
            raise _fail(path, f"variable {v!r} has dtype {var.dtype}, expected numbers; the file is damaged or not a "
                              "sciml dataset")
    try:
        if "done" in ds and not bool(ds["done"].values.all()):
            n = int((ds["done"].values == 0).sum())
            ds.close()
            raise _fail(path, f"{n} samples are not finished; rerun the generation with --resume")
        if check_finite:
            for v in dict.fromkeys(names):
                bad = _first_nonfinite(ds[v])
                if bad is not None:
                    ds.close()
                    raise _fail(path, f"variable {v!r} contains NaN or Inf values (first in sample {bad}); "
                                      "regenerate or clean the data")
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
