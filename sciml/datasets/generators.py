"""Generator registry, the generator base classes, and the functions built on them.

A generator turns ``(config, seed, i)`` into one sample: it draws the inputs from
``numpy.random.default_rng([seed, i])`` (so sample ``i`` does not depend on the order or
the number of samples), solves the PDE with a classical solver and returns the fields on
the stored grid (``[::subsample]`` along every spatial axis).

Public functions: :func:`available`, :func:`config_class`, :func:`create`, :func:`generate`,
:func:`compute_sample`, :func:`system`, :func:`system_from_file`, :func:`reference_solve`.
"""

from __future__ import annotations

import abc

import contextlib
import dataclasses
import time
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from .. import runtime
from ..distributed import cluster as clusters
from ..config import from_dict, to_dict
from ..errors import ConfigError, DataError, SciMLError, UnknownNameError
from ..registry import Registry
from ..solvers import linear

def _load_all() -> None:
    from . import burgers, condiff, darcy, poisson, poisson3d, wave  # noqa: F401  (importing fills the registry)


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


class Generator(abc.ABC):
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

    @abc.abstractmethod
    def coords(self) -> dict[str, np.ndarray]:
        """Full-resolution spatial coordinates, in axis order."""
        ...

    @abc.abstractmethod
    def draw_inputs(self, rng: np.random.Generator) -> dict[str, np.ndarray]:
        """Random inputs of one sample on the full grid."""
        ...

    @abc.abstractmethod
    def solve(self, inputs: dict[str, np.ndarray]) -> Solved:
        """Classical solve of one sample on the full grid."""
        ...

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
        return self._stored(inputs, self.solve(inputs))

    def _stored(self, inputs: dict[str, np.ndarray], solved: Solved) -> tuple[dict[str, np.ndarray], Solved]:
        return {k: self.stride(v) for k, v in {**inputs, **solved.outputs}.items()}, solved

    def samples(self, seed: int, indices: list[int], device=None) -> list[tuple[dict[str, np.ndarray], Solved]]:
        """:meth:`sample` of each index; ``device`` batches the solves where the generator can
        (:meth:`LinearGenerator.samples`), else is refused."""
        if device is not None:
            raise ConfigError(f"{self.name} does not solve linear systems (it steps in time); --device batches the "
                              "solves of darcy, poisson, poisson3d and condiff: drop --device")
        return [self.sample(seed, i) for i in indices]


class LinearGenerator(Generator):
    """A stationary linear PDE: one sparse system ``A x = b`` per sample.

    Subclasses implement :meth:`assemble` and :meth:`outputs_from`.
    """

    @abc.abstractmethod
    def assemble(self, inputs: dict[str, np.ndarray]):
        """``(A, b)``: CSR matrix and right-hand side of the sample (float64)."""
        ...

    @abc.abstractmethod
    def outputs_from(self, x: np.ndarray, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Output fields on the full grid from the solution vector ``x``."""
        ...

    @abc.abstractmethod
    def unknown_shape(self) -> tuple[int, ...]:
        """Grid shape of the unknowns: ``x.reshape(unknown_shape())``."""
        ...

    #: whether every matrix of this generator is symmetric (spares ``auto`` the test)
    symmetric: ClassVar[bool | None] = None

    def method(self, A) -> str:
        """The solve method for ``A`` (``auto`` resolved)."""
        if self.config.solver != "auto":
            return self.config.solver
        return linear.choose_method(A, symmetric=self.symmetric, grid=self.unknown_shape())

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

    def samples(self, seed: int, indices: list[int], device=None) -> list[tuple[dict[str, np.ndarray], Solved]]:
        """Samples ``indices``; with ``device`` their systems are solved together, in one batched
        ``pcg-mg`` call on that torch device (:func:`sciml.solvers.multigrid.solve_batch`).

        The inputs are drawn on the host from ``default_rng([seed, i])`` either way, so they are
        bitwise those of :meth:`sample`; the outputs agree with it to the solve tolerance.
        """
        if device is None:
            return [self.sample(seed, i) for i in indices]
        from ..solvers import multigrid

        inputs = [self.draw_inputs(np.random.default_rng([seed, i])) for i in indices]
        systems = [self.assemble(x) for x in inputs]
        x, converged, residuals, _, _ = multigrid.solve_batch(
            [A for A, _ in systems], [b for _, b in systems], tol=self.config.tol, shape=self.unknown_shape(),
            device=device)
        out = []
        for i, xi, ok, res, sample_inputs in zip(indices, x, converged, residuals, inputs):
            if not ok:
                raise DataError(f"{self.name}: the batched pcg-mg solve of sample {i} reached residual {res:.2e} > tol "
                                f"{self.config.tol:.0e}; generate without --device (solver {self.config.solver!r})")
            out.append(self._stored(sample_inputs, Solved(self.outputs_from(xi, sample_inputs), float(res), "pcg-mg")))
        return out


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


class GenerationInterrupted(KeyboardInterrupt):
    """Ctrl-C stopped :func:`generate`; the ``.partial`` file keeps the finished samples.

    A ``KeyboardInterrupt`` (so it stops programs as one does) that says how far it got:
    ``done`` of ``total`` samples are in ``partial``, and ``generate(..., resume=True)``
    (``sciml generate --resume``) continues from there.
    """

    def __init__(self, done: int, total: int, partial: Path, signal: str | None = None):
        self.done, self.total, self.partial = done, total, partial
        self.signal = signal  # the job signal (SIGTERM, SIGUSR1) that stopped it, None for Ctrl-C
        hint = ", rerun with --resume" if done else ""
        super().__init__(f"interrupted; {done} of {total} samples done{hint}")


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
    workers: int | None = None,
    scheduler: str | None = None,
    cluster: str | None = None,
    cluster_settings: dict | None = None,
    overwrite: bool = False,
    device: str | None = None,
    batch: int | None = None,
    **params: Any,
) -> Path:
    """Generate ``n`` samples of PDE ``name`` into the dataset file ``out``.

    Sample ``i`` is drawn from ``numpy.random.default_rng([seed, i])`` and solved at
    ``resolution``; fields are stored strided by ``subsample``. ``params`` are the other
    fields of ``config_class(name)``. Returns the path of the finished file.

    Scale-out: ``workers = N > 1`` solves on a local Dask cluster of ``N`` single-threaded
    processes, ``cluster = "tcp://host:port"`` (or ``scheduler=``) on an existing Dask
    scheduler's workers, ``cluster = "slurm"`` / ``"pbs"`` on ``workers`` Dask workers in batch
    jobs with the job settings ``cluster_settings`` (see :func:`sciml.distributed.cluster_spec`);
    by default (``workers`` 1 or None) everything runs in this process. This process stays
    the only writer, and the file is identical whatever the worker count or the order in
    which samples finish.

    Resume: samples go to ``out.partial`` until all are done. With ``resume=True`` an
    interrupted run continues from it (same ``n``, ``seed``, ``dtype`` and parameters, else
    :class:`~sciml.errors.DataError`); without, an existing ``.partial`` is a
    ``DataError`` rather than overwritten, so no finished sample is ever thrown away
    silently (``overwrite=True`` discards it). Ctrl-C raises :class:`GenerationInterrupted`
    after saving what is done. A lock next to ``out`` stops a second process writing the same
    file (one ConfigError line naming the first).

    Batched solves: ``device = "cpu" | "cuda" | "auto"`` solves ``batch`` samples at a time in
    one batched multigrid-PCG call (``pcg-mg``) on that torch device, in this process (default
    :func:`default_batch`). The inputs
    are still drawn on the host from ``default_rng([seed, i])``, bitwise as without ``device``;
    the outputs agree to the solve tolerance ``tol``. Linear generators only.
    """
    from ..io import output_lock
    from .format import DatasetWriter, partial_path

    _check_run(n, seed, dtype)
    where = clusters.cluster_spec(cluster, workers, scheduler=scheduler, settings=cluster_settings)
    if device is not None:
        if not where.in_process:
            raise ConfigError("--device solves batches in this process (one GPU); drop --workers/--cluster, or drop --device "
                              "to solve sample by sample on the Dask workers")
        if batch is not None and (isinstance(batch, bool) or not isinstance(batch, (int, np.integer)) or batch < 1):
            raise ConfigError(f"batch must be a positive number of samples per solve, got {batch!r}")
        device = str(runtime.device(device))  # a clear error now for a missing GPU, not after the first batch
    if Path(out).is_dir():
        example = str(Path(out) / f"{name}.h5")
        raise ConfigError(f"out {str(out)!r} is a directory; give a file name such as {example!r}")
    with output_lock(out, "--out"):  # a second process writing the same file stops at once
        gen = create(name, resolution=resolution, subsample=subsample, **params)
        partial = partial_path(out)
        if overwrite and not resume:  # under the lock: never another writer's partial file
            partial.unlink(missing_ok=True)
        if partial.exists() and not resume:
            raise DataError(
                f"{partial} holds an unfinished generation; pass --resume (resume=True) to continue it, "
                "or delete it to start again"
            )
        config = to_dict(gen.config)
        attrs = {"pde": name, "inputs": " ".join(gen.inputs), "outputs": " ".join(gen.outputs),
                 "params": config, "seed": int(seed), "grid": gen.grid}
        writer = DatasetWriter(out, n, gen.stored_coords(), gen.variables(), attrs, dtype=dtype, resume=resume)
        methods: set[str] = set()
        with contextlib.ExitStack() as stack:  # unwinds bar, tasks, cluster: after the writer is closed
            try:
                todo = np.flatnonzero(~writer.done()).tolist()
                if todo and not where.in_process:
                    client = stack.enter_context(clusters.dask_client(spec=where))
                    results = _on_dask(client, name, config, seed, todo)
                    stack.callback(results.close)  # cancels the tasks still in flight
                else:
                    results = _in_process(gen, seed, todo, device, batch)
                advance = stack.enter_context(runtime.progress(len(todo), f"{name} {resolution}",
                                                               enabled=progress and len(todo) > 1))
                for i, arrays, residual, method in results:
                    writer.write(i, residual=residual, **arrays)
                    methods.add(method)
                    advance()
                writer.set_attr("solver", {**gen.solver_attrs(), "method": ",".join(sorted(methods)) or None,
                                           "max_residual": float(np.max(writer.residuals()))})
                return writer.finish()
            except BaseException as exc:
                writer.close()  # flushes: the .partial file keeps every finished sample for resume=True
                done = int(writer.done().sum())
                if not done:
                    partial.unlink(missing_ok=True)  # nothing to keep: a rerun need not be told to resume
                if isinstance(exc, KeyboardInterrupt) and not isinstance(exc, GenerationInterrupted):
                    raise GenerationInterrupted(done, n, partial, getattr(exc, "name", None)) from None
                raise


#: unknowns per batched solve (all systems together): on a CPU the batch's vectors should stay
#: near the caches (Darcy 421^2, 16 samples: 4.5 samples/s one at a time, 4.3 in batches of 4,
#: 3.0 in batches of 16; ConDiff 128^2: 19 samples/s one at a time, 47 in batches of 16); a GPU
#: needs large batches to fill it.
BATCH_UNKNOWNS = {"cpu": 2**20, "cuda": 2**24}


def default_batch(gen: Generator, device) -> int:
    """Samples per batched solve: about ``BATCH_UNKNOWNS[device type]`` unknowns, 1 to 256 samples."""
    unknowns = int(np.prod(gen.unknown_shape())) if isinstance(gen, LinearGenerator) else 1
    budget = BATCH_UNKNOWNS.get(str(device).split(":")[0], BATCH_UNKNOWNS["cpu"])
    return int(min(256, max(1, budget // max(unknowns, 1))))


def _in_process(gen: Generator, seed: int, todo: list[int], device=None, batch: int | None = None):
    """``(index, stored arrays, residual, method)`` of every sample in ``todo``, in order; with
    ``device``, ``batch`` samples are solved at a time (:meth:`Generator.samples`)."""
    if device is None:
        for i in todo:
            arrays, solved = gen.sample(seed, i)
            yield i, arrays, solved.residual, solved.method
        return
    if not isinstance(gen, LinearGenerator):
        gen.samples(seed, [], device)  # refuses in one line
    batch = batch or default_batch(gen, device)
    for start in range(0, len(todo), batch):
        chunk = todo[start : start + batch]
        for i, (arrays, solved) in zip(chunk, gen.samples(seed, chunk, device)):
            yield i, arrays, solved.residual, solved.method


def _on_dask(client, name: str, config: dict, seed: int, todo: list[int]):
    """Samples ``todo`` computed on ``client``'s workers, yielded as their tasks complete.

    Each task computes a batch of samples (:class:`_BatchSize`); at most four tasks per
    worker thread are in flight (submitted as earlier ones finish), so memory stays bounded
    whatever ``len(todo)``, and each result is released once the caller has taken it.
    Tasks still in flight are cancelled when the caller stops.
    """
    import collections
    import uuid

    from distributed.client import FutureCancelledError
    from distributed.scheduler import KilledWorker

    threads = max(1, sum(w.get("nthreads", 1) for w in client.scheduler_info(n_workers=-1)["workers"].values()))
    size = _BatchSize(threads)
    run = uuid.uuid4().hex[:8]
    pending = collections.deque(todo)

    def next_batch():
        if not pending:
            return None
        batch = [pending.popleft() for _ in range(min(size(len(pending)), len(pending)))]
        return batch, _sample_batch, (name, config, seed, batch), f"{name}-samples-{batch[0]}-{run}"

    for batch, future in clusters.finished_tasks(client, next_batch, window=4 * threads):
        try:
            results, seconds = future.result()
        except (FutureCancelledError, KilledWorker) as exc:
            raise SciMLError(
                f"samples {batch[0]}..{batch[-1]} were lost with their Dask worker ({type(exc).__name__}; "
                "out of memory?); the finished samples are kept: rerun with --resume, with fewer workers"
            ) from None
        size.observe(len(batch), seconds, sum(a.nbytes for r in results for a in r[1].values()))
        yield from results


def _sample_batch(name: str, params: dict, seed: int, indices: list[int]):
    """Worker task: ``([(index, stored arrays, residual, method), ...], wall seconds)``."""
    t0 = time.perf_counter()
    gen = create(name, **params)
    results = []
    for i in indices:
        arrays, solved = gen.sample(seed, i)
        results.append((i, arrays, solved.residual, solved.method))
    return results, time.perf_counter() - t0


class _BatchSize:
    """Samples per Dask task, sized from the samples seen so far.

    A task costs a few ms of scheduler and transfer time (about 5 ms here), which swamps
    small samples (an s = 65 Darcy sample takes 11 ms: 2 workers ran no faster than one
    process). Batches of about :attr:`SECONDS` of work make that overhead a few percent;
    a batch holds at most :attr:`BYTES` of results, and at most ``1 / (2 threads)`` of the
    samples left, so the last tasks still spread over all workers. Starts at 1.
    """

    SECONDS = 0.2
    BYTES = 16 * 2**20

    def __init__(self, threads: int):
        self.threads = threads
        self.seconds = self.nbytes = None  # per sample

    def observe(self, count: int, seconds: float, nbytes: int) -> None:
        self.seconds = seconds / count if self.seconds is None else 0.5 * (self.seconds + seconds / count)
        self.nbytes = nbytes / count

    def __call__(self, remaining: int) -> int:
        if self.seconds is None:
            return 1
        size = min(self.SECONDS / max(self.seconds, 1e-6), self.BYTES / max(self.nbytes, 1.0),
                   remaining / (2 * self.threads))
        return max(1, int(size))


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
