"""Building a registered operator for a dataset, and choosing the device.

The model config is the preset, then sizes derived from the data (channels, dimension, sensors),
then the user's keys.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import torch
from torch import nn

from ..errors import ConfigError, ModelError
from .data import DatasetSignature

def _derived_config(cls: type, preset: dict, user: dict, sig: DatasetSignature) -> dict:
    """The model config: the preset, then sizes derived from the data, then the user's keys.

    Derived where the config class has the field: ``in_channels``, ``out_channels``, ``dim``
    and, for point operators, ``n_sensors`` (grid points) and ``coord_dim`` (spatial dims).
    """
    fields = {f.name: f for f in dataclasses.fields(cls.Config)}
    derived: dict[str, Any] = {"in_channels": sig.in_channels, "out_channels": sig.out_channels, "dim": len(sig.dims)}
    if getattr(cls, "input_kind", "grid") == "points":
        derived["n_sensors"] = math.prod(sig.shape)
        derived["coord_dim"] = len(sig.dims)
    out = dict(preset)
    out.update({k: v for k, v in derived.items() if k in fields})
    out.update(user)
    # a default per-axis mode tuple of another length than the data's dims: repeat its first entry
    modes = fields.get("modes")
    if modes is not None and "modes" not in out and "dim" in out:
        default = modes.default if modes.default is not dataclasses.MISSING else None
        if isinstance(default, tuple) and default and len(default) != out["dim"]:
            out["modes"] = (default[0],) * int(out["dim"])
    return out


def _check_channels(operator: nn.Module, sig: DatasetSignature) -> None:
    cfg = getattr(operator, "config", None)
    for key, have in (("in_channels", sig.in_channels), ("out_channels", sig.out_channels)):
        want = getattr(cfg, key, None)
        if want is not None and int(want) != have:
            side = "input" if key == "in_channels" else "output"
            raise ModelError(
                f"the {operator.name} model has {key}={want} but the data has {have} {side} channel(s) "
                f"({sig.describe()}); drop {key} from the model config to derive it from the data"
            )


def build_model(model_or_name: str | nn.Module, model_config: dict, sig: DatasetSignature, seed: int) -> nn.Module:
    """A registered operator for the data: a name or preset (built with ``model_config`` on top of
    the preset, channels derived from ``sig``, initialised from ``seed``) or a given operator."""
    from ..operators import base, presets

    if isinstance(model_or_name, nn.Module):
        operator = model_or_name
        if not getattr(operator, "name", "") or not hasattr(operator, "config_dict"):
            raise ModelError(
                f"train needs a registered sciml operator, got a {type(operator).__name__}; "
                "build it with sciml.operators.create or pass its name"
            )
    else:
        name, preset = presets.resolve(model_or_name)
        cls = base.get(name)
        config = _derived_config(cls, dict(preset), dict(model_config), sig)
        torch.manual_seed(seed)
        operator = base.create(name, **config)
    _check_channels(operator, sig)
    return operator
