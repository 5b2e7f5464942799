"""A name -> class registry filled by a decorator, shared by generators, models and solvers."""

from __future__ import annotations

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
