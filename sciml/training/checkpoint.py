"""Run directories: safe checkpoints that never unpickle anything.

A run directory holds

* ``config.yaml``: resolved training options, model config and data paths;
* ``model.safetensors``: the model weights (``model.<name>``, complex tensors as real views, see
  :func:`sciml.operators.base.state_to_safetensors`) and the normaliser statistics
  (``normaliser.inputs.mean`` ...);
* ``model.json``: model name and config, input kind, normaliser kind, dataset signature,
  sciml version, epoch; the model is rebuilt from it alone;
* ``train_state.pt``: optimiser and scheduler state dicts, epoch, RNG states and best loss,
  written with ``torch.save`` and read with ``torch.load(weights_only=True)``;
* ``metrics.jsonl``: one JSON line per epoch.

Every file is written atomically (temporary file + rename).
"""

from __future__ import annotations

import datetime as _dt
import json
import pickle
import random
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..errors import CheckpointError, ConfigError, ModelError, SciMLError, UnknownNameError
from ..io import atomic_path, atomic_write_text, read_text
from .data import DatasetSignature, GridData
from .normalisers import DataNormaliser

MODEL_JSON = "model.json"
WEIGHTS = "model.safetensors"
TRAIN_STATE = "train_state.pt"
CONFIG = "config.yaml"
METRICS = "metrics.jsonl"
FORMAT = 1


@dataclass
class RunInfo:
    """What :func:`load_run` knows about a run besides the weights."""

    run_dir: Path
    model_name: str
    model_config: dict
    input_kind: str
    normaliser: DataNormaliser
    signature: DatasetSignature
    epoch: int
    sciml_version: str
    config: dict = field(default_factory=dict)

    @property
    def resolution_independent(self) -> bool:
        """Whether the model may be applied on another grid than it was trained on (the model
        class's ``resolution_independent``: False for fixed-sensor models such as DeepONet)."""
        from ..operators import base

        return bool(getattr(base.get(self.model_name), "resolution_independent", self.input_kind == "grid"))


def grid_name(shape) -> str:
    """``"85x85"`` for a grid shape."""
    return "x".join(str(s) for s in shape)


def normaliser_for(info: RunInfo, data: GridData) -> tuple[DataNormaliser, list[str]]:
    """The run's normaliser for the grid of ``data`` and notes on what was adapted.

    Same grid: as trained. Another grid: allowed for resolution-independent (grid) operators, the
    pointwise statistics are interpolated to the new grid; point operators with fixed sensors
    raise :class:`ModelError`.
    """
    sig, new = info.signature, data.signature
    if new.shape == sig.shape:
        return info.normaliser, []
    if not info.resolution_independent:
        raise ModelError(
            f"{info.model_name} reads its inputs at fixed sensors and needs the training resolution "
            f"{grid_name(sig.shape)}, got {grid_name(new.shape)} in {data.path}; evaluate it on data of that resolution"
        )
    notes = [f"evaluated at {grid_name(new.shape)}, trained at {grid_name(sig.shape)}"]
    if info.normaliser.shape is None:
        return info.normaliser, notes
    old_c = sig.coords or None
    new_c = new.coords or None
    if old_c is None or new_c is None:
        old_c = new_c = None
    norm = info.normaliser.resample(new.shape, old_c, new_c)
    how = "at the new grid's coordinates" if old_c else "(bilinear, both grid ends aligned)"
    notes.append(
        f"pointwise normaliser statistics interpolated linearly from {grid_name(sig.shape)} to {grid_name(new.shape)} {how}"
    )
    return norm, notes


# ----------------------------------------------------------------------------- model files


def as_grid(operator: nn.Module) -> nn.Module:
    """The grid callable ``(B, C_in, *S) -> (B, C_out, *S)`` of an operator.

    Point operators (``input_kind == "points"``) are wrapped with
    :func:`sciml.operators.adapters.as_grid_model`; grid operators are returned as they are.
    """
    if getattr(operator, "input_kind", "grid") == "points":
        from ..operators.adapters import as_grid_model

        return as_grid_model(operator)
    return operator


def save_model(
    run_dir: str | Path,
    operator: nn.Module,
    *,
    normaliser: DataNormaliser,
    signature: DatasetSignature,
    epoch: int,
    extra: dict | None = None,
) -> None:
    """Write ``model.safetensors`` and ``model.json`` for a registered operator."""
    from safetensors.torch import save_file

    from .. import __version__
    from ..operators.base import state_to_safetensors

    run_dir = Path(run_dir)
    name = getattr(operator, "name", "")
    if not name or not hasattr(operator, "config_dict"):
        raise CheckpointError(
            f"cannot checkpoint a {type(operator).__name__}: only registered sciml operators can be saved "
            "(build it with sciml.operators.create)"
        )
    tensors = {f"model.{k}": v for k, v in state_to_safetensors(operator).items()}
    tensors.update({f"normaliser.{k}": v.contiguous().clone() for k, v in normaliser.state().items()})
    with atomic_path(run_dir / WEIGHTS) as tmp:
        save_file(tensors, str(tmp), metadata={"format": "sciml", "model": name})
    meta = {
        "format": FORMAT,
        "model": name,
        "config": operator.config_dict(),
        "input_kind": getattr(operator, "input_kind", "grid"),
        "normaliser": normaliser.meta(),
        "signature": signature.to_dict(),
        "epoch": int(epoch),
        "sciml_version": __version__,
        "saved": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        **(extra or {}),
    }
    atomic_write_text(run_dir / MODEL_JSON, _json(meta))


def _json(meta: dict) -> str:
    """Indented JSON with lists of numbers kept on one line (coordinates stay readable)."""
    text = json.dumps(meta, indent=2)
    flat = re.compile(r"\[\s+([-+0-9.eE,\s]+?)\s+\]")
    return flat.sub(lambda m: "[" + ", ".join(v.strip() for v in m.group(1).split(",")) + "]", text) + "\n"


def read_model_json(run_dir: str | Path) -> dict:
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise CheckpointError(f"run directory {str(run_dir)!r} not found; train a model with `sciml train --out {run_dir}`")
    path = run_dir / MODEL_JSON
    if not path.is_file():
        raise CheckpointError(
            f"{run_dir} is not a finished run (no {MODEL_JSON}); train into it or point to another run directory"
        )
    try:
        meta = json.loads(read_text(path))
    except (ValueError, UnicodeDecodeError):
        raise CheckpointError(f"{path} is not valid JSON; the run is damaged, retrain it") from None
    missing = [k for k in ("model", "config", "signature") if k not in meta] if isinstance(meta, dict) else ["model"]
    if missing:
        raise CheckpointError(f"{path} lacks {', '.join(missing)}; it was not written by sciml, retrain the model")
    return meta


def build_operator(name: str, config: dict, where: str) -> nn.Module:
    """Rebuild a registered operator from its name and config dict."""
    from ..operators import base

    try:
        cls = base.get(name)
    except UnknownNameError as exc:
        raise CheckpointError(f"{where} names an unknown model {name!r}; valid models are: {', '.join(exc.valid)}") from None
    try:
        return cls.from_config(dict(config))
    except (ConfigError, SciMLError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{where} holds a {name} config that cannot be built ({exc}); the run is damaged, retrain it") from None


def _check_architecture(operator: nn.Module, got: dict[str, torch.Tensor], path: Path, name: str) -> None:
    """Raise CheckpointError naming the first tensor that does not fit the rebuilt operator.

    Both sides are compared in their stored form (:func:`~sciml.operators.base.state_to_safetensors`).
    """
    from ..operators.base import state_to_safetensors

    expected = state_to_safetensors(operator)
    fix = f"{MODEL_JSON} and {WEIGHTS} do not belong together, restore both from one run or retrain"
    for key, value in expected.items():
        if key not in got:
            raise CheckpointError(
                f"checkpoint is of another architecture: {path.name} lacks {key!r}, which the {name} config "
                f"in {MODEL_JSON} needs; {fix}"
            )
        if tuple(got[key].shape) != tuple(value.shape) or got[key].dtype.is_complex != value.dtype.is_complex:
            raise CheckpointError(
                f"checkpoint is of another architecture: {path.name} has {key!r} of shape {tuple(got[key].shape)}, "
                f"the {name} config in {MODEL_JSON} needs shape {tuple(value.shape)}; {fix}"
            )
    extra = sorted(set(got) - set(expected))
    if extra:
        raise CheckpointError(
            f"checkpoint is of another architecture: {path.name} has {extra[0]!r}, which the {name} config "
            f"in {MODEL_JSON} does not have; {fix}"
        )


def _read_weights(path: Path) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    if not path.is_file():
        raise CheckpointError(f"{path} not found; the run has no saved weights, train it first")
    try:
        return load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"{path} is not a readable safetensors file ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__}); the run is damaged, retrain it") from None


def load_operator(run_dir: str | Path) -> tuple[nn.Module, RunInfo]:
    """The unwrapped operator (eval mode, CPU) and its :class:`RunInfo`."""
    import yaml

    from ..operators.base import load_safetensors_state

    run_dir = Path(run_dir)
    meta = read_model_json(run_dir)
    name = str(meta["model"])
    operator = build_operator(name, meta["config"], str(run_dir / MODEL_JSON))
    tensors = _read_weights(run_dir / WEIGHTS)
    weights = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
    _check_architecture(operator, weights, run_dir / WEIGHTS, name)
    load_safetensors_state(operator, weights)
    operator.eval()
    norm_state = {k[len("normaliser."):]: v for k, v in tensors.items() if k.startswith("normaliser.")}
    normaliser = DataNormaliser.from_state(meta.get("normaliser", {"kind": "none"}), norm_state)
    try:
        signature = DatasetSignature.from_dict(meta["signature"])
    except (KeyError, TypeError, ValueError):
        raise CheckpointError(f"{run_dir / MODEL_JSON} has an invalid dataset signature; the run is damaged, retrain it") from None
    config: dict = {}
    cfg_path = run_dir / CONFIG
    if cfg_path.is_file():
        try:
            config = yaml.safe_load(read_text(cfg_path)) or {}
        except yaml.YAMLError:
            raise CheckpointError(f"{cfg_path} is not valid YAML; the run is damaged, retrain it") from None
    info = RunInfo(
        run_dir=run_dir,
        model_name=name,
        model_config=dict(meta["config"]),
        input_kind=str(meta.get("input_kind", getattr(operator, "input_kind", "grid"))),
        normaliser=normaliser,
        signature=signature,
        epoch=int(meta.get("epoch", 0)),
        sciml_version=str(meta.get("sciml_version", "")),
        config=config,
    )
    return operator, info


def load_run(run_dir: str | Path) -> tuple[nn.Module, RunInfo]:
    """Rebuild a trained model from a run directory.

    Returns the model as a grid callable ``(B, C_in, *S) -> (B, C_out, *S)`` in eval mode on
    the CPU (point operators are wrapped with ``as_grid_model``) and the :class:`RunInfo`.
    Raises :class:`CheckpointError` for a missing or damaged run, an unknown model, a bad config
    or weights of another architecture.
    """
    operator, info = load_operator(run_dir)
    model = as_grid(operator)
    model.eval()
    return model, info


# ----------------------------------------------------------------------------- training state


def rng_state() -> dict[str, Any]:
    """torch, numpy and Python RNG states as tensors and numbers (safe for ``weights_only``)."""
    np_state = np.random.get_state()
    py_state = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy_keys": torch.from_numpy(np.asarray(np_state[1], dtype=np.int64)),
        "numpy_pos": int(np_state[2]),
        "numpy_has_gauss": int(np_state[3]),
        "numpy_gauss": float(np_state[4]),
        "python_version": int(py_state[0]),
        "python_state": torch.tensor(py_state[1], dtype=torch.int64),
    }
    if torch.cuda.is_available():
        state["cuda"] = list(torch.cuda.get_rng_state_all())
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(
        ("MT19937", state["numpy_keys"].numpy().astype(np.uint32), int(state["numpy_pos"]),
         int(state["numpy_has_gauss"]), float(state["numpy_gauss"]))
    )
    random.setstate((int(state["python_version"]), tuple(int(v) for v in state["python_state"].tolist()), None))
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_train_state(run_dir: str | Path, state: dict[str, Any]) -> None:
    """``torch.save`` the training state atomically (plain containers, numbers and tensors only)."""
    with atomic_path(Path(run_dir) / TRAIN_STATE) as tmp:
        torch.save(state, tmp)


def load_train_state(run_dir: str | Path) -> dict[str, Any]:
    """Load ``train_state.pt`` with ``weights_only=True``; anything else than tensors and plain
    containers (a pickled object) raises :class:`CheckpointError` and is never executed."""
    path = Path(run_dir) / TRAIN_STATE
    if not path.is_file():
        raise CheckpointError(f"{path} not found; cannot resume this run (it has no training state), start a new run")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        first = str(exc).splitlines()[0] if str(exc) else ""
        raise CheckpointError(
            f"{path} holds objects other than tensors and numbers ({first[:160]}); refusing to unpickle it, "
            "it was not written by sciml: delete it or start a new run"
        ) from None
    except (RuntimeError, OSError, EOFError, ValueError) as exc:
        raise CheckpointError(f"{path} cannot be read ({type(exc).__name__}); the run is damaged, start a new run") from None
    if not isinstance(state, dict) or not {"epoch", "optimizer", "scheduler", "rng"} <= set(state):
        raise CheckpointError(f"{path} is not a sciml training state; delete it or start a new run")
    return state
