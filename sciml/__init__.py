"""sciml: a workbench for operator learning and scientific ML.

Submodules are imported lazily so ``import sciml`` and the CLI start fast:
``sciml.datasets``, ``sciml.operators``, ``sciml.solvers``, ``sciml.training``,
``sciml.evaluation``.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_SUBMODULES = ("datasets", "operators", "solvers", "training", "learned", "meshfree", "evaluation", "distributed", "runs", "runtime", "plots", "errors", "config", "testing", "workflow")

__all__ = ["__version__", *_SUBMODULES]


def __getattr__(name: str):
    if name in _SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module 'sciml' has no attribute {name!r}")
