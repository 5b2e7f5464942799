"""PDEBench HDF5 files (Takamoto et al. 2022): 2-D Darcy flow and 1-D Burgers.

* Darcy (``2D_DarcyFlow_beta*_Train.hdf5``): ``nu`` ``(N, s, s)`` (coefficient), ``tensor``
  ``(N, 1, s, s)`` (steady solution; the singleton axis is time), ``x-coordinate``,
  ``y-coordinate`` (cell centres), attribute ``beta`` (the constant forcing) ->
  pde ``darcy-pdebench``: ``nu -> u`` on ``(sample, x, y)``.
* Burgers (``1D_Burgers_Sols_Nu*.hdf5``): ``tensor`` ``(N, T, s)`` trajectories on
  ``(sample, t, x)``, ``x-coordinate`` ``(s,)``, ``t-coordinate`` with ``T + 1`` entries
  (one more than the frames: a known quirk; the first ``T`` belong to the frames),
  attribute ``Nu`` (the viscosity is ``Nu / pi``) -> pde ``burgers-pdebench``.
  The trajectory is split into the initial state ``u0`` on ``(sample, x)`` (frame 0, the
  input) and the later frames ``u`` on ``(sample, t, x)`` at ``t_1 .. t_{T-1}`` (the
  output), so the stored task is ``u0 -> u(t)`` and a frame-to-frame task is
  ``concat(u0, u)`` shifted by one. Nothing is duplicated and ``u0`` is never an output.

PDEBench arrays are C-ordered with ``x`` before ``y`` (no axis reversal). Data stay float32.
Other 1-D PDEBench trajectory files (advection, reaction-diffusion) have the same layout;
they import when ``pde`` names them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ...errors import DataError
from .base import IMPORTERS, Source, check_subsample, float_dtype, missing_key, open_hdf5, plain_attrs

_WHAT = "a PDEBench HDF5 file (2-D Darcy flow or 1-D Burgers)"
_HINT = "; expected a PDEBench 2-D Darcy (nu, tensor) or 1-D Burgers (tensor, t-coordinate) file"


def _coordinate(f, key: str, size: int, path: Path, stride: int) -> np.ndarray:
    if key not in f:
        raise missing_key(path, key, list(f.keys()), _HINT)
    values = np.asarray(f[key][...], dtype=np.float64).reshape(-1)
    if values.size != size:
        raise DataError(f"{path}: {key!r} has {values.size} entries but the data have {size} points along it")
    return values[::stride]


@IMPORTERS.register("pdebench")
class PdeBench(Source):
    """PDEBench 2-D Darcy or 1-D Burgers file (see the module docstring)."""

    options = ("pde", "subsample")

    def __init__(self, path: Path, pde: str | None = None, subsample: int = 1):
        self._stride = check_subsample(subsample)
        self._f = f = open_hdf5(path, _WHAT, "")
        try:
            if "tensor" not in f:
                raise missing_key(path, "tensor", list(f.keys()), _HINT)
            self._tensor = f["tensor"]
            if "nu" in f and self._tensor.ndim == 4:
                self._darcy(path, pde)
            elif self._tensor.ndim == 3:
                self._burgers(path, pde)
            else:
                raise DataError(f"{path}: 'tensor' has shape {self._tensor.shape}{_HINT} with tensor "
                                "(N, 1, s, s) next to nu (N, s, s), or tensor (N, T, s)")
            attrs = plain_attrs(f.attrs)
            self.n = int(self._tensor.shape[0])
            self.params: dict[str, Any] = {"attrs": attrs, "source_shape": list(self._tensor.shape),
                                           "subsample": self._stride, **self.params}
        except BaseException:
            f.close()
            raise

    def _darcy(self, path: Path, pde: str | None) -> None:
        nu, tensor, r = self._f["nu"], self._tensor, self._stride
        n, frames, s1, s2 = tensor.shape
        if frames != 1 or nu.shape != (n, s1, s2):
            raise DataError(f"{path}: nu has shape {nu.shape} and tensor {tensor.shape}; expected "
                            "nu (N, s1, s2) and tensor (N, 1, s1, s2)")
        self.coords = {"x": _coordinate(self._f, "x-coordinate", s1, path, r),
                       "y": _coordinate(self._f, "y-coordinate", s2, path, r)}
        self.pde = pde or "darcy-pdebench"
        self.inputs, self.outputs = ("nu",), ("u",)
        self.variables = {"nu": ("x", "y"), "u": ("x", "y")}
        self.keys = {"nu": "nu", "u": "tensor[:, 0]"}
        self.grid = "cell centres x_i = (i + 1/2)/s from x-coordinate/y-coordinate; no boundary points"
        self.params = {}
        self.dtype = float_dtype(nu.dtype, tensor.dtype)

    def _burgers(self, path: Path, pde: str | None) -> None:
        attrs = plain_attrs(self._f.attrs)
        if pde is None and set(attrs) != {"Nu"}:
            raise DataError(f"{path}: a 1-D trajectory file with attributes {sorted(attrs)}, not Burgers' "
                            "['Nu']; name its PDE with --pde (e.g. --pde advection-pdebench)")
        n, frames, s = self._tensor.shape
        if frames < 2:
            raise DataError(f"{path}: 'tensor' has {frames} frame(s); a trajectory needs at least 2")
        if "t-coordinate" not in self._f:
            raise missing_key(path, "t-coordinate", list(self._f.keys()), _HINT)
        t = np.asarray(self._f["t-coordinate"][...], dtype=np.float64).reshape(-1)
        if t.size < frames:
            raise DataError(f"{path}: 't-coordinate' has {t.size} entries for {frames} frames; expected "
                            f"{frames + 1} (PDEBench) or {frames}")
        self.coords = {"t": t[1:frames], "x": _coordinate(self._f, "x-coordinate", s, path, self._stride)}
        self.pde = pde or "burgers-pdebench"
        self.inputs, self.outputs = ("u0",), ("u",)
        self.variables = {"u0": ("x",), "u": ("t", "x")}
        self.keys = {"u0": "tensor[:, 0]", "u": "tensor[:, 1:]"}
        self.grid = ("cell centres x_i = (i + 1/2)/s from x-coordinate, periodic; t from t-coordinate "
                     "(its first T entries for the T frames)")
        self.dtype = float_dtype(self._tensor.dtype)
        self.params = {"t0": float(t[0]), "task": "u0 = u(t0) -> u(t_1 .. t_{T-1}); concat(u0, u) is "
                       "the trajectory for frame-to-frame training"}

    def read(self, start: int, stop: int) -> dict[str, np.ndarray]:
        r = self._stride
        if "nu" in self.variables:
            return {"nu": self._f["nu"][start:stop, ::r, ::r], "u": self._tensor[start:stop, 0, ::r, ::r]}
        block = self._tensor[start:stop, :, ::r]
        return {"u0": block[:, 0], "u": block[:, 1:]}

    def close(self) -> None:
        self._f.close()
