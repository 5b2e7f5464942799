"""Runtime helpers, one of each: progress bars (:func:`progress`), thread limits
(:func:`limit_threads`), device choice (:func:`device`), and the one place that imports DeepXDE
(lazily, with its PyTorch backend and without its noise).

DeepXDE picks its backend at import time from ``DDE_BACKEND`` (else from ``~/.deepxde/config.json``,
which it may also write), prints a banner, and on a CUDA machine calls
``torch.set_default_device("cuda")`` for the whole process. Importing it through
:func:`load_deepxde` forces the PyTorch backend (so nothing is read from or written to the home
folder), swallows the banner and restores torch's default device and dtype. Every sciml module
that needs DeepXDE (DeepONet, the PINN solver) goes through this module.
"""

from __future__ import annotations

import contextlib
import io
import os
import signal
import sys
import threading
from types import ModuleType

_MODULE: ModuleType | None = None


def load_deepxde() -> ModuleType:
    """The ``deepxde`` package (imported on first call, then cached)."""
    global _MODULE
    if _MODULE is None:
        import torch

        # set, not setdefault: another backend left in the environment would break the networks
        os.environ["DDE_BACKEND"] = "pytorch"
        device, dtype = torch.get_default_device(), torch.get_default_dtype()
        sink = io.StringIO()
        try:
            with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
                import deepxde
                import deepxde.nn.pytorch  # noqa: F401
        finally:
            if torch.get_default_device() != device:
                # None drops the device mode entirely (a cpu mode would slow every torch call)
                torch.set_default_device(None if device.type == "cpu" else device)
            torch.set_default_dtype(dtype)
        _MODULE = deepxde
    return _MODULE


def deepxde_nn() -> ModuleType:
    """``deepxde.nn.pytorch``: DeepXDE's PyTorch networks (``FNN``, ``DeepONetCartesianProd``, ...)."""
    return load_deepxde().nn.pytorch


# ----------------------------------------------------------------------------- progress bars


def _noop(n: int = 1, stage: str | None = None, **fields) -> None:
    return None


@contextlib.contextmanager
def progress(total: int | dict[str, int], label: str = "", *, enabled: bool = True, text: str = "",
             fields: dict | None = None, completed: int = 0, counts: bool = True):
    """The one progress display of sciml: rich bars on stderr, gone when done; yields ``advance``.

    ``total``: the count of one bar, or ``{stage: (label, count)}``-like ``{label: count}`` for one
    bar per stage (CORAL's two stages). ``text``: a rich format of the task fields shown after the
    bar (``"loss {task.fields[loss]}"``), ``fields`` their first values, ``completed`` where the
    bar starts (a resumed run). ``advance(n=1, stage=None, **fields)`` moves the bar (of ``stage``)
    by ``n`` and updates the fields. Disabled (``enabled`` false) it yields a no-op, so callers never
    branch; nothing below the CLI writes to the terminal but through this.
    """
    if not enabled:
        yield _noop
        return
    from rich.console import Console
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                               TimeRemainingColumn)

    columns = [TextColumn("{task.description}"), BarColumn(), *([MofNCompleteColumn()] if counts else []),
               *([TextColumn(text)] if text else []), TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn()]
    stages = total if isinstance(total, dict) else {label: total}
    with Progress(*columns, console=Console(stderr=True), transient=True) as bar:
        tasks = {name: bar.add_task(name, total=max(int(count), 1), completed=completed, **(fields or {}))
                 for name, count in stages.items()}
        first = next(iter(tasks))

        def advance(n: int = 1, stage: str | None = None, **new_fields) -> None:
            bar.update(tasks[stage or first], advance=n, **new_fields)

        yield advance


# ----------------------------------------------------------------------------- threads and devices


@contextlib.contextmanager
def limit_threads(torch_threads: int | None = None, blas: int | None = None):
    """Run the block with ``torch_threads`` torch CPU threads and ``blas`` BLAS threads (None: as they
    are), restoring both after it.

    BLAS is limited through ``threadpoolctl``: Krylov methods and AMG cycles call level-1 BLAS (dot,
    norm) on long vectors, and on a loaded 2-core machine each call waited for a busy core: a dot of
    12 000 entries took 7.7 ms instead of 4 us, AMG-PCG at 106^2 ran 3.4x slower with the default.
    """
    with contextlib.ExitStack() as stack:
        if torch_threads:  # torch is imported only when its threads change (solvers do not need it)
            import torch

            stack.callback(torch.set_num_threads, torch.get_num_threads())
            torch.set_num_threads(int(torch_threads))
        if blas is not None:
            stack.enter_context(_blas_controller().limit(limits=int(blas), user_api="blas"))
        yield


_CONTROLLER: list = []


def _blas_controller():
    if not _CONTROLLER:  # inspecting the loaded libraries once is the slow part
        from threadpoolctl import ThreadpoolController

        _CONTROLLER.append(ThreadpoolController())
    return _CONTROLLER[0]


def device(name=None):
    """The torch device for ``auto`` (CUDA when available), ``cpu``, ``cuda`` or ``cuda:N``; one clear
    error when CUDA is asked for and absent or the name is unknown."""
    import torch

    from .errors import ConfigError

    name = "auto" if name is None else str(name)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device {name} requested but no CUDA GPU is available; use --device cpu (or auto)")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"unknown device {name!r}; use auto, cpu or cuda") from None
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise ConfigError(f"device {name} requested but {torch.cuda.device_count()} CUDA GPU(s) are visible; "
                          "use cuda (the first) or --device cpu")
    return dev


# ----------------------------------------------------------------------------- job signals

#: the signals a batch system sends before it stops a job: SIGTERM (SLURM/PBS at the time limit,
#: or ``scancel``) and SIGUSR1 (``sbatch --signal=USR1@120``: a warning ahead of the limit)
JOB_SIGNALS = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGUSR1") if hasattr(signal, name))


class JobSignal(KeyboardInterrupt):
    """Raised by :func:`job_signals` in ``raise`` mode: stops the program as Ctrl-C does (so every
    ``KeyboardInterrupt`` path flushes and keeps what is done), and says which signal came."""

    def __init__(self, signum: int):
        self.signum = int(signum)
        self.name = signal.Signals(signum).name
        super().__init__(f"stopped by {self.name}")


class _SignalState:
    def __init__(self) -> None:
        self.signum: int | None = None

    @property
    def name(self) -> str | None:
        return None if self.signum is None else signal.Signals(self.signum).name


_SIGNAL_STATES: list = []  # (mode, state) of the job_signals blocks in force, innermost last


@contextlib.contextmanager
def job_signals(mode: str = "flag"):
    """Catch SIGTERM and SIGUSR1 in the block. ``flag``: only record the signal (``state.signum``)
    for the work to stop at its next safe point; ``raise``: raise :class:`JobSignal` at once, like
    Ctrl-C, and record Ctrl-C (SIGINT, when Python's default handler is in place) too, so that
    either one, if raised where it is lost, is raised again at the next check. A ``flag`` block
    inside another shares its state (a signal that came before it counts). Outside the main
    thread (where Python cannot set handlers) nothing is installed."""
    if _SIGNAL_STATES and mode == "flag" and _SIGNAL_STATES[-1][0] == "flag":
        yield _SIGNAL_STATES[-1][1]
        return
    state = _SignalState()
    if threading.current_thread() is not threading.main_thread():
        yield state
        return

    def handler(signum, frame):
        if state.signum is None:
            state.signum = signum
        if mode == "raise":
            raise _interrupt(signum)

    # An interrupt raised where Python cannot pass it on (a weakref callback, a __del__) would be
    # printed as "Exception ignored" and lost; the signal is recorded, so say nothing there and
    # raise it at the next check (raise_pending) or when the block ends.
    hook = sys.unraisablehook

    def unraisable(info):
        if not (isinstance(info.exc_value, KeyboardInterrupt) and state.signum is not None):
            hook(info)

    taken = JOB_SIGNALS
    if mode == "raise" and signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        taken = (signal.SIGINT, *JOB_SIGNALS)
    previous = {sig: signal.signal(sig, handler) for sig in taken}
    _SIGNAL_STATES.append((mode, state))
    if mode == "raise":
        sys.unraisablehook = unraisable
    try:
        yield state
        if mode == "raise" and state.signum is not None:
            raise _interrupt(state.signum)
    finally:
        _SIGNAL_STATES.pop()
        sys.unraisablehook = hook
        for sig, old in previous.items():
            signal.signal(sig, old)


def _interrupt(signum: int) -> KeyboardInterrupt:
    """Ctrl-C stays a plain ``KeyboardInterrupt``; a job signal is a :class:`JobSignal`."""
    return KeyboardInterrupt() if signum == signal.SIGINT else JobSignal(signum)


def raise_pending() -> None:
    """At a safe point of long work: raise :class:`JobSignal` (``KeyboardInterrupt`` for Ctrl-C)
    if a ``raise``-mode :func:`job_signals` block in force recorded a signal whose exception got
    lost."""
    for mode, state in _SIGNAL_STATES:
        if mode == "raise" and state.signum is not None:
            raise _interrupt(state.signum)
