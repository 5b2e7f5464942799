"""Atomic file writes: write to a temporary file in the same folder, then rename into place."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Iterator


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success it is renamed to ``path``.

    On an exception the temporary file is removed and ``path`` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def atomic_write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


@contextlib.contextmanager
def output_lock(path: str | Path, what: str = "output") -> Iterator[Path]:
    """Hold an exclusive lock on ``path`` (a file or a run folder) while writing it.

    The lock is ``flock`` on a sibling file ``.<name>.lock`` (which records the holder's pid and
    command line): the kernel releases it when the holder exits, also on SIGKILL, so a killed
    run never leaves a stale lock behind. A second process asking for the same ``path`` gets
    :class:`~sciml.errors.ConfigError` at once, one line naming the holder. On systems without
    ``fcntl`` (Windows) no lock is taken.
    """
    import sys

    from .errors import ConfigError

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = path.parent / f".{path.name}.lock"
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not on POSIX
        yield lock
        return
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.pread(fd, 512, 0).decode(errors="replace").strip() or "another process"
            raise ConfigError(
                f"{path} is being written by another sciml process ({holder}); wait for it to finish "
                f"or choose another {what}"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()}: {' '.join(sys.argv)[:300]}".encode(), 0)
        try:
            yield lock
        finally:
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def read_text(path: str | Path) -> str:
    """The text of ``path`` (UTF-8); a file that is not text is a one-line
    :class:`~sciml.errors.DataError` naming it, not a UnicodeDecodeError traceback."""
    from .errors import DataError

    path = Path(path)
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text (byte {exc.start}); the file is damaged, restore or regenerate it") from None


def json_ready(obj):
    """``obj`` with NaN/Inf floats as None (JSON has neither) and numpy scalars as Python numbers."""
    import math

    import numpy as np

    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: json_ready(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_ready(v) for v in obj]
    if isinstance(obj, np.generic):
        return json_ready(obj.item())
    return obj
