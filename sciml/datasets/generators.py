"""Generator registry, the generator base classes, and the functions built on them.

A generator turns ``(config, seed, i)`` into one sample: it draws the inputs from
``numpy.random.default_rng([seed, i])`` (so sample ``i`` does not depend on the order or
the number of samples), solves the PDE with a classical solver and returns the fields on
the stored grid (``[::subsample]`` along every spatial axis).

Public functions: :func:`available`, :func:`config_class`, :func:`create`, :func:`generate`,
:func:`compute_sample`, :func:`system`, :func:`system_from_file`, :func:`reference_solve`.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from ..config import from_dict, to_dict
from ..errors import ConfigError, DataError, UnknownNameError
from ..registry import Registry
from ..solvers import linear

def _load_all() -> None:
    from . import darcy, poisson  # noqa: F401  (importing fills the registry)


_GENERATORS: Registry = Registry("generator", _load_all)
register = _GENERATORS.register
available = _GENERATORS.available
get = _GENERATORS.get


def config_class(name: str) -> type:
    """The frozen config dataclass of generator ``name``."""
    return get(name).Config


def create(name: str, **params: Any) -> "Generator":
    """Build generator ``name`` from config keywords (unknown keys raise ConfigError)."""
    cls = get(name)
    return cls(from_dict(cls.Config, params, where=f"{name} generator config"))


def check_common(config: Any, min_resolution: int) -> None:
    """Validate the fields every generator config has: resolution, subsample, solver, tol."""
    if config.resolution < min_resolution:
        raise ConfigError(f"resolution must be at least {min_resolution}, got {config.resolution}")
    if config.subsample < 1:
        raise ConfigError(f"subsample must be a positive integer, got {config.subsample}")
    if config.solver not in linear.available():
        raise UnknownNameError("solver method", config.solver, linear.available())
    if not 0 < config.tol < 1:
        raise ConfigError(f"tol must lie in (0, 1), got {config.tol}")


@dataclasses.dataclass(frozen=True)
class Solved:
    """Outputs of one sample's solve on the full grid, with its achieved relative residual."""

    outputs: dict[str, np.ndarray]
    residual: float
    method: str


class Generator:
    """Base of all generators: grid, input draw, classical solve, subsampled storage.

    Subclasses set ``Config``, ``inputs``, ``outputs``, ``grid`` and implement
    :meth:`coords`, :meth:`draw_inputs` and :meth:`solve`.
    """

    name: ClassVar[str] = ""
    Config: ClassVar[type]
    inputs: ClassVar[tuple[str, ...]] = ()
    outputs: ClassVar[tuple[str, ...]] = ()
    grid: ClassVar[str] = ""

    def __init__(self, config: Any):
        self.config = config

    def coords(self) -> dict[str, np.ndarray]:
        """Full-resolution spatial coordinates, in axis order."""
        raise NotImplementedError

    def draw_inputs(self, rng: np.random.Generator) -> dict[str, np.ndarray]:
        """Random inputs of one sample on the full grid."""
        raise NotImplementedError

    def solve(self, inputs: dict[str, np.ndarray]) -> Solved:
        """Classical solve of one sample on the full grid."""
        raise NotImplementedError

    def variables(self) -> dict[str, tuple[str, ...]]:
        """Stored variables and their dims after ``sample``."""
        dims = tuple(self.coords())
        return {v: dims for v in (*self.inputs, *self.outputs)}

    def solver_attrs(self) -> dict[str, Any]:
        return {"name": self.config.solver, "tol": self.config.tol}

    def stride(self, array: np.ndarray) -> np.ndarray:
        """Subsample the trailing spatial axes with stride ``config.subsample``."""
        r = self.config.subsample
        ndim = len(self.coords())
        return array[(Ellipsis, *([slice(None, None, r)] * ndim))]

    def stored_coords(self) -> dict[str, np.ndarray]:
        return {k: v[:: self.config.subsample] for k, v in self.coords().items()}

    def sample(self, seed: int, index: int) -> tuple[dict[str, np.ndarray], Solved]:
        """Sample ``index``: stored (strided) arrays of inputs and outputs, and the solve."""
        inputs = self.draw_inputs(np.random.default_rng([seed, index]))
        solved = self.solve(inputs)
        arrays = {k: self.stride(v) for k, v in {**inputs, **solved.outputs}.items()}
        return arrays, solved


class LinearGenerator(Generator):
    """A stationary linear PDE: one sparse system ``A x = b`` per sample.

    Subclasses implement :meth:`assemble` and :meth:`outputs_from`.
    """

    def assemble(self, inputs: dict[str, np.ndarray]):
        """``(A, b)``: CSR matrix and right-hand side of the sample (float64)."""
        raise NotImplementedError

    def outputs_from(self, x: np.ndarray, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Output fields on the full grid from the solution vector ``x``."""
        raise NotImplementedError

    def unknown_shape(self) -> tuple[int, ...]:
        """Grid shape of the unknowns: ``x.reshape(unknown_shape())``."""
        raise NotImplementedError

    #: whether every matrix of this generator is symmetric (spares ``auto`` the test)
    symmetric: ClassVar[bool | None] = None

    def method(self, A) -> str:
        """The solve method for ``A`` (``auto`` resolved)."""
        if self.config.solver != "auto":
            return self.config.solver
        return linear.choose_method(A, symmetric=self.symmetric)

    def solve(self, inputs: dict[str, np.ndarray]) -> Solved:
        A, b = self.assemble(inputs)
        result = linear.solve(A, b, self.method(A), tol=self.config.tol)
        if not result.converged:
            raise DataError(
                f"{self.name}: the {result.method} solve reached residual {result.residual:.2e} > "
                f"tol {self.config.tol:.0e} after {result.iterations} iterations; "
                "choose another solver or a larger tol"
            )
        return Solved(self.outputs_from(result.x, inputs), result.residual, result.method)


def _check_run(n: int, seed: int, dtype: str) -> None:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ConfigError(f"n (number of samples) must be a positive integer, got {n!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ConfigError(f"seed must be a non-negative integer, got {seed!r}")
    if dtype not in ("float32", "float64"):
        raise ConfigError(f"dtype must be 'float32' or 'float64', got {dtype!r}")


def compute_sample(name: str, params: dict, seed: int, index: int) -> tuple[dict[str, np.ndarray], float, str]:
    """Sample ``index`` of generator ``name`` with config ``params`` (picklable, for workers).

    Returns ``(stored arrays, achieved relative residual, method that ran)``.
    """
    arrays, solved = create(name, **params).sample(seed, index)
    return arrays, solved.residual, solved.method


def _progress(enabled: bool, label: str):
    """A transient rich progress bar on stderr, or a context yielding None."""
    from contextlib import nullcontext

    if not enabled:
        return nullcontext(None)
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    return Progress(TextColumn(label), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                    console=Console(stderr=True), transient=True)


def generate(
    name: str,
    *,
    n: int,
    resolution: int,
    seed: int = 0,
    out: str | Path,
    subsample: int = 1,
    progress: bool = True,
    dtype: str = "float32",
    resume: bool = False,
    **params: Any,
) -> Path:
    """Generate ``n`` samples of PDE ``name`` into the dataset file ``out``.

    Sample ``i`` is drawn from ``numpy.random.default_rng([seed, i])`` and solved at
    ``resolution``; fields are stored strided by ``subsample``. ``params`` are the other
    fields of ``config_class(name)``. With ``resume=True`` an interrupted run continues from
    its ``.partial`` file. Returns the path of the finished file.
    """
    from .format import DatasetWriter

    _check_run(n, seed, dtype)
    if Path(out).is_dir():
        example = str(Path(out) / f"{name}.h5")
        raise ConfigError(f"out {str(out)!r} is a directory; give a file name such as {example!r}")
    gen = create(name, resolution=resolution, subsample=subsample, **params)
    config = to_dict(gen.config)
    attrs = {"pde": name, "inputs": " ".join(gen.inputs), "outputs": " ".join(gen.outputs),
             "params": config, "seed": int(seed), "grid": gen.grid}
    writer = DatasetWriter(out, n, gen.stored_coords(), gen.variables(), attrs, dtype=dtype, resume=resume)
    methods = set()
    try:
        done = writer.done()
        if done.size != n:
            raise DataError(
                f"{writer.tmp} holds {done.size} samples, not n={n}; resume with n={done.size} or drop resume"
            )
        todo = [i for i in range(n) if not done[i]]
        with _progress(progress and n > 1, f"{name} {resolution}") as bar:
            task = bar.add_task(name, total=len(todo)) if bar else None
            for i in todo:
                arrays, solved = gen.sample(seed, i)
                writer.write(i, residual=solved.residual, **arrays)
                methods.add(solved.method)
                if bar:
                    bar.advance(task)
        residuals = writer.residuals()
        writer.set_attr("solver", {**gen.solver_attrs(), "method": ",".join(sorted(methods)) or None,
                                   "max_residual": float(np.max(residuals))})
    except BaseException:
        writer.close()  # keeps the .partial file so that resume=True can continue
        raise
    return writer.finish()


def system(name: str, *, resolution: int, seed: int = 0, index: int = 0, **params: Any):
    """The linear system of sample ``index`` of PDE ``name`` (as generated, full resolution).

    Returns
    -------
    A : scipy.sparse.csr_matrix ``(N, N)``; b : ``(N,)`` float64;
    info : dict with ``pde``, ``shape`` (``x.reshape(shape)`` gives the grid of unknowns),
    ``dim``, ``unknowns``, ``grid``, ``config``, ``method`` (what ``auto`` picks), ``tol``,
    ``seed``, ``index`` and ``inputs`` (the sample's input fields, full grid).
    """
    _check_run(1, seed, "float64")
    gen = create(name, resolution=resolution, **params)
    if not isinstance(gen, LinearGenerator):
        valid = [k for k in available() if issubclass(get(k), LinearGenerator)]
        raise ConfigError(f"{name!r} is not a stationary linear PDE; linear systems exist for: {', '.join(valid)}")
    if isinstance(index, bool) or not isinstance(index, (int, np.integer)) or index < 0:
        raise ConfigError(f"index must be a non-negative integer, got {index!r}")
    return _system_of(gen, gen.draw_inputs(np.random.default_rng([seed, index])), seed, index)


def _system_of(gen: "LinearGenerator", inputs: dict[str, np.ndarray], seed: int, index: int):
    A, b = gen.assemble(inputs)
    shape = gen.unknown_shape()
    info = {"pde": gen.name, "shape": shape, "dim": len(shape), "unknowns": int(A.shape[0]),
            "grid": gen.grid, "config": to_dict(gen.config), "method": gen.method(A),
            "tol": gen.config.tol, "seed": int(seed), "index": int(index), "inputs": inputs}
    return A, b, info


def _from_file(ds) -> Generator:
    from .format import attrs_json

    name = str(ds.attrs["pde"])
    cls = get(name)
    return cls(from_dict(cls.Config, attrs_json(ds, "params"), where=f"{name} params of the file"))


def _full_inputs(ds, gen: Generator, index: int) -> dict[str, np.ndarray]:
    """Full-resolution inputs of stored sample ``index`` (redrawn from the seed if strided)."""
    n = ds.sizes["sample"]
    if isinstance(index, bool) or not isinstance(index, (int, np.integer)) or not 0 <= int(index) < n:
        raise DataError(f"sample index {index} is out of range; the dataset has {n} samples (0..{n - 1})")
    stored = {v: np.asarray(ds[v].isel(sample=int(index)).values, dtype=np.float64) for v in gen.inputs}
    if gen.config.subsample == 1:
        return stored
    inputs = gen.draw_inputs(np.random.default_rng([int(ds.attrs["seed"]), int(index)]))
    for v in gen.inputs:
        if not np.allclose(gen.stride(inputs[v]), stored[v], rtol=1e-6, atol=1e-6):
            raise DataError(
                f"stored input {v!r} of sample {index} does not match its seed; the file was "
                "modified or subset, re-solve only unmodified files written by `sciml generate`"
            )
    return inputs


def system_from_file(path, index: int = 0):
    """The linear system of stored sample ``index`` of a dataset file; like :func:`system`.

    Built from the stored inputs (redrawn at full resolution from the seed when the file is
    subsampled, see :func:`reference_solve`); ``info`` has the keys of :func:`system`.
    """
    from .format import open_dataset

    ds = open_dataset(path)
    try:
        gen = _from_file(ds)
        if not isinstance(gen, LinearGenerator):
            raise DataError(f"{path}: pde {gen.name!r} is not a stationary linear PDE; it has no single linear system")
        inputs = _full_inputs(ds, gen, index)
        seed = int(ds.attrs["seed"])
    finally:
        ds.close()
    return _system_of(gen, inputs, seed, index)


def reference_solve(ds, index: int) -> tuple[dict[str, np.ndarray], float]:
    """Re-solve stored sample ``index`` of an opened dataset with its classical solver.

    With ``subsample = 1`` the stored inputs are solved as they are. With ``subsample > 1``
    the solver needs the full-resolution inputs: they are redrawn from ``(seed, index)``
    (``index`` is then the position in the file as written) and checked against the stored
    ones. Returns ``(outputs on the stored grid, wall seconds of assembly + solve)``.
    """
    gen = _from_file(ds)
    inputs = _full_inputs(ds, gen, index)
    t0 = time.perf_counter()
    solved = gen.solve(inputs)
    elapsed = time.perf_counter() - t0
    return {k: gen.stride(v) for k, v in solved.outputs.items()}, elapsed
