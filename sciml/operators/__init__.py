"""Neural operators: a registry of models, each with a frozen config dataclass, and named presets.

``available()`` lists the models, ``presets.presets()`` the presets; ``create(name, **config)``
builds either. Model modules (and DeepXDE) are imported on first use.
"""

from . import presets
from .adapters import PointsOnGrid, as_grid_model
from .base import (
    Operator,
    available,
    create,
    get,
    load_safetensors_state,
    register,
    save_safetensors_state,
    state_to_safetensors,
)

__all__ = [
    "Operator",
    "PointsOnGrid",
    "as_grid_model",
    "available",
    "create",
    "get",
    "load_safetensors_state",
    "presets",
    "register",
    "save_safetensors_state",
    "state_to_safetensors",
]
