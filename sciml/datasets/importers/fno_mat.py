"""FNO ``.mat`` files (Li et al. 2021, arXiv 2010.08895): Darcy ``piececonst_*`` and Burgers
``burgers_data_R10``, MATLAB v5 or v7.3.

* Darcy: keys ``coeff`` (a) and ``sol`` (u), ``(N, s, s)`` -> pde ``darcy``, ``a, u`` on
  ``(sample, x, y)`` with ``x = y = linspace(0, 1, s)``. The source solver returns its
  solution at cell centres ``(i + 1/2)/s``; the FNO training scripts attach the node grid
  ``linspace(0, 1, s)`` nevertheless, and so does this importer (the ``grid`` attribute says
  so). MATLAB's second axis is ``x`` as in the FNO scripts (``gridx`` runs along axis 1).
* Burgers: keys ``a`` (u0) and ``u`` (u(., 1)), ``(N, s)`` -> pde ``burgers``, ``u0, u`` on
  ``(sample, x)``, periodic grid ``x_j = j / s`` (the duplicate point x = 1 is not stored).

Other keys may be named (``key_in``, ``key_out``); the layout then follows the rank
(``(N, s1, s2)`` as Darcy, ``(N, s)`` as Burgers) and ``pde`` renames the problem.
``subsample`` strides the spatial axes as the FNO scripts do (``x[:, ::r, ::r]``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ...errors import ConfigError, DataError
from .base import IMPORTERS, Source, check_subsample, float_dtype, missing_key
from .matfile import open_mat

#: layout -> (input key, output key, input variable, output variable)
_LAYOUTS = {"darcy": ("coeff", "sol", "a", "u"), "burgers": ("a", "u", "u0", "u")}
_HINT = "; name the input and output arrays with --key-in/--key-out"
_GRIDS = {
    "darcy": "cell-centre values of the source ((i + 1/2)/s) stored as nodes x_i = i/(s - 1), "
             "boundary included, as the FNO scripts treat them (boundary values are small, not 0)",
    "burgers": "node, periodic: x_j = j/s, j = 0..s-1 (x = 1 repeats x = 0 and is not stored)",
}


def _detect(keys: list[str], path: Path) -> str:
    """The layout whose two keys are in the file."""
    found = [name for name, (k_in, k_out, _, _) in _LAYOUTS.items() if k_in in keys and k_out in keys]
    if not found:
        listed = ", ".join(sorted(keys)) or "none"
        raise DataError(f"{path}: holds {listed}; expected coeff and sol (Darcy) or a and u (Burgers){_HINT}")
    if len(found) > 1:
        raise DataError(f"{path}: holds both coeff+sol (Darcy) and a+u (Burgers){_HINT}")
    return found[0]


@IMPORTERS.register("fno-mat")
class FnoMat(Source):
    """FNO Darcy or Burgers ``.mat`` file, v5 or v7.3 (see the module docstring)."""

    options = ("key_in", "key_out", "pde", "subsample")

    def __init__(self, path: Path, key_in: str | None = None, key_out: str | None = None,
                 pde: str | None = None, subsample: int = 1):
        self._stride = check_subsample(subsample)
        if (key_in is None) != (key_out is None):
            raise ConfigError("name both arrays: --key-in (the input) and --key-out (the output), or neither")
        self._mat = mat = open_mat(path)
        try:
            layout = _detect(mat.keys(), path) if key_in is None else None
            if layout is not None:
                key_in, key_out = _LAYOUTS[layout][:2]
            for key in (key_in, key_out):
                if key not in mat.keys():
                    raise missing_key(path, key, mat.keys(), _HINT)
            layout = self._layout(path, key_in, key_out, layout)
            self._describe(path, layout, key_in, key_out, pde)
        except BaseException:
            mat.close()
            raise

    def _layout(self, path: Path, key_in: str, key_out: str, layout: str | None) -> str:
        shape_in, shape_out = self._mat.shape(key_in), self._mat.shape(key_out)
        if shape_in != shape_out:
            raise DataError(f"{path}: {key_in!r} has shape {shape_in} but {key_out!r} has {shape_out}; "
                            "expected the same (N, s) or (N, s, s) shape for input and output")
        rank_layout = {2: "burgers", 3: "darcy"}.get(len(shape_in))
        if rank_layout is None or (layout is not None and layout != rank_layout):
            want = "(N, s)" if layout == "burgers" else "(N, s, s)" if layout == "darcy" else "(N, s) or (N, s, s)"
            raise DataError(f"{path}: {key_in!r} has shape {shape_in}; expected {want} with samples first")
        return rank_layout

    def _describe(self, path: Path, layout: str, key_in: str, key_out: str, pde: str | None) -> None:
        mat, r = self._mat, self._stride
        _, _, var_in, var_out = _LAYOUTS[layout]
        shape = mat.shape(key_in)
        if layout == "darcy":
            coords = {d: np.linspace(0.0, 1.0, s)[::r] for d, s in zip(("x", "y"), shape[1:])}
        else:
            coords = {"x": (np.arange(shape[1]) / shape[1])[::r]}
        self.pde = pde or layout
        self.inputs, self.outputs = (var_in,), (var_out,)
        self.coords = coords
        self.variables = {var_in: tuple(coords), var_out: tuple(coords)}
        self.keys = {var_in: key_in, var_out: key_out}
        self.n = int(shape[0])
        self.grid = _GRIDS[layout]
        self.dtype = float_dtype(mat.dtype(key_in), mat.dtype(key_out))
        self.params: dict[str, Any] = {"mat_version": mat.version, "source_shape": list(shape), "subsample": r}

    def read(self, start: int, stop: int) -> dict[str, np.ndarray]:
        return {var: self._mat.read(key, start, stop, self._stride) for var, key in self.keys.items()}

    def close(self) -> None:
        self._mat.close()
