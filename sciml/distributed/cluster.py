"""Dask clients for embarrassingly parallel work (generation, batch evaluation, sweeps).

:func:`dask_client` is the one place that decides where tasks run: a ``LocalCluster`` of
worker processes on this machine, or an existing scheduler given by its address. Callers
submit plain picklable functions and never see the cluster type.

Local workers are single-threaded processes (NumPy/SciPy/pyamg solves hold the GIL for
much of their time, and one thread per process matches the one-thread BLAS the solvers
ask for). Dask sets ``MALLOC_TRIM_THRESHOLD_=65536`` in every worker it spawns; with it,
pyamg/scipy solves in 2 workers ran 2.3x slower than in plain processes (TARGETS.md,
measured pitfalls), so local workers are started without it.
"""

from __future__ import annotations

import contextlib
import logging
import numbers
import os
import signal
import threading
from typing import TYPE_CHECKING, Iterator

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


def check_workers(workers: int | None, scheduler: str | None) -> None:
    """Validate a ``workers``/``scheduler`` pair (one clear ConfigError line each)."""
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, numbers.Integral) or workers < 1):
        raise ConfigError(f"workers must be a positive integer, got {workers!r}")
    if scheduler is not None:
        if workers is not None and workers != 1:
            raise ConfigError(
                f"give either workers ({workers}) or a scheduler address ({scheduler}), not both: "
                "an existing scheduler brings its own workers"
            )
        if not isinstance(scheduler, str) or "://" not in scheduler:
            raise ConfigError(f"scheduler must be an address such as tcp://10.0.0.1:8786, got {scheduler!r}")


def parallel(workers: int | None, scheduler: str | None) -> bool:
    """Whether ``workers``/``scheduler`` ask for Dask (``workers`` 1 or None runs in-process)."""
    check_workers(workers, scheduler)
    return scheduler is not None or (workers or 1) > 1


@contextlib.contextmanager
def dask_client(workers: int | None = None, scheduler: str | None = None) -> Iterator[Client]:
    """A ``distributed.Client``: on ``scheduler`` if given, else on a new ``LocalCluster``.

    Parameters
    ----------
    workers : worker processes of the local cluster (default: the CPU count), one thread each.
    scheduler : address of a running scheduler (``tcp://host:8786``), reached within the Dask
        setting ``distributed.comm.timeouts.connect`` (30 s). Its workers must have sciml
        installed, and their environment is theirs: start them with ``MALLOC_TRIM_THRESHOLD_``
        unset for solver work (see the module docstring).

    The local cluster (if any) and the client are closed on exit.
    """
    check_workers(workers, scheduler)
    import dask
    from distributed import Client

    if scheduler is not None:
        try:
            client = Client(scheduler, timeout=dask.config.get("distributed.comm.timeouts.connect"))
        except (OSError, TimeoutError) as exc:
            raise ConfigError(
                f"cannot reach the Dask scheduler at {scheduler} ({type(exc).__name__}); "
                "check the address or start one with `dask scheduler`"
            ) from None
        with client:
            yield client
        return
    with _local_cluster(workers or os.cpu_count() or 1) as cluster, Client(cluster) as client:
        yield client


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
