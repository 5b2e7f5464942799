"""Model registry and the small base class every neural operator derives from.

Each model class has a frozen config dataclass (``Config``), registers under a short name,
declares its input kind (``"grid"`` or ``"points"``) and can build example configs and inputs,
so one test covers the whole registry.
"""

from __future__ import annotations

import abc

import dataclasses
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from ..config import from_dict, to_dict
from ..registry import Registry
from ..errors import CheckpointError, ConfigError

def _load_all() -> None:
    # importing the model modules fills the registry
    from . import coral, deeponet, fno, gno, lsm, mgno, unet  # noqa: F401


_MODELS: Registry = Registry("model", _load_all)
register = _MODELS.register
available = _MODELS.available
get = _MODELS.get


class Operator(nn.Module, metaclass=abc.ABCMeta):
    """Base of all neural operators.

    Grid operators: ``forward(x: (B, C_in, *S)) -> (B, C_out, *S)``.
    Point operators: ``forward(v: (B, N_in, C_in), x_in: (B, N_in, d), x_out: (B, N_out, d))
    -> (B, N_out, C_out)``.
    """

    name: ClassVar[str] = ""
    Config: ClassVar[type]
    input_kind: ClassVar[str] = "grid"
    #: whether a trained model can be applied on another grid (or point set) than it was trained on;
    #: False for models with fixed sensors (DeepONet's branch net)
    resolution_independent: ClassVar[bool] = True

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

    @abc.abstractmethod
    def example_input(self, batch: int = 2) -> tuple[torch.Tensor, ...]:
        """Inputs for ``forward`` of a small problem this model accepts."""
        ...


def create(name_or_model: str | Operator, **config: Any) -> Operator:
    """Build a model from a registry name or a named preset, with config keywords on top.

    ``create("fno", modes=(16, 16))``; ``create("fno-darcy-paper", width=64)`` (the preset's
    config with ``width`` overridden). A model object is passed through unchanged.
    """
    if isinstance(name_or_model, nn.Module):
        if config:
            raise ConfigError(
                f"config keywords {sorted(config)} were given with an already built {type(name_or_model).__name__}; "
                "pass a model name instead, or build the model with them"
            )
        return name_or_model
    from . import presets

    name, preset = presets.resolve(name_or_model)
    return get(name).from_config({**preset, **config})


# ----------------------------------------------------------------------------- safetensors

_COMPLEX = ".__complex__"  # key suffix of a complex tensor stored as its (..., 2) real view


def state_to_safetensors(model: nn.Module) -> dict[str, torch.Tensor]:
    """The model's ``state_dict`` as tensors ``safetensors.torch.save_file`` accepts.

    Each tensor is detached, moved to the CPU and copied (no shared storage, contiguous);
    complex tensors become their real view ``(..., 2)`` under the key ``name + ".__complex__"``
    so that files stay readable by every safetensors version and by frameworks without complex
    dtypes. :func:`load_safetensors_state` undoes this.
    """
    out: dict[str, torch.Tensor] = {}
    for key, value in model.state_dict().items():
        value = value.detach().to("cpu")
        if value.is_complex():
            out[key + _COMPLEX] = torch.view_as_real(value.resolve_conj()).clone().contiguous()
        else:
            out[key] = value.clone().contiguous()
    return out


def save_safetensors_state(model: nn.Module, path: str | Path, metadata: dict[str, str] | None = None) -> None:
    """Write :func:`state_to_safetensors` of ``model`` to ``path`` atomically."""
    from safetensors.torch import save_file

    from ..io import atomic_path

    with atomic_path(path) as tmp:
        save_file(state_to_safetensors(model), str(tmp), metadata=metadata)


def load_safetensors_state(model: nn.Module, path: str | Path | dict[str, torch.Tensor]) -> nn.Module:
    """Load weights written by :func:`save_safetensors_state` (or its dict) into ``model``.

    Raises CheckpointError naming the first missing, unexpected or mis-shaped tensor.
    """
    if isinstance(path, dict):
        tensors = path
    else:
        from safetensors.torch import load_file

        if not Path(path).is_file():
            raise CheckpointError(f"weights file {str(path)!r} not found; check the path")
        tensors = load_file(str(path))
    state = {
        (k[: -len(_COMPLEX)] if k.endswith(_COMPLEX) else k): (torch.view_as_complex(v) if k.endswith(_COMPLEX) else v)
        for k, v in tensors.items()
    }
    expected = model.state_dict()
    where = "the file" if isinstance(path, dict) else str(path)
    for key, value in expected.items():
        if key not in state:
            raise CheckpointError(f"{where} lacks weight {key!r} that this model needs; it holds another architecture")
        if state[key].shape != value.shape:
            raise CheckpointError(
                f"{where} has {key!r} of shape {tuple(state[key].shape)}, this model needs {tuple(value.shape)}; "
                "it holds another architecture"
            )
    extra = sorted(set(state) - set(expected))
    if extra:
        raise CheckpointError(f"{where} has weight {extra[0]!r} that this model lacks; it holds another architecture")
    model.load_state_dict(state, strict=True)
    return model
