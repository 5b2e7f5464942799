"""One error family. The CLI turns any :class:`SciMLError` into one line and exit code 1.

Messages say what was expected, what was found and what to do about it.
Anything that is not a ``SciMLError`` is a bug and keeps its traceback.
"""

from __future__ import annotations


class SciMLError(Exception):
    """Base class of every error a user can cause and fix."""


class ConfigError(SciMLError):
    """A configuration value or key is invalid (unknown key, wrong type, out of range)."""


class DataError(SciMLError):
    """A data file is missing, corrupt, or not what the operation needs."""


class UnknownNameError(SciMLError):
    """A registry lookup failed; the message lists the valid names."""

    def __init__(self, kind: str, name: str, valid: list[str]):
        self.kind, self.name, self.valid = kind, name, sorted(valid)
        super().__init__(f"unknown {kind} {name!r}; valid {kind}s are: {', '.join(self.valid)}")


class ModelError(SciMLError):
    """A model cannot be built or applied as asked (shape mismatch, resolution too small...)."""


class CheckpointError(SciMLError):
    """A run directory or checkpoint is missing, corrupt or of another architecture."""


#: exit code of a command stopped by a job signal (SIGTERM, SIGUSR1) after saving its work
#: (EX_TEMPFAIL: "try again"); a requeued job continues with ``--resume``
PREEMPTED_EXIT = 75


class Preempted(SciMLError):
    """A job signal (SIGTERM or SIGUSR1, e.g. SLURM's time-limit warning) stopped the work after
    it was saved; the message says how to continue. The CLI exits with :data:`PREEMPTED_EXIT`."""

    exit_code = PREEMPTED_EXIT
