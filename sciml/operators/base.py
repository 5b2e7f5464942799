"""Model registry and the small base class every neural operator derives from.

Each model class has a frozen config dataclass (``Config``), registers under a short name,
declares its input kind (``"grid"`` or ``"points"``) and can build example configs and inputs,
so one test covers the whole registry.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import torch
from torch import nn

from ..config import from_dict, to_dict
from ..errors import UnknownNameError

_REGISTRY: dict[str, type["Operator"]] = {}


def register(name: str):
    """Class decorator: register an :class:`Operator` subclass under ``name``."""

    def deco(cls: type[Operator]) -> type[Operator]:
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return deco


def _load_all() -> None:
    # importing the model modules fills the registry
    from . import deeponet, fno  # noqa: F401


def available() -> list[str]:
    """Names of the registered models."""
    _load_all()
    return sorted(_REGISTRY)


def get(name: str) -> type["Operator"]:
    _load_all()
    if name not in _REGISTRY:
        raise UnknownNameError("model", name, list(_REGISTRY))
    return _REGISTRY[name]


class Operator(nn.Module):
    """Base of all neural operators.

    Grid operators: ``forward(x: (B, C_in, *S)) -> (B, C_out, *S)``.
    Point operators: ``forward(v: (B, N_in, C_in), x_in: (B, N_in, d), x_out: (B, N_out, d))
    -> (B, N_out, C_out)``.
    """

    name: ClassVar[str] = ""
    Config: ClassVar[type]
    input_kind: ClassVar[str] = "grid"

    def __init__(self, config: Any):
        super().__init__()
        self.config = config

    @classmethod
    def from_config(cls, config: dict | Any) -> "Operator":
        if not dataclasses.is_dataclass(config):
            config = from_dict(cls.Config, config, where=f"{cls.name} model config")
        return cls(config)

    def config_dict(self) -> dict:
        return to_dict(self.config)

    @classmethod
    def example_configs(cls) -> list[Any]:
        """Small configs for tests (one per supported dimension or variant)."""
        return [cls.Config()]

    def example_input(self, batch: int = 2) -> tuple[torch.Tensor, ...]:
        """Inputs for ``forward`` of a small problem this model accepts."""
        raise NotImplementedError  # every registered model overrides it (tested)


def create(name_or_model: str | Operator, **config: Any) -> Operator:
    """Build a model from its registry name and config keywords (or pass a model through)."""
    if isinstance(name_or_model, nn.Module):
        return name_or_model
    return get(name_or_model).from_config(config)
