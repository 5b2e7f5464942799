"""Mesh-free solvers of PDE test problems (no sparse system): GP-HM and the DeepXDE PINN.

>>> from sciml import meshfree
>>> meshfree.available()                        # ['gp', 'gp-stm', 'pinn']
>>> meshfree.problems()                         # names of the GP-HM test problems
>>> r = meshfree.solve("poisson1d-sin100", method="gp", iterations=2000)   # -> GPResult / PINNResult

Each method is a function ``fn(problem, **options)`` registered under a short name with
:func:`register`; ``solve`` looks the problem and the method up (unknown names list the valid ones).
"""

from __future__ import annotations

from typing import Any, Callable

from ..errors import UnknownNameError
from .problems import PROBLEMS, Problem, get_problem

_METHODS: dict[str, tuple[str, Callable[..., Any]]] = {}


def register(name: str, label: str):
    """Decorator: register ``fn(problem, **options)`` as mesh-free method ``name`` (``label`` for tables)."""

    def deco(fn: Callable[..., Any]) -> Callable[..., Any]:
        _METHODS[name] = (label, fn)
        return fn

    return deco


def _load() -> None:
    from . import gp, pinn  # noqa: F401  (each registers its methods)


def available() -> list[str]:
    """Names of the mesh-free methods."""
    _load()
    return sorted(_METHODS)


def label(method: str) -> str:
    """The method's name in tables and figures (``GP-HM-GM``, ``PINN (DeepXDE)``, ...)."""
    _load()
    if method not in _METHODS:
        raise UnknownNameError("mesh-free method", method, list(_METHODS))
    return _METHODS[method][0]


def problems() -> list[str]:
    """Names of the test problems."""
    return sorted(PROBLEMS)


def solve(problem: str | Problem, method: str = "gp", **options: Any):
    """Solve test ``problem`` with mesh-free ``method``; ``options`` go to the method
    (``iterations``, ``n_col``, ``lr``, ...; None values take the method's default)."""
    problem = get_problem(problem) if isinstance(problem, str) else problem
    label(method)  # validates the name
    return _METHODS[method][1](problem, **{k: v for k, v in options.items() if v is not None})


__all__ = ["PROBLEMS", "Problem", "available", "get_problem", "label", "problems", "register", "solve"]
