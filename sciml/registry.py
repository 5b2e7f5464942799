"""A name -> class registry filled by a decorator, shared by generators, models and solvers.

Registries of an earlier layer are also filled by packages of later layers (a learned solver
registers its ``NAME:RUN`` solve method, its trainer and its run kind), which the earlier layer
must not import. Those packages are named as entry points of the group ``sciml.plugins`` in
``pyproject.toml`` and imported by :func:`load_plugins` on the first lookup, the way xarray finds
its backends: the dependency stays one-way in the code.
"""

from __future__ import annotations

import importlib
from typing import Callable, Generic, TypeVar

from .errors import UnknownNameError

T = TypeVar("T", bound=type)


class Registry(Generic[T]):
    """Classes registered under short names; ``loader`` imports the modules that register them.

    ``get`` raises :class:`UnknownNameError` listing the valid names (``kind`` names the thing:
    "model", "generator" ...).
    """

    def __init__(self, kind: str, loader: Callable[[], None]):
        self.kind = kind
        self._loader = loader
        self._entries: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Class decorator: register ``cls`` under ``name`` and set ``cls.name``."""

        def deco(cls: T) -> T:
            cls.name = name
            self._entries[name] = cls
            return cls

        return deco

    def available(self) -> list[str]:
        self._loader()
        return sorted(self._entries)

    def get(self, name: str) -> T:
        self._loader()
        if name not in self._entries:
            raise UnknownNameError(self.kind, name, list(self._entries))
        return self._entries[name]


PLUGIN_GROUP = "sciml.plugins"
_PLUGINS_LOADED: list[str] = []


def load_plugins() -> list[str]:
    """Import every package registered under the ``sciml.plugins`` entry-point group (once).

    Returns the names of the modules imported. A package whose import fails is a bug and raises.
    """
    if not _PLUGINS_LOADED:
        from importlib.metadata import entry_points

        modules = sorted({ep.value for ep in entry_points(group=PLUGIN_GROUP)})
        if not modules:
            from .errors import SciMLError

            raise SciMLError("sciml's plugin entry points are missing (the package metadata is stale or absent); "
                             "reinstall it with `pip install -e .` from the source folder")
        for module in modules:
            importlib.import_module(module)
        _PLUGINS_LOADED.extend(modules)
    return list(_PLUGINS_LOADED)
