"""Dask clients for embarrassingly parallel work (generation, batch evaluation, sweeps).

:func:`dask_client` is the one place that decides where tasks run (:func:`cluster_spec`
reads ``--cluster``/``--workers`` and a ``cluster:`` YAML section): a ``LocalCluster`` of
worker processes on this machine (the default), a SLURM or PBS cluster of batch jobs through
``dask-jobqueue``, or an existing scheduler given by its address. Callers submit plain
picklable functions and never see the cluster type; the scheduling is Dask's.

Local workers are single-threaded processes (NumPy/SciPy/pyamg solves hold the GIL for
much of their time, and one thread per process matches the one-thread BLAS the solvers
ask for). Dask sets ``MALLOC_TRIM_THRESHOLD_=65536`` in every worker it spawns; with it,
pyamg/scipy solves in 2 workers ran 2.3x slower than in plain processes (TARGETS.md,
measured pitfalls), so local workers are started without it, and batch jobs export the
Dask settings that drop it (:data:`JOB_ENVIRONMENT`).
"""

from __future__ import annotations

import contextlib
import logging
import numbers
import os
import shutil
import signal
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Iterator

from ..config import check_keys, suggest
from ..errors import ConfigError

if TYPE_CHECKING:
    from distributed import Client

#: dask config key whose entries the nanny exports before spawning a worker process;
#: a ``None`` value drops a variable (``distributed.nanny._get_env_variables``)
PRE_SPAWN_ENVIRON = "distributed.nanny.pre-spawn-environ"

#: local workers' settings (the nanny hands its config to the worker it spawns)
WORKER_CONFIG = {
    # the statistical profiler samples the task thread's stack every 10 ms under the GIL;
    # Darcy solves at s = 211 on 2 local workers took 3% longer with it
    "distributed.worker.profile.enabled": False,
}


#: the cluster kinds ``--cluster`` names; anything with ``://`` is a scheduler address
KINDS = ("local", "slurm", "pbs")

#: the command that submits a job of each batch system (checked on PATH before submitting)
SUBMIT = {"slurm": "sbatch", "pbs": "qsub"}

#: keys of a ``cluster:`` section besides the job settings: where tasks run and how many workers
PLACEMENT_KEYS = ("kind", "workers")

#: job settings of a ``cluster:`` section, passed to ``dask_jobqueue.SLURMCluster``/``PBSCluster``
#: under the same names (hyphens may stand for underscores, as in jobqueue.yaml); unset ones
#: come from dask-jobqueue's own configuration (``~/.config/dask/jobqueue.yaml``)
JOB_KEYS = (
    "queue", "account", "cores", "processes", "memory", "walltime", "job_extra_directives",
    "job_script_prologue", "job_directives_skip", "local_directory", "log_directory", "interface",
    "python", "job_name", "death_timeout", "worker_extra_args", "resource_spec", "job_cpu", "job_mem",
)
#: job settings that only one batch system knows
_ONLY = {"resource_spec": "pbs", "job_cpu": "slurm", "job_mem": "slurm"}

#: exported at the top of every job script, read by the worker's nanny (the same settings as
#: local workers: no MALLOC_TRIM_THRESHOLD_, no statistical profiler; see the module docstring)
JOB_ENVIRONMENT = (
    "export DASK_DISTRIBUTED__NANNY__PRE_SPAWN_ENVIRON=\"{'MALLOC_TRIM_THRESHOLD_': None}\"",
    "export DASK_DISTRIBUTED__WORKER__PROFILE__ENABLED=False",
)


@dataclass(frozen=True)
class ClusterSpec:
    """Where tasks run, resolved from ``--cluster``/``--workers`` and a ``cluster:`` section.

    kind: ``local``, ``slurm``, ``pbs`` or ``address`` (an existing scheduler at ``address``).
    workers: local worker processes, or the Dask workers asked of the batch system
        (``ceil(workers / processes)`` jobs); None: the CPU count locally, one job on a batch system.
    job: the job settings given (``JOB_KEYS``), dask-jobqueue's configuration fills the rest.
    """

    kind: str = "local"
    workers: int | None = None
    address: str | None = None
    job: dict = field(default_factory=dict)

    @property
    def in_process(self) -> bool:
        """Local with one worker (or none given): callers then run their tasks in this process."""
        return self.kind == "local" and (self.workers or 1) == 1

    def describe(self) -> str:
        if self.kind == "address":
            return f"the Dask scheduler at {self.address}"
        if self.kind == "local":
            return "this process" if self.in_process else f"a local Dask cluster of {self.workers or os.cpu_count()} workers"
        return f"{self.workers or 'one job of'} {self.kind.upper()} Dask workers"


def cluster_spec(cluster: str | None = None, workers: int | None = None, *, scheduler: str | None = None,
                 settings: dict | None = None) -> ClusterSpec:
    """Resolve and validate where tasks run (one clear ConfigError line for any bad input).

    ``cluster`` (``local`` | ``slurm`` | ``pbs`` | ``tcp://host:port``) and ``workers`` override
    the ``kind`` and ``workers`` keys of ``settings``, a ``cluster:`` section whose other keys are
    job settings (``JOB_KEYS``). ``scheduler`` is the older spelling of ``cluster=ADDRESS``.
    Job settings are ignored by ``local`` and address clusters, and the section's ``workers`` by
    an address, so one config runs anywhere.
    """
    section = _normalise_section(settings)
    if scheduler is not None:
        if not isinstance(scheduler, str) or "://" not in scheduler:
            raise ConfigError(f"scheduler must be an address such as tcp://10.0.0.1:8786, got {scheduler!r}")
        if cluster is not None and cluster != scheduler:
            raise ConfigError(f"give either --cluster {cluster} or --scheduler {scheduler}, not both")
        cluster = scheduler
    placement = {key: section.pop(key) for key in PLACEMENT_KEYS if key in section}
    kind = cluster if cluster is not None else placement.get("kind", "local")
    if workers is None and "://" not in str(kind):  # the section's worker count is not for a running scheduler
        workers = placement.get("workers")
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, numbers.Integral) or workers < 1):
        raise ConfigError(f"workers must be a positive integer, got {workers!r}")
    if not isinstance(kind, str) or not kind:
        raise ConfigError(f"cluster must be one of {', '.join(KINDS)} or a scheduler address, got {kind!r}")
    if "://" in kind:
        if workers is not None and workers != 1:
            raise ConfigError(
                f"give either workers ({workers}) or a scheduler address ({kind}), not both: "
                "an existing scheduler brings its own workers"
            )
        return ClusterSpec("address", None, kind)
    if kind not in KINDS:
        raise ConfigError(
            f"unknown cluster {kind!r}{suggest(kind, list(KINDS))}; use local, slurm, pbs "
            "or a scheduler address such as tcp://10.0.0.1:8786"
        )
    if kind in SUBMIT:
        for key, only in _ONLY.items():
            if key in section and only != kind:
                raise ConfigError(f"{key!r} in the cluster section is a {only.upper()} setting; remove it for a {kind} cluster")
    return ClusterSpec(kind, None if workers is None else int(workers), None, section if kind in SUBMIT else {})


def _normalise_section(settings: dict | None) -> dict:
    if settings is None:
        return {}
    if not isinstance(settings, dict):
        raise ConfigError(f"the cluster section must be a mapping of settings (queue: ..., cores: ...), got {settings!r}")
    section = {str(k).replace("-", "_"): v for k, v in settings.items()}
    check_keys(section, [*PLACEMENT_KEYS, *JOB_KEYS], "the cluster section")
    return section


@contextlib.contextmanager
def dask_client(workers: int | None = None, scheduler: str | None = None, *, cluster: str | None = None,
                settings: dict | None = None, spec: ClusterSpec | None = None) -> Iterator[Client]:
    """A ``distributed.Client`` on the cluster these options name (see :func:`cluster_spec`).

    * ``local`` (default): a new ``LocalCluster`` of ``workers`` single-threaded processes
      (default: the CPU count).
    * ``slurm`` / ``pbs``: a ``dask_jobqueue`` cluster whose scheduler runs in this process and
      whose workers are batch jobs, scaled to ``workers`` Dask workers (``ceil(workers /
      processes)`` jobs; one job when None). Needs ``sbatch`` / ``qsub`` on PATH.
    * an address (``tcp://host:8786``, or ``scheduler=``): a running scheduler, reached within
      the Dask setting ``distributed.comm.timeouts.connect`` (30 s). Its workers must have
      sciml installed, and their environment is theirs: start them with
      ``MALLOC_TRIM_THRESHOLD_`` unset for solver work (see the module docstring).

    Workers must see the files tasks name (a shared file system on a cluster). Everything
    started here is closed on exit.
    """
    spec = spec or cluster_spec(cluster, workers, scheduler=scheduler, settings=settings)
    import dask
    from distributed import Client

    if spec.kind == "address":
        try:
            client = Client(spec.address, timeout=dask.config.get("distributed.comm.timeouts.connect"))
        except (OSError, TimeoutError) as exc:
            raise ConfigError(
                f"cannot reach the Dask scheduler at {spec.address} ({type(exc).__name__}); "
                "check the address or start one with `dask scheduler`"
            ) from None
        with client:
            yield client
        return
    if spec.kind in SUBMIT:
        check_can_submit(spec)
        with jobqueue_cluster(spec) as jobs, Client(jobs) as client:
            if spec.workers is None:
                jobs.scale(jobs=1)
            else:
                jobs.scale(n=spec.workers)
            client.wait_for_workers(1)  # jobs wait in the queue; callers size their work on live workers
            yield client
        return
    with _local_cluster(spec.workers or os.cpu_count() or 1) as local, Client(local) as client:
        yield client


def finished_tasks(client, next_task: Callable[[], tuple | None], window: int | None = None) -> Iterator[tuple[Any, Any]]:
    """Run tasks on ``client`` and yield ``(tag, future)`` as each finishes (the one submit loop).

    ``next_task()`` returns the next ``(tag, fn, args, key)`` or None when there is none; at most
    ``window`` tasks are in flight (all at once when None), more are submitted as earlier ones are
    taken, so memory stays bounded whatever the number of tasks. A future is released once the
    caller has taken it (read its ``result()`` before asking for the next); tasks still in flight
    are cancelled when the caller stops.
    """
    from distributed import as_completed

    in_flight: dict[str, tuple[Any, Any]] = {}
    queue = as_completed()

    def fill() -> None:
        while window is None or len(in_flight) < window:
            task = next_task()
            if task is None:
                return
            tag, fn, args, key = task
            future = client.submit(fn, *args, key=key, pure=False)
            in_flight[future.key] = (future, tag)
            queue.add(future)

    fill()
    try:
        for future in queue:
            _, tag = in_flight.pop(future.key)
            yield tag, future
            future.release()
            fill()
    finally:
        client.cancel([future for future, _ in in_flight.values()])


def tasks_from(items: list, make: Callable[[Any], tuple]) -> Callable[[], tuple | None]:
    """A ``next_task`` for :func:`finished_tasks` over a fixed list: ``make(item) -> (tag, fn, args, key)``."""
    queue = list(reversed(items))
    return lambda: make(queue.pop()) if queue else None


def check_can_submit(spec: ClusterSpec) -> None:
    """For slurm/pbs: ConfigError unless this machine can submit jobs (``sbatch``/``qsub`` on PATH)."""
    kind = spec.kind
    command = SUBMIT.get(kind)
    if command is not None and shutil.which(command) is None:
        raise ConfigError(
            f"--cluster {kind} submits batch jobs with `{command}`, which is not on PATH; run on the "
            f"cluster's login node, or use --cluster local or a scheduler address (--dry-run shows the job script)"
        )


def _dask_jobqueue():
    """Import dask-jobqueue with Ctrl-C left as it was: its import sets SIGINT's handler to
    ``sys.exit()`` (dask_jobqueue/runner.py), which would make Ctrl-C end a sweep with exit 0."""
    handler = signal.getsignal(signal.SIGINT)
    try:
        import dask_jobqueue
    finally:
        if threading.current_thread() is threading.main_thread() and handler is not None:
            signal.signal(signal.SIGINT, handler)
    return dask_jobqueue


@contextlib.contextmanager
def jobqueue_cluster(spec: ClusterSpec):
    """The (unscaled) ``dask_jobqueue`` cluster of ``spec``: its scheduler runs in this process.

    Job settings not in ``spec.job`` come from dask-jobqueue's configuration
    (``jobqueue.slurm.*`` / ``jobqueue.pbs.*``, e.g. ``~/.config/dask/jobqueue.yaml``). sciml
    defaults ``processes`` to ``cores`` when neither sets it: one single-threaded worker per
    core, as the local cluster (sweep cells and solves use one thread each).
    """
    import dask

    cls = getattr(_dask_jobqueue(), {"slurm": "SLURMCluster", "pbs": "PBSCluster"}[spec.kind])
    kwargs = dict(spec.job)
    conf = lambda key: dask.config.get(f"jobqueue.{spec.kind}.{key}", None)  # noqa: E731
    cores = kwargs.get("cores", conf("cores"))
    if "processes" not in kwargs and conf("processes") is None and cores:
        kwargs["processes"] = cores
    prologue = kwargs.get("job_script_prologue", conf("job-script-prologue")) or []
    if isinstance(prologue, str):
        prologue = [prologue]
    kwargs["job_script_prologue"] = [*JOB_ENVIRONMENT, *prologue]
    kwargs.setdefault("silence_logs", "error")
    try:
        jobs = cls(**kwargs)
    except (ValueError, TypeError) as exc:
        raise ConfigError(
            f"cannot set up the {spec.kind} cluster: {str(exc).strip().splitlines()[0]}; set it in the cluster "
            f"section (e.g. cores: 8, memory: 16GB) or in dask-jobqueue's ~/.config/dask/jobqueue.yaml"
        ) from None
    try:
        yield jobs
    finally:
        jobs.close()


def job_script(spec: ClusterSpec) -> str:
    """The batch script one job of a ``slurm``/``pbs`` spec would run (nothing is submitted).

    Its worker command names a scheduler started here just to render it; a real run starts
    its own.
    """
    if spec.kind not in SUBMIT:
        raise ConfigError(f"a {spec.kind} cluster submits no jobs; job scripts are for --cluster slurm or pbs")
    with jobqueue_cluster(spec) as jobs:
        return jobs.job_script()


@contextlib.contextmanager
def _local_cluster(workers: int):
    import dask
    from distributed import LocalCluster

    # the nanny exports pre-spawn variables into *this* process's environment too, where
    # they would leak into later subprocesses (OMP_NUM_THREADS=1 ...): put it back after
    saved = dict(os.environ)
    try:
        with dask.config.set({f"{PRE_SPAWN_ENVIRON}.MALLOC_TRIM_THRESHOLD_": None, **WORKER_CONFIG}):
            cluster = LocalCluster(
                n_workers=workers, threads_per_worker=1, processes=True,
                dashboard_address=None, silence_logs=logging.ERROR,
                preload=[*dask.config.get("distributed.worker.preload", []), __name__],  # the user's first
            )
    except RuntimeError as exc:  # "Nanny failed to start."
        raise ConfigError(
            f"the {workers} local Dask workers did not start ({exc}); in a script, make the call under "
            "`if __name__ == \"__main__\":` (each worker process imports the main module again), "
            "or run without workers"
        ) from None
    finally:
        _restore_environ(saved)
    try:
        yield cluster
    finally:
        cluster.close()
        _restore_environ(saved)


def dask_setup(worker) -> None:
    """Worker preload of the local cluster: leave Ctrl-C and shutdown to the client process.

    A terminal sends Ctrl-C to every process of its group; the client stops the work, saves
    what is done and closes the cluster, so local workers ignore it rather than each dying
    with a traceback of its own. When the cluster closes, a heartbeat already on its way to
    the scheduler fails and distributed logs it as an ERROR with a traceback (seen twice in
    about 30 closes under load); a local worker's scheduler is gone only then, so that one
    message is dropped.
    """
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    logging.getLogger("distributed.worker").addFilter(_drop_heartbeat_at_shutdown)


def _drop_heartbeat_at_shutdown(record: logging.LogRecord) -> bool:
    return not record.getMessage().startswith("Failed to communicate with scheduler during heartbeat")


def _restore_environ(saved: dict[str, str]) -> None:
    for key in set(os.environ) - set(saved):
        del os.environ[key]
    os.environ.update(saved)
