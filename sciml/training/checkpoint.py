"""Operator runs (grid and point operators, CORAL) in the one run-directory format of :mod:`sciml.runs`.

Besides ``run.json`` (kind ``operator`` or ``coral``; model name and config, input kind,
normaliser kind, dataset signature, epoch: the model is rebuilt from it alone), the weights file
holds the model weights (``model.<name>``, complex tensors as real views, see
:func:`sciml.operators.base.state_to_safetensors`) and the normaliser statistics
(``normaliser.inputs.mean`` ...). ``config.yaml`` holds the resolved training options, model config
and data paths; ``train_state.pt`` the optimiser and scheduler state dicts, epoch, RNG states and
best loss, written with ``torch.save`` and read with ``torch.load(weights_only=True)``;
``metrics.jsonl`` one JSON line per epoch. Every file is written atomically.
"""

from __future__ import annotations

import pickle
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..errors import CheckpointError, ConfigError, ModelError, SciMLError, UnknownNameError
from ..io import atomic_path, read_text
from .. import runs
from ..runs import CONFIG, META, TRAIN_STATE, WEIGHTS
from .data import DatasetSignature, GridData
from .normalisers import DataNormaliser



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
    """Write the weights and ``run.json`` of a registered operator (kind ``coral`` for CORAL)."""
    from ..operators.base import state_to_safetensors

    name = getattr(operator, "name", "")
    if not name or not hasattr(operator, "config_dict"):
        raise CheckpointError(
            f"cannot checkpoint a {type(operator).__name__}: only registered sciml operators can be saved "
            "(build it with sciml.operators.create)"
        )
    kind = "coral" if name == "coral" else "operator"
    tensors = {f"model.{k}": v for k, v in state_to_safetensors(operator).items()}
    tensors.update({f"normaliser.{k}": v for k, v in normaliser.state().items()})
    runs.write_weights(run_dir, tensors, kind)
    runs.write_meta(run_dir, kind, {
        "model": name,
        "config": operator.config_dict(),
        "input_kind": getattr(operator, "input_kind", "grid"),
        "normaliser": normaliser.meta(),
        "signature": signature.to_dict(),
        "epoch": int(epoch),
        **(extra or {}),
    })


def read_model_json(run_dir: str | Path) -> dict:
    """The checked metadata of an operator or CORAL run (``run.json``, or ``model.json`` of an older run)."""
    meta = runs.read_meta(run_dir)
    if meta["kind"] not in ("operator", "coral"):
        raise CheckpointError(f"{run_dir} holds a {meta['kind']} run, not a trained operator; use it with "
                              f"`sciml solve` (or `sciml evaluate` for cgs)")
    missing = [k for k in ("model", "config", "signature") if k not in meta]
    if missing:
        raise CheckpointError(f"{run_dir / META} lacks {', '.join(missing)}; it was not written by sciml, retrain the model")
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
    fix = f"{META} and {WEIGHTS} do not belong together, restore both from one run or retrain"
    for key, value in expected.items():
        if key not in got:
            raise CheckpointError(
                f"checkpoint is of another architecture: {path.name} lacks {key!r}, which the {name} config "
                f"in {META} needs; {fix}"
            )
        if tuple(got[key].shape) != tuple(value.shape) or got[key].dtype.is_complex != value.dtype.is_complex:
            raise CheckpointError(
                f"checkpoint is of another architecture: {path.name} has {key!r} of shape {tuple(got[key].shape)}, "
                f"the {name} config in {META} needs shape {tuple(value.shape)}; {fix}"
            )
    extra = sorted(set(got) - set(expected))
    if extra:
        raise CheckpointError(
            f"checkpoint is of another architecture: {path.name} has {extra[0]!r}, which the {name} config "
            f"in {META} does not have; {fix}"
        )


def load_operator(run_dir: str | Path) -> tuple[nn.Module, RunInfo]:
    """The unwrapped operator (eval mode, CPU) and its :class:`RunInfo`."""
    import yaml

    from ..operators.base import load_safetensors_state

    run_dir = Path(run_dir)
    meta = read_model_json(run_dir)
    name = str(meta["model"])
    operator = build_operator(name, meta["config"], str(run_dir / META))
    tensors = runs.read_weights(run_dir)
    weights = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
    _check_architecture(operator, weights, run_dir / WEIGHTS, name)
    load_safetensors_state(operator, weights)
    operator.eval()
    norm_state = {k[len("normaliser."):]: v for k, v in tensors.items() if k.startswith("normaliser.")}
    normaliser = DataNormaliser.from_state(meta.get("normaliser", {"kind": "none"}), norm_state)
    try:
        signature = DatasetSignature.from_dict(meta["signature"])
    except (KeyError, TypeError, ValueError):
        raise CheckpointError(f"{run_dir / META} has an invalid dataset signature; the run is damaged, retrain it") from None
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
    except (RuntimeError, OSError, EOFError, ValueError, IndexError, KeyError, TypeError, AttributeError) as exc:
        # a damaged file makes torch's restricted unpickler fail in many ways; none of them is the user's bug
        raise CheckpointError(f"{path} cannot be read ({type(exc).__name__}); the run is damaged, start a new run") from None
    if not isinstance(state, dict) or not {"epoch", "optimizer", "scheduler", "rng"} <= set(state):
        raise CheckpointError(f"{path} is not a sciml training state; delete it or start a new run")
    return state


runs.register_kind("operator", load_run)
runs.register_kind("coral", load_run)
