"""neuraloperator ``.pt`` dataset files (the ``neuralop`` library's Zenodo sets and its bundled
examples): a ``torch.save``-d dict of tensors, the input under ``x`` and the output under ``y``.

Layouts, as neuralop's own loaders index them (``neuralop/data/datasets/pt_dataset.py``,
``burgers.py``, ``navier_stokes.py``, ``temporal.py``):

* Darcy (``darcy_train_16.pt`` ...) and Navier-Stokes (``nsforcing_train_128.pt``): ``x``, ``y``
  ``(N, s1, s2)``, samples first, no channel axis (the loader adds it); both NS fields are the
  vorticity (at an earlier and a later time). A singleton channel ``(N, 1, s1, s2)`` (or
  ``(N, s1, s2, 1)``) is dropped.
* Burgers (``burgers_train_16.pt``): ``x`` ``(N, s)`` the initial state, ``y`` ``(N, T, s)`` its
  trajectory: time comes before space.
* Time-dependent NS files exist in both orders: ``(N, s1, s2, T)`` (FNO's ``ns_V1e-3`` and
  neuralop's temporal loader, time last) and ``(N, T, s1, s2)`` (``load_ns_high``, time first).

Which array has a time axis follows from the ranks: when one array has one axis more than the
other, the extra axis is time, first or last as the shapes tell (``--time-axis first|last``
when both fit, e.g. a 16-frame trajectory on a 16-point grid); arrays of the same rank are
taken as fields on the same grid, unless ``--time-axis`` says both carry time (same length).
A single-tensor trajectory file (``--key-in u --key-out u``, or a file holding one tensor and
no ``x``/``y``) is split as PDEBench's Burgers: frame 0 is the input ``u0``, frames ``1..`` the
output ``u``.

The file is read with ``torch.load(weights_only=True, mmap=True)`` only: no pickled object is
ever built (a file holding one is refused) and the tensors are memory-mapped, so blocks of
samples are copied out without reading the whole file. The files hold no coordinates: the grid
is neuralop's ``[0, 1]`` box, as nodes ``linspace(0, 1, s)`` (boundary included) for Darcy and
unknown problems, periodic ``x_j = j/s`` (neuralop's ``GridEmbedding`` grid) for Navier-Stokes
and Burgers; time is the frame index. ``pde`` defaults from the file name (darcy,
navier-stokes, burgers, else unknown).
"""

from __future__ import annotations

import pickle
import re
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ...errors import ConfigError, DataError
from .base import IMPORTERS, Source, check_file, float_dtype, missing_key

_WHAT = "a neuraloperator .pt file (a torch.save-d dict of tensors x, y)"
_HINT = "; name the input and output tensors with --key-in/--key-out"
#: pde -> (input variable, output variable)
_NAMES = {"darcy": ("a", "u"), "navier-stokes": ("u0", "u"), "burgers": ("u0", "u"), "unknown": ("a", "u")}
_PERIODIC = ("navier-stokes", "burgers")
_SPATIAL = ("x", "y", "z")
_TIME_AXES = ("first", "last", "none")
#: the first bytes of torch's pre-1.6 (non-zip) format: a pickled magic number
_LEGACY_MAGIC = b"\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19"


def pde_from_name(name: str) -> str:
    """The pde a neuralop file name suggests: darcy, navier-stokes, burgers or unknown."""
    low = name.lower()
    if "darcy" in low:
        return "darcy"
    if "navier" in low or "nsforcing" in low or re.match(r"ns[_\-.]", low):
        return "navier-stokes"
    return "burgers" if "burgers" in low else "unknown"


def load_tensors(path: Path) -> dict[str, torch.Tensor]:
    """The file's dict of tensors, memory-mapped; never unpickles anything but tensors and
    plain containers (DataError naming the problem otherwise)."""
    check_file(path, _WHAT)
    if not zipfile.is_zipfile(path):
        with open(path, "rb") as fh:
            legacy = fh.read(len(_LEGACY_MAGIC)) == _LEGACY_MAGIC
        if legacy:
            raise DataError(
                f"{path}: written in torch's pre-1.6 format, which cannot be memory-mapped; re-save it once with "
                "torch.save(torch.load(OLD, weights_only=True), NEW) and import NEW"
            )
        raise DataError(f"{path}: not a torch .pt file (a zip archive written by torch.save); expected {_WHAT}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except pickle.UnpicklingError as exc:
        first = str(exc).splitlines()[0] if str(exc) else ""
        raise DataError(
            f"{path}: holds objects other than tensors and plain containers ({first[:120]}); refusing to unpickle "
            "it (it could run code): save the arrays as a plain dict of tensors with torch.save"
        ) from None
    except (RuntimeError, OSError, EOFError, ValueError, KeyError, IndexError, TypeError, AttributeError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DataError(f"{path}: cannot be read as a torch file ({first[:160]}); the file is damaged") from None
    if not isinstance(obj, dict):
        raise DataError(f"{path}: holds a {type(obj).__name__}, not a dict of tensors; expected {_WHAT}")
    tensors = {str(k): v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise DataError(f"{path}: holds no tensors (keys: {', '.join(map(str, obj)) or 'none'}); expected {_WHAT}")
    return tensors


def _squeeze_channel(shape: tuple[int, ...]) -> tuple[tuple[int, ...], int | None]:
    """Shape without a singleton channel axis (after the samples, or last) and that axis."""
    if len(shape) >= 3 and shape[1] == 1:
        return shape[:1] + shape[2:], 1
    if len(shape) >= 3 and shape[-1] == 1:
        return shape[:-1], len(shape) - 1
    return shape, None


def _split_time(shape: tuple[int, ...], where: str) -> tuple[int, tuple[int, ...]]:
    """(frames, spatial shape) of a per-sample shape whose time axis is ``where``."""
    return (shape[0], shape[1:]) if where == "first" else (shape[-1], shape[:-1])


def _time_of_longer(longer: tuple[int, ...], shorter: tuple[int, ...], given: str | None, path: Path) -> str:
    """Where the extra (time) axis of ``longer`` is, so that the rest equals ``shorter``."""
    fits = [w for w in ("first", "last") if _split_time(longer, w)[1] == shorter]
    if given is not None:
        if given not in fits:
            raise DataError(f"{path}: with --time-axis {given} the per-sample shapes {longer} and {shorter} "
                            f"do not share a grid{' (try --time-axis ' + fits[0] + ')' if fits else ''}")
        return given
    if not fits:
        raise DataError(f"{path}: per-sample shapes {longer} and {shorter} share no grid: one should be the other "
                        "with a time axis first or last" + _HINT)
    if len(fits) == 2:
        raise DataError(f"{path}: per-sample shape {longer} may have its time axis first or last; "
                        "say which with --time-axis first or --time-axis last")
    return fits[0]


def _odd_axis(shape: tuple[int, ...], path: Path) -> str:
    """Time axis of a lone trajectory: the axis (first or last) that differs from the grid."""
    fits = [w for w in ("first", "last") if len(set(_split_time(shape, w)[1])) == 1 and len(shape) >= 2]
    if len(shape) >= 3 and len(fits) == 1:
        return fits[0]
    raise DataError(f"{path}: cannot tell the time axis of per-sample shape {shape}; "
                    "say where it is with --time-axis first or --time-axis last")


@IMPORTERS.register("neuralop")
class Neuralop(Source):
    """neuraloperator ``.pt`` dict of tensors (see the module docstring)."""

    options = ("key_in", "key_out", "pde", "time_axis")

    def __init__(self, path: Path, key_in: str | None = None, key_out: str | None = None,
                 pde: str | None = None, time_axis: str | None = None):
        if (key_in is None) != (key_out is None):
            raise ConfigError("name both tensors: --key-in (the input) and --key-out (the output), or neither")
        if time_axis is not None and time_axis not in _TIME_AXES:
            raise ConfigError(f"time_axis must be first, last or none, got {time_axis!r}")
        tensors = load_tensors(path)
        if key_in is None:
            key_in = key_out = None
            if "x" in tensors and "y" in tensors:
                key_in, key_out = "x", "y"
            elif len(tensors) == 1 and not {"x", "y"} & set(tensors):
                key_in = key_out = next(iter(tensors))
            else:
                raise missing_key(path, "x" if "x" not in tensors else "y", list(tensors), _HINT)
        for key in (key_in, key_out):
            if key not in tensors:
                raise missing_key(path, key, list(tensors), _HINT)
        self._tensors = {key_in: tensors[key_in], key_out: tensors[key_out]}
        for key, t in self._tensors.items():
            if t.is_complex() or t.dtype == torch.bool or t.ndim < 2:
                raise DataError(f"{path}: tensor {key!r} is {t.dtype} of shape {tuple(t.shape)}; expected a real "
                                "array with samples first, (N, s), (N, s1, s2) ...")
        self.pde = pde or pde_from_name(path.name)
        if key_in == key_out:
            self._trajectory(path, key_in, time_axis)
        else:
            self._pair(path, key_in, key_out, time_axis)
        self.dtype = float_dtype(*(self._np_dtype(t) for t in self._tensors.values()))
        self.params: dict[str, Any] = {
            "source_shapes": {k: list(t.shape) for k, t in self._tensors.items()},
            "layout": self._layout_note(),
        }

    # ------------------------------------------------------------------ layouts

    def _pair(self, path: Path, key_in: str, key_out: str, time_axis: str | None) -> None:
        t_in, t_out = self._tensors[key_in], self._tensors[key_out]
        if t_in.shape[0] != t_out.shape[0]:
            raise DataError(f"{path}: {key_in!r} has {t_in.shape[0]} samples but {key_out!r} {t_out.shape[0]}; "
                            "expected one input per output")
        (shape_in, ch_in), (shape_out, ch_out) = _squeeze_channel(tuple(t_in.shape)), _squeeze_channel(tuple(t_out.shape))
        a, b = shape_in[1:], shape_out[1:]
        where = {key_in: None, key_out: None}
        if len(a) == len(b):
            if time_axis in ("first", "last"):
                where = {key_in: time_axis, key_out: time_axis}
                (fa, ga), (fb, gb) = _split_time(a, time_axis), _split_time(b, time_axis)
                if ga != gb or fa != fb:
                    raise DataError(f"{path}: with --time-axis {time_axis}, {key_in!r} {a} and {key_out!r} {b} "
                                    "differ in grid or frame count; sciml files have one time axis")
            elif a != b:
                raise DataError(f"{path}: per-sample shapes {key_in!r} {a} and {key_out!r} {b} differ; expected "
                                "the same grid, or one array with an extra time axis (--time-axis first|last)")
        elif abs(len(a) - len(b)) == 1 and time_axis != "none":
            longer = key_in if len(a) > len(b) else key_out
            where[longer] = _time_of_longer(*((a, b) if longer == key_in else (b, a)), time_axis, path)
        else:
            raise DataError(f"{path}: per-sample shapes {key_in!r} {a} and {key_out!r} {b} share no grid" + _HINT)
        name_in, name_out = _NAMES.get(self.pde, _NAMES["unknown"])
        if where[key_in] is None and where[key_out] is not None:
            name_in = "u0"  # an initial state mapped to its trajectory
        self._plan = {name_in: (key_in, ch_in, where[key_in], None), name_out: (key_out, ch_out, where[key_out], None)}
        self._describe(path, {name_in: shape_in[1:], name_out: shape_out[1:]}, (name_in,), (name_out,))

    def _trajectory(self, path: Path, key: str, time_axis: str | None) -> None:
        shape, ch = _squeeze_channel(tuple(self._tensors[key].shape))
        per = shape[1:]
        if time_axis == "none":
            raise DataError(f"{path}: --key-in and --key-out both name {key!r}: a trajectory, which needs a time axis")
        where = time_axis or _odd_axis(per, path)
        frames, grid = _split_time(per, where)
        if frames < 2 or not grid:
            raise DataError(f"{path}: {key!r} has per-sample shape {per}: {frames} frame(s) on grid {grid}; "
                            "a trajectory needs at least 2 frames and a spatial axis")
        self._plan = {"u0": (key, ch, where, 0), "u": (key, ch, where, slice(1, None))}
        self._describe(path, {"u0": per, "u": per}, ("u0",), ("u",))

    def _describe(self, path: Path, shapes: dict[str, tuple[int, ...]], inputs: tuple[str, ...],
                  outputs: tuple[str, ...]) -> None:
        grid: tuple[int, ...] | None = None
        frames: int | None = None
        variables: dict[str, tuple[str, ...]] = {}
        for name, per in shapes.items():
            _, _, where, pick = self._plan[name]
            n_t, g = _split_time(per, where) if where else (None, per)
            if pick == 0:
                n_t = None
            elif isinstance(pick, slice):
                n_t = len(range(*pick.indices(n_t)))
            grid = g if grid is None else grid
            if g != grid:
                raise DataError(f"{path}: grids {grid} and {g} differ" + _HINT)
            if not 1 <= len(g) <= 3:
                raise DataError(f"{path}: a grid of {len(g)} axes {g}; expected 1 to 3 spatial axes" + _HINT)
            if n_t is not None:
                frames = n_t
            variables[name] = (("t",) if n_t is not None else ()) + _SPATIAL[:len(g)]
        assert grid is not None
        periodic = self.pde in _PERIODIC
        self.coords: dict[str, np.ndarray] = {}
        if frames is not None:
            first = 1 if any(isinstance(p[3], slice) for p in self._plan.values()) else 0
            self.coords["t"] = np.arange(first, first + frames, dtype=np.float64)
        for d, s in zip(_SPATIAL, grid):
            self.coords[d] = np.arange(s) / s if periodic else np.linspace(0.0, 1.0, s)
        self.variables = variables
        self.inputs, self.outputs = inputs, outputs
        self.keys = {name: self._source_name(name) for name in variables}
        self.n = int(next(iter(self._tensors.values())).shape[0])
        space = ("periodic nodes x_j = j/s on [0, 1) (neuralop's grid embedding)" if periodic
                 else "nodes x_i = i/(s - 1) on [0, 1], boundary included")
        self.grid = space + ("; t is the frame index (the file stores no times)" if frames is not None else "")

    def _source_name(self, name: str) -> str:
        key, ch, where, pick = self._plan[name]
        text = key if ch is None else f"{key} without its singleton axis {ch}"
        if pick is not None:
            frame = "0" if pick == 0 else "1:"
            text += f", frame {frame} of its {where} axis"
        elif where:
            text += f", time axis {where}"
        return text

    def _layout_note(self) -> str:
        return "; ".join(f"{name} <- {self.keys[name]}" for name in self.variables)

    @staticmethod
    def _np_dtype(t: torch.Tensor) -> np.dtype:
        if t.dtype in (torch.bfloat16, torch.float16):
            return np.dtype(np.float32)
        return torch.empty(0, dtype=t.dtype).numpy().dtype

    # ------------------------------------------------------------------ reading

    def read(self, start: int, stop: int) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {}
        for name, (key, ch, where, pick) in self._plan.items():
            block = self._tensors[key][start:stop]
            if ch is not None:
                block = block.squeeze(ch)
            if where == "last":
                block = block.movedim(-1, 1)  # sciml order: (sample, t, *space)
            if pick is not None:
                block = block[:, pick]
            if block.dtype in (torch.bfloat16, torch.float16):
                block = block.float()
            out[name] = np.ascontiguousarray(block.numpy())
        return out

    def close(self) -> None:
        self._tensors = {}
