"""Stream a foreign file into a sciml dataset file, checking every sample on the way."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import numpy as np

from ... import runtime
from ...errors import ConfigError, DataError
from .base import IMPORTERS, Source

#: bytes of source data read at a time (files may be many GB)
_BLOCK_BYTES = 32 * 2**20


def _check_paths(path: Path, out: Path, overwrite: bool) -> None:
    if out.is_dir():
        raise ConfigError(f"--out {str(out)!r} is a directory; give a file name such as {str(out / 'data.h5')!r}")
    if out.exists() and path.exists() and out.resolve() == path.resolve():
        raise ConfigError(f"--out {str(out)!r} is the source file itself; choose another output name")
    if out.exists() and not overwrite:
        raise DataError(f"{out} exists; choose another --out or pass --overwrite")


def _check_options(cls: type[Source], options: Mapping[str, Any]) -> dict[str, Any]:
    given = {k: v for k, v in options.items() if v is not None}
    unknown = sorted(set(given) - set(cls.options))
    if unknown:
        named = ", ".join(f"{k} (--{k.replace('_', '-')})" for k in unknown)
        valid = f"its options are: {', '.join(cls.options)}" if cls.options else "it takes none"
        raise ConfigError(f"format {cls.name!r} takes no option {named}; {valid}")
    return given


def _count(n: int | None, available: int, path: Path) -> int:
    if n is None:
        return available
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or not 1 <= n <= available:
        raise ConfigError(f"n must be an integer from 1 to {available} (the samples in {path.name}), got {n!r}")
    return int(n)


def _check_finite(arrays: Mapping[str, np.ndarray], start: int, src: Source, path: Path) -> None:
    for name, values in arrays.items():
        ok = np.isfinite(values).reshape(len(values), -1).all(axis=1)
        if not ok.all():
            i = start + int(np.flatnonzero(~ok)[0])
            raise DataError(
                f"{path}: sample {i} of {name!r} (from {src.keys.get(name, name)}) contains NaN or Inf; "
                "clean the source or pass --allow-nonfinite to import it as it is"
            )


def _storage_dtype(dtype: str | None, src: Source) -> str:
    if dtype is None:
        return src.dtype.name
    if dtype not in ("float32", "float64"):
        raise ConfigError(f"dtype must be float32 or float64 (or left out to keep the source's), got {dtype!r}")
    return dtype


def _stream(src: Source, writer, count: int, allow_nonfinite: bool, path: Path, progress: bool) -> np.ndarray:
    """Copy samples ``0..count-1`` block by block; returns the per-sample residuals."""
    step = max(1, _BLOCK_BYTES // src.sample_bytes())
    residuals = np.full(count, np.nan)
    with runtime.progress(count, f"import {path.name}", enabled=progress and count > 1) as advance:
        for start in range(0, count, step):
            stop = min(start + step, count)
            arrays = src.read(start, stop)
            if not allow_nonfinite:
                _check_finite(arrays, start, src, path)
            block = src.residuals(arrays)
            if block is not None:
                residuals[start:stop] = block
            for i in range(start, stop):
                writer.write(i, residual=residuals[i], **{k: v[i - start] for k, v in arrays.items()})
            advance(stop - start)
    return residuals


def convert(
    fmt: str,
    path: str | Path,
    out: str | Path,
    *,
    n: int | None = None,
    dtype: str | None = None,
    allow_nonfinite: bool = False,
    overwrite: bool = False,
    progress: bool = False,
    **options: Any,
) -> Path:
    """Convert the file ``path`` of format ``fmt`` into the sciml dataset file ``out``.

    Parameters
    ----------
    fmt : ``fno-mat``, ``pdebench``, ``condiff``, ``neuralop`` or ``the-well`` (see :func:`available`).
    path : the source file.
    out : the dataset file to write (written as ``out.partial``, renamed when complete).
    n : import only the first ``n`` samples (default all).
    dtype : ``float32`` or ``float64``; default keeps the source's precision.
    allow_nonfinite : import samples with NaN/Inf instead of refusing them.
    overwrite : replace an existing ``out``.
    progress : show a progress bar on stderr.
    options : format options (``key_in``, ``key_out``, ``pde``, ``subsample`` for ``fno-mat``;
        ``pde``, ``subsample`` for ``pdebench``; ``key_in``, ``key_out``, ``pde``, ``time_axis`` for
        ``neuralop``; ``pde``, ``fields``, ``time`` for ``the-well``); ``None`` values are ignored.

    Returns
    -------
    Path of the finished file. Its ``seed`` attribute is -1 (imported, not generated) and
    ``params`` records the source file name, format and keys.
    """
    from ..format import DatasetWriter, open_dataset, partial_path

    cls = IMPORTERS.get(fmt)
    path, out = Path(path), Path(out)
    given = _check_options(cls, options)
    _check_paths(path, out, overwrite)
    with cls(path, **given) as src:
        count = _count(n, src.n, path)
        params = {"source": path.name, "format": fmt, "keys": src.keys, "n_source": src.n, **src.params}
        attrs = {"pde": src.pde, "inputs": " ".join(src.inputs), "outputs": " ".join(src.outputs),
                 "params": params, "seed": -1, "grid": src.grid}
        writer = DatasetWriter(out, count, src.coords, src.variables, attrs, dtype=_storage_dtype(dtype, src))
        try:
            try:
                residuals = _stream(src, writer, count, allow_nonfinite, path, progress)
            except (OSError, ValueError, RuntimeError) as exc:  # a damaged or truncated source, met mid-way
                first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                raise DataError(f"{path}: cannot read its data ({first}); the file is damaged or truncated") from None
            solver = src.solver()
            if np.isfinite(residuals).any():
                solver["max_residual"] = float(np.nanmax(residuals))
            writer.set_attr("solver", solver)
        except BaseException:
            # an import has no resume: drop the partial file rather than leave debris
            writer.close()
            partial_path(out).unlink(missing_ok=True)
            raise
    done = writer.finish()
    # structure only: the data were checked sample by sample above, and reading whole
    # variables here would need the file's size in memory
    open_dataset(done, check_finite=False).close()
    return done
