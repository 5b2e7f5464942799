"""ConDiff HDF5 files (Trifonov et al. 2024, arXiv 2406.04709): ``-div(k grad u) = f`` on
the unit square, ``u = 0`` on the boundary, 5-point finite differences.

Keys: ``k`` ``(N, n+1, n+1)`` (absent in the Poisson files, where ``k = 1``), ``rhs``
``(N, n^2)`` and ``x`` ``(N, n^2)`` (the solution), float64. The vectors are in Fortran
order: unknown ``p = i + n j`` is the node ``((i+1) h, (j+1) h)``, ``h = 1/(n+1)``, with
``i`` along the first axis of ``k``. They are reshaped here so that ``u[i, j]`` is that
node. Stored as pde ``condiff`` (``condiff-poisson`` without ``k``, as the generators name
them): ``k`` on ``(sample, xk, yk)`` at the cell centres ``(i + 1/2) h``, ``f`` and ``u`` on
``(sample, x, y)`` at the interior nodes ``(i + 1) h``, and the per-sample contrast
``k.max() / k.min()`` (the dataset's complexity measure).

Each sample's relative residual ``||f - A u|| / ||f||`` under ConDiff's matrix is recorded,
so ``sciml info`` shows whether the file and its reading agree (about 1e-14 for the
published sets).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import numpy as np

from ...errors import DataError
from ...solvers.discretisation import condiff_operator, laplacian
from .base import IMPORTERS, Source, float_dtype, missing_key, open_hdf5

_WHAT = "a ConDiff HDF5 file (keys k, rhs, x)"
_HINT = "; expected a ConDiff file with rhs and x (N, n^2) and, except for Poisson sets, k (N, n+1, n+1)"


def _fortran_grids(block: np.ndarray, n: int) -> np.ndarray:
    """Rows of Fortran-ordered vectors ``(b, n^2)`` -> grids ``(b, n, n)`` with ``[i, j] = v[i + n j]``."""
    # a C reshape gives [b, j, i]; swapping the two grid axes puts i first
    return block.reshape(len(block), n, n).transpose(0, 2, 1)


@IMPORTERS.register("condiff")
class ConDiff(Source):
    """ConDiff diffusion or Poisson file (see the module docstring)."""

    options = ()

    def __init__(self, path: Path):
        self._path = path
        self._f = f = open_hdf5(path, _WHAT, "")
        try:
            for key in ("rhs", "x"):
                if key not in f:
                    raise missing_key(path, key, list(f.keys()), _HINT)
            self._describe(path)
        except BaseException:
            f.close()
            raise

    def _describe(self, path: Path) -> None:
        f = self._f
        rhs, x = f["rhs"], f["x"]
        n = int(round(np.sqrt(rhs.shape[-1]))) if rhs.ndim == 2 else -1
        if rhs.ndim != 2 or n * n != rhs.shape[1] or x.shape != rhs.shape:
            raise DataError(f"{path}: rhs has shape {rhs.shape} and x {x.shape}; expected both (N, n^2)")
        self._diffusion = "k" in f
        if self._diffusion and f["k"].shape != (rhs.shape[0], n + 1, n + 1):
            raise DataError(f"{path}: k has shape {f['k'].shape}; expected {(rhs.shape[0], n + 1, n + 1)} "
                            f"for rhs of shape {rhs.shape}")
        h = 1.0 / (n + 1)
        self._n = n
        # the generators' names, so models trained on generated sets apply to imported ones
        self.pde = "condiff" if self._diffusion else "condiff-poisson"
        self.inputs = ("k", "f") if self._diffusion else ("f",)
        self.outputs = ("u",)
        nodes = (np.arange(n) + 1) * h
        self.coords = {"x": nodes, "y": nodes}
        self.variables = {"f": ("x", "y"), "u": ("x", "y")}
        self.keys = {"f": "rhs (Fortran order)", "u": "x (Fortran order)"}
        if self._diffusion:
            centres = (np.arange(n + 1) + 0.5) * h
            self.coords = {"xk": centres, "yk": centres, **self.coords}
            self.variables = {"k": ("xk", "yk"), **self.variables, "contrast": ()}
            self.keys = {"k": "k", **self.keys, "contrast": "k.max() / k.min()"}
        self.n = int(rhs.shape[0])
        self.grid = (f"f, u: interior nodes x_i = (i + 1) h, i = 0..n-1, h = 1/(n + 1), boundary (u = 0) "
                     f"excluded; k: cell centres (i + 1/2) h, i = 0..n (n = {n})")
        self.dtype = float_dtype(rhs.dtype, x.dtype, *([f["k"].dtype] if self._diffusion else []))
        self.params: dict[str, Any] = {"n": n, "coefficient": "k" if self._diffusion else "k = 1 (Poisson)"}
        self._laplacian = None if self._diffusion else laplacian(n, 2)

    def read(self, start: int, stop: int) -> dict[str, np.ndarray]:
        n = self._n
        arrays = {"f": _fortran_grids(self._f["rhs"][start:stop], n),
                  "u": _fortran_grids(self._f["x"][start:stop], n)}
        if self._diffusion:
            k = self._f["k"][start:stop]
            lo = k.min(axis=(1, 2))
            if np.any(lo <= 0):  # NaN is left to the converter's finiteness check
                bad = int(np.flatnonzero(lo <= 0)[0])
                raise DataError(f"{self._path}: sample {start + bad} has k minimum {lo[bad]:g}; a ConDiff "
                                "coefficient is positive (k = exp of a Gaussian field), check the file")
            arrays = {"k": k, **arrays, "contrast": k.max(axis=(1, 2)) / lo}
        return arrays

    def residuals(self, arrays: Mapping[str, np.ndarray]) -> np.ndarray:
        out = np.empty(len(arrays["f"]))
        for b, (f, u) in enumerate(zip(arrays["f"], arrays["u"])):
            A = condiff_operator(np.asarray(arrays["k"][b], np.float64)) if self._diffusion else self._laplacian
            f64 = np.asarray(f, np.float64).reshape(-1)
            r = f64 - A @ np.asarray(u, np.float64).reshape(-1)
            out[b] = np.linalg.norm(r) / max(np.linalg.norm(f64), np.finfo(float).tiny)
        return out

    def solver(self) -> dict[str, Any]:
        return {"name": "imported", "residual_of": "ConDiff 5-point matrix (fd_mtx2) applied to the stored u"}

    def close(self) -> None:
        self._f.close()
