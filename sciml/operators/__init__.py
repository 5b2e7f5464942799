"""Neural operators: a registry of models, each with a frozen config dataclass."""

from .base import Operator, available, create, get, register

__all__ = ["Operator", "available", "create", "get", "register"]
