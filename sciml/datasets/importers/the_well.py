"""The Well's HDF5 files (Ohana et al. 2024, PolymathicAI/the_well), one file of trajectories.

Layout, from The Well's ``docs/data_format.md`` and its reader (``the_well/data/datasets.py``):

* root attributes ``dataset_name``, ``grid_type``, ``n_spatial_dims``, ``n_trajectories`` and
  ``simulation_parameters`` (names of root attributes holding the parameters);
* ``dimensions/``: ``time`` ``(T,)`` (``(B, T)`` when ``sample_varying``) and one coordinate
  array per name in its ``spatial_dims`` attribute;
* ``boundary_conditions/<name>``: ``bc_type``, ``associated_dims``, a ``mask`` and ``values``;
* ``scalars/``: ``field_names`` and one dataset per scalar (``sample_varying``, ``time_varying``);
* ``t0_fields/``, ``t1_fields/``, ``t2_fields/``: ``field_names`` and one dataset per field,
  ``[B,] [T,] n1, n2[, n3] [, D [, D]]``: the sample axis only when ``sample_varying``, the time
  axis only when ``time_varying``, spatial axis ``i`` paired with ``spatial_dims[i]`` (The
  reader's ``_pad_axes``; the docs' ``H x W`` naming aside) and of length 1 where
  ``dim_varying[i]`` is false; vectors (t1) end with ``D = n_spatial_dims`` components,
  tensors (t2) with ``D x D`` (a flat ``D*D`` axis is accepted too).

Imported as: a sample per trajectory; coordinates from ``dimensions/`` (spatial axes renamed
``x, y, z`` in order; the source names are kept in ``params``); every field a variable on
``(sample, [t,] x, y[, z][, component])`` with ``component`` of length ``D``: a t1 field as it
is, a t2 field split into its rows ``F_x, F_y ...`` (``F_x[..., j] = F[..., x, j]``; one
``component`` axis serves vectors and tensors alike). A time-varying field ``F`` gives the input
``F0`` (the first frame of the window, no ``t`` axis) and the output ``F`` (the later frames,
``t`` from ``dimensions/time``), the task "initial state -> trajectory" of the PDEBench Burgers
import; fields constant in time are inputs. Fields constant over samples are repeated in every
sample. Constant scalars and the simulation parameters go into ``params``; scalars that vary
are listed there as not imported. ``fields`` picks fields by name, ``time = "START:STOP"``
a window of frames (Python slice bounds, before the split).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ...errors import ConfigError, DataError
from .base import IMPORTERS, Source, float_dtype, open_hdf5, plain_attrs

_WHAT = "a file of The Well (HDF5 with dimensions/, t0_fields/, t1_fields/, t2_fields/)"
_SPATIAL = ("x", "y", "z")
_GROUPS = ("t0_fields", "t1_fields", "t2_fields")


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _names(attrs, key: str) -> list[str]:
    value = attrs.get(key, [])
    if isinstance(value, (str, bytes)):
        return [_text(value)]
    return [_text(v) for v in np.asarray(value).reshape(-1)]


def _flag(attrs, key: str, default: bool = False) -> bool:
    value = attrs.get(key, default)
    return bool(np.asarray(value).reshape(-1)[0]) if np.asarray(value).size else default


def parse_window(time: str | None) -> slice:
    """``"START:STOP"`` (either may be empty) as a slice; ConfigError otherwise."""
    if time is None:
        return slice(None)
    parts = str(time).split(":")
    try:
        if len(parts) != 2:
            raise ValueError
        start, stop = (int(p) if p.strip() else None for p in parts)
    except ValueError:
        raise ConfigError(f"time must be START:STOP (frame indices, either may be empty, e.g. 0:20), got {time!r}") from None
    return slice(start, stop)


def _same_rows(values: np.ndarray, what: str, path: Path) -> np.ndarray:
    """The one row of a sample-varying coordinate array; DataError when samples differ."""
    if not np.array_equal(values, np.broadcast_to(values[:1], values.shape), equal_nan=True):
        raise DataError(f"{path}: {what} differs between trajectories; a sciml file has one grid, "
                        "import the trajectories of each grid separately (--n)")
    return values[0]


class _Field:
    """One field of the file: where its axes are and how it becomes sciml variables."""

    def __init__(self, dset, order: int, name: str, n_dims: int, sizes: tuple[int, ...], path: Path):
        self.dset, self.order, self.name = dset, order, name
        attrs = dset.attrs
        self.per_sample = _flag(attrs, "sample_varying", True)
        self.in_time = _flag(attrs, "time_varying", True)
        varying = attrs.get("dim_varying", [True] * n_dims)
        self.dim_varying = [bool(v) for v in np.asarray(varying).reshape(-1)][:n_dims]
        lead = int(self.per_sample) + int(self.in_time)
        shape = tuple(dset.shape)
        tail = shape[lead + n_dims:] if len(shape) >= lead + n_dims else ()
        spatial = shape[lead:lead + n_dims]
        want_tail = {0: [()], 1: [(n_dims,)], 2: [(n_dims, n_dims), (n_dims * n_dims,)]}[order]
        missing = [i for i, v in enumerate(self.dim_varying) if not v]
        self.insert: list[int] = []
        ok_spatial = len(spatial) == n_dims and all(s == sizes[i] or (s == 1 and not self.dim_varying[i])
                                                    for i, s in enumerate(spatial))
        if not (ok_spatial and tail in want_tail):
            # the docs also show non-varying spatial axes left out altogether: (B, T, n1) for [True, False]
            short = shape[lead:]
            kept = n_dims - len(missing)
            if missing and short[:kept] == tuple(sizes[i] for i in range(n_dims) if i not in missing) \
                    and short[kept:] in want_tail:
                self.insert, tail, ok_spatial = missing, short[kept:], True
        if not ok_spatial or tail not in want_tail:
            raise DataError(f"{path}: field {name!r} ({_GROUPS[order]}) has shape {shape}; expected "
                            f"{'[B, ]' if self.per_sample else ''}{'[T, ]' if self.in_time else ''}"
                            f"{' x '.join(map(str, sizes))}{' x D' * order} for its sample_varying/time_varying/"
                            "dim_varying attributes")
        self.tail = tail

    def variables(self, dims: tuple[str, ...]) -> dict[str, tuple[tuple[str, ...], str]]:
        """sciml variables of this field: name -> (dims after ``sample``, where it comes from)."""
        comp = ("component",) if self.order else ()
        src = f"{_GROUPS[self.order]}/{self.name}"
        rows = {f"{self.name}_{d}": f"{src}[..., {d}, :]" for d in dims} if self.order == 2 else {self.name: src}
        out: dict[str, tuple[tuple[str, ...], str]] = {}
        for row, where in rows.items():
            if self.in_time:
                out[f"{row}0"] = ((*dims, *comp), f"{where}, first frame of the window")
                out[row] = (("t", *dims, *comp), f"{where}, later frames of the window")
            else:
                out[row] = ((*dims, *comp), where)
        return out

    def read(self, start: int, stop: int, window: slice, sizes: tuple[int, ...]) -> np.ndarray:
        """``(stop - start, [T,] *sizes, [D[, D]])``: samples ``start..stop-1``, the time window applied."""
        index: tuple[Any, ...] = ()
        if self.per_sample:
            index += (slice(start, stop),)
        if self.in_time:
            index += (window,)
        values = np.asarray(self.dset[index])
        if not self.per_sample:
            values = np.broadcast_to(values[None], (stop - start, *values.shape))
        lead = 1 + int(self.in_time)
        for i in self.insert:
            values = np.expand_dims(values, lead + i)
        n = len(sizes)
        if self.order == 2 and len(self.tail) == 1:
            values = values.reshape(*values.shape[:-1], n, n)
        full = (*values.shape[:lead], *sizes, *values.shape[lead + n:])
        return np.broadcast_to(values, full)


@IMPORTERS.register("the-well")
class TheWell(Source):
    """One HDF5 file of The Well (see the module docstring)."""

    options = ("pde", "fields", "time")

    def __init__(self, path: Path, pde: str | None = None, fields: str | None = None, time: str | None = None):
        window = parse_window(time)
        self._f = f = open_hdf5(path, _WHAT, "")
        try:
            self._open(path, pde, fields, window)
        except (OSError, RuntimeError, KeyError, ValueError) as exc:  # h5py's errors for a damaged file
            f.close()
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise DataError(f"{path}: cannot read its structure ({first.strip(chr(39))[:160]}); the file is damaged") from None
        except BaseException:
            f.close()
            raise

    def _open(self, path: Path, pde: str | None, fields: str | None, window: slice) -> None:
        f = self._f
        absent = [g for g in ("dimensions", *_GROUPS) if g not in f]
        if absent:
            listed = ", ".join(sorted(f.keys())) or "none"
            raise DataError(f"{path}: no group {absent[0]}/; the file holds: {listed}; expected {_WHAT}")
        attrs = plain_attrs(f.attrs)
        dims_group = f["dimensions"]
        src_dims = _names(dims_group.attrs, "spatial_dims")
        n_dims = int(attrs.get("n_spatial_dims", len(src_dims)))
        if not 1 <= n_dims <= 3 or len(src_dims) != n_dims or any(d not in dims_group for d in src_dims):
            raise DataError(f"{path}: dimensions/ names spatial_dims {src_dims} for n_spatial_dims={n_dims}; "
                            f"expected 1 to 3 names, each a coordinate array in dimensions/")
        coords: dict[str, np.ndarray] = {}
        for name, src in zip(_SPATIAL, src_dims):
            coords[name] = self._coordinate(path, dims_group[src], f"dimensions/{src}")
        sizes = tuple(len(c) for c in coords.values())
        dims = _SPATIAL[:n_dims]

        found = {name: (order, f[group][name]) for order, group in enumerate(_GROUPS)
                 for name in _names(f[group].attrs, "field_names") or list(f[group].keys())}
        chosen = self._choose(path, found, fields)
        self._fields = [_Field(found[name][1], found[name][0], name, n_dims, sizes, path) for name in chosen]
        if not any(fld.in_time for fld in self._fields):
            raise DataError(f"{path}: the chosen fields {', '.join(chosen)} are all constant in time; "
                            "pick at least one time-varying field with --fields (nothing to predict otherwise)")
        self.n = self._count(path, attrs)

        if "time" not in dims_group:
            raise DataError(f"{path}: no dimensions/time; expected {_WHAT}")
        times = self._coordinate(path, dims_group["time"], "dimensions/time")
        frames = {fld.dset.shape[int(fld.per_sample)] for fld in self._fields if fld.in_time}
        if frames != {len(times)}:
            raise DataError(f"{path}: dimensions/time has {len(times)} entries but the fields have "
                            f"{sorted(frames)} frames")
        kept = np.arange(len(times))[window]
        if len(kept) < 2:
            bounds = ":".join("" if b is None else str(b) for b in (window.start, window.stop))
            raise DataError(f"{path}: --time {bounds} keeps {len(kept)} of {len(times)} frames; "
                            "keep at least 2 (the first is the input, the rest the output)")
        self._window = slice(int(kept[0]), int(kept[-1]) + 1)
        self.coords = {"t": times[self._window][1:], **coords}

        variables: dict[str, tuple[str, ...]] = {}
        self.keys = {}
        for fld in self._fields:
            for name, (vdims, source) in fld.variables(dims).items():
                if name in variables or name in self.coords or name in ("component", "sample", "done", "residual"):
                    raise DataError(f"{path}: field {fld.name!r} would be stored as {name!r}, a name already taken; "
                                    "leave it out with --fields")
                variables[name] = vdims
                self.keys[name] = source
        if any(fld.order for fld in self._fields):
            self.coords["component"] = np.arange(n_dims, dtype=np.float64)
        self.variables = variables
        self.outputs = tuple(v for v, d in variables.items() if "t" in d)
        self.inputs = tuple(v for v in variables if v not in self.outputs)
        self.pde = pde or str(attrs.get("dataset_name", "unknown"))
        self.dtype = float_dtype(*(fld.dset.dtype for fld in self._fields))
        bcs = {name: plain_attrs(group.attrs) for name, group in f.get("boundary_conditions", {}).items()}
        bc_text = ", ".join(f"{name} {a.get('bc_type', '?')} on {a.get('associated_dims', '?')}"
                            for name, a in bcs.items()) or "none recorded"
        self.grid = (f"{attrs.get('grid_type', 'cartesian')} nodes from dimensions/ ({', '.join(src_dims)} stored as "
                     f"{', '.join(dims)}); boundary conditions: {bc_text}; t from dimensions/time")
        scalars, varying = self._scalars(path)
        sim = {name: attrs.get(name) for name in _names(f.attrs, "simulation_parameters")}
        self.params: dict[str, Any] = {
            "dataset_name": attrs.get("dataset_name"), "attrs": attrs, "spatial_dims": src_dims,
            "simulation_parameters": sim, "scalars": scalars, "scalars_not_imported": varying,
            "boundary_conditions": bcs, "fields": {fld.name: _GROUPS[fld.order] for fld in self._fields},
            "time_window": [self._window.start, self._window.stop], "t0": float(times[self._window][0]),
            "components": list(dims), "task": "F0 = F(t0) -> F(t_1 .. ) for each time-varying field F; "
            "fields constant in time are inputs",
        }

    def _coordinate(self, path: Path, dset, what: str) -> np.ndarray:
        values = np.asarray(dset[...], dtype=np.float64)
        if _flag(dset.attrs, "sample_varying") and values.ndim == 2:
            values = _same_rows(values, what, path)
        if values.ndim != 1 or values.size == 0:
            raise DataError(f"{path}: {what} has shape {values.shape}; expected a 1-D array of coordinates")
        return values

    def _choose(self, path: Path, found: dict[str, tuple[int, Any]], fields: str | None) -> list[str]:
        if not found:
            raise DataError(f"{path}: t0_fields/, t1_fields/ and t2_fields/ hold no field; expected {_WHAT}")
        if fields is None:
            return list(found)
        chosen = [name.strip() for name in str(fields).split(",") if name.strip()]
        unknown = [name for name in chosen if name not in found]
        if unknown or not chosen:
            raise ConfigError(f"--fields names {', '.join(unknown) or 'nothing'}, not a field of {path.name}; "
                              f"its fields are: {', '.join(found)}")
        return list(dict.fromkeys(chosen))

    def _count(self, path: Path, attrs: dict[str, Any]) -> int:
        counts = {int(fld.dset.shape[0]) for fld in self._fields if fld.per_sample}
        if "n_trajectories" in attrs:
            counts.add(int(attrs["n_trajectories"]))
        if len(counts) != 1:
            raise DataError(f"{path}: the trajectory counts disagree (n_trajectories and the fields' first axes: "
                            f"{sorted(counts)})" if counts else f"{path}: no field varies over samples and the "
                            "file has no n_trajectories attribute; cannot tell how many trajectories it holds")
        return counts.pop()

    def _scalars(self, path: Path) -> tuple[dict[str, Any], list[str]]:
        if "scalars" not in self._f:
            return {}, []
        group = self._f["scalars"]
        constant: dict[str, Any] = {}
        varying: list[str] = []
        for name in _names(group.attrs, "field_names") or list(group.keys()):
            if name not in group:
                continue
            dset = group[name]
            if _flag(dset.attrs, "sample_varying") or _flag(dset.attrs, "time_varying"):
                varying.append(name)
                continue
            value = np.asarray(dset[...])
            constant[name] = value.item() if value.size == 1 else value.tolist()
        return constant, varying

    def read(self, start: int, stop: int) -> dict[str, np.ndarray]:
        sizes = tuple(len(self.coords[d]) for d in _SPATIAL if d in self.coords)
        dims = _SPATIAL[:len(sizes)]
        out: dict[str, np.ndarray] = {}
        for fld in self._fields:
            values = fld.read(start, stop, self._window, sizes)
            parts = {fld.name: values} if fld.order < 2 else \
                {f"{fld.name}_{d}": values[..., i, :] for i, d in enumerate(dims)}
            for name, part in parts.items():
                if fld.in_time:
                    out[f"{name}0"] = np.ascontiguousarray(part[:, 0])
                    out[name] = np.ascontiguousarray(part[:, 1:])
                else:
                    out[name] = np.ascontiguousarray(part)
        return out

    def close(self) -> None:
        self._f.close()
