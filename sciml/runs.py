"""The one run-directory format of every trainable thing, and ``load(path)``.

A run directory holds

* ``run.json``: ``{"format": 2, "kind", "sciml_version", "saved", ...}``; ``kind`` says what the run
  holds: ``operator`` (any model of ``sciml models``), ``coral``, ``precond`` (a neural
  preconditioner), ``dcdm`` or ``cgs``; the other keys are the kind's (its network config first of
  all: a network is rebuilt from ``run.json`` alone);
* ``weights.safetensors``: the weights (and, for operators, the normaliser statistics); never
  unpickled;
* ``metrics.jsonl``: one JSON object per logged epoch or step;
* where the kind has them: ``config.yaml`` (the resolved options), ``train_state.pt`` (optimiser,
  scheduler and RNG state of a resumable run, read with ``weights_only=True``), figures.

Every file is written atomically (temporary file + rename). Runs written before this format (an
operator or CORAL run's ``model.json`` + ``model.safetensors``, a learned solver's ``solver.json`` +
``solver.safetensors``) are read as they are.

:func:`load` returns a :class:`LoadedRun` whatever the kind: the packages that own a kind register
its loader with :func:`register_kind` (``sciml.training`` for operators and CORAL, ``sciml.learned``
for the learned solvers); they are found through the plugin entry points
(:func:`sciml.registry.load_plugins`), so this module imports none of them.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from .errors import CheckpointError, ConfigError
from .io import atomic_path, atomic_write_text, read_text
from .registry import load_plugins

META = "run.json"
WEIGHTS = "weights.safetensors"
METRICS = "metrics.jsonl"
CONFIG = "config.yaml"
TRAIN_STATE = "train_state.pt"
FORMAT = 2
# metadata file -> weights file of the runs written before ``run.json``
LEGACY = {"model.json": "model.safetensors", "solver.json": "solver.safetensors"}


# ----------------------------------------------------------------------------- metadata


def _meta_path(run_dir: Path) -> Path:
    """``run.json``, or the metadata file of an older run (``run.json`` when there is none)."""
    for name in (META, *LEGACY):
        if (run_dir / name).is_file():
            return run_dir / name
    return run_dir / META


def holds_run(run_dir: str | Path) -> bool:
    """Whether ``run_dir`` holds a run (or a half-written one: metadata or a training state)."""
    run_dir = Path(run_dir)
    return any((run_dir / name).exists() for name in (META, *LEGACY, TRAIN_STATE))


def check_new(out: str | Path, resumable: bool = False) -> Path:
    """``out`` as a Path; raise ConfigError when it already holds a run (nothing is overwritten)."""
    out = Path(out)
    if holds_run(out):
        how = f"resume it with --resume {out} or choose another --out" if resumable else "choose another --out"
        raise ConfigError(f"{out} already holds a run; {how} (nothing was overwritten)")
    return out


def write_meta(run_dir: str | Path, kind: str, meta: dict) -> None:
    """Write ``run.json``: ``meta`` with the format, ``kind``, sciml version and time stamp."""
    from . import __version__

    full = {"format": FORMAT, "kind": kind, "sciml_version": __version__,
            "saved": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"), **meta}
    atomic_write_text(Path(run_dir) / META, _json(full))


def _json(meta: dict) -> str:
    """Indented JSON with lists of numbers kept on one line (coordinates stay readable)."""
    import re

    text = json.dumps(meta, indent=2)
    flat = re.compile(r"\[\s+([-+0-9.eE,\s]+?)\s+\]")
    return flat.sub(lambda m: "[" + ", ".join(v.strip() for v in m.group(1).split(",")) + "]", text) + "\n"


def read_meta(run_dir: str | Path, kind: str | None = None) -> dict[str, Any]:
    """The checked metadata of the run in ``run_dir`` (``run.json`` or an older run's file), with
    ``kind`` filled in; ``kind`` (if given) checks what was trained there."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise CheckpointError(f"{run_dir} is not a run directory (not found); train one with `sciml train ... --out {run_dir}`")
    path = _meta_path(run_dir)
    if not path.is_file():
        raise CheckpointError(f"{run_dir} is not a finished run (no {META}); train into it or point to another run directory")
    try:
        meta = json.loads(read_text(path))
        if not isinstance(meta, dict):
            raise ValueError("not a JSON object")
    except (ValueError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{path} is damaged: not valid JSON ({str(exc).splitlines()[0][:80]}); retrain the run") from None
    if path.name == "model.json":  # operator and CORAL runs of format 1 name their model, not a kind
        meta["kind"] = "coral" if meta.get("model") == "coral" else "operator"
    if not isinstance(meta.get("kind"), str) or not isinstance(meta.get("config"), dict):
        raise CheckpointError(f"{path} lacks a 'kind' or 'config'; it was not written by sciml, retrain the run")
    if kind is not None and meta["kind"] != kind:
        raise CheckpointError(f"{run_dir} holds a {meta['kind']!r} run, not {kind!r}")
    return meta


def kind(run_dir: str | Path) -> str:
    """What the run in ``run_dir`` holds: ``operator``, ``coral``, ``precond``, ``dcdm`` or ``cgs``.

    Raises :class:`CheckpointError` (one line) when the folder holds no run.
    """
    return read_meta(run_dir)["kind"]


# ----------------------------------------------------------------------------- weights


def write_weights(run_dir: str | Path, tensors: dict[str, torch.Tensor], kind: str) -> None:
    """Write ``weights.safetensors`` atomically (CPU, contiguous copies)."""
    from safetensors.torch import save_file

    plain = {k: v.detach().cpu().contiguous().clone() for k, v in tensors.items()}
    with atomic_path(Path(run_dir) / WEIGHTS) as tmp:
        save_file(plain, str(tmp), metadata={"format": "sciml", "kind": kind})


def read_weights(run_dir: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of the run's weights file (never unpickled); CheckpointError if missing or damaged."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    run_dir = Path(run_dir)
    meta = _meta_path(run_dir)
    path = run_dir / LEGACY.get(meta.name, WEIGHTS)
    if not path.is_file():
        raise CheckpointError(f"{path} not found; the run has no saved weights, retrain it")
    try:
        return load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise CheckpointError(f"{path} is not a readable safetensors file ({first}); the run is damaged, retrain it") from None


def save_network(run_dir: str | Path, kind: str, config: dict, net: nn.Module, extra: dict | None = None) -> Path:
    """Write ``net``'s weights and ``run.json`` ``{"kind": kind, "config": config, **extra}``."""
    run_dir = Path(run_dir)
    write_weights(run_dir, net.state_dict(), kind)
    write_meta(run_dir, kind, {"config": config, **(extra or {})})
    return run_dir


def read_network(run_dir: str | Path, kind: str | None = None) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """``(state_dict, meta)`` of a run whose weights are one network's state dict."""
    meta = read_meta(run_dir, kind)
    return read_weights(run_dir), meta


def load_state(net: nn.Module, state: dict[str, torch.Tensor], where: str | Path) -> nn.Module:
    """Load ``state`` into ``net`` (eval mode), with one clear error when the architecture differs."""
    expected = net.state_dict()
    if set(expected) != set(state) or any(expected[k].shape != state[k].shape for k in expected):
        raise CheckpointError(f"{where}: the saved weights do not match the network its metadata describes; "
                              "the run is damaged, retrain it")
    net.load_state_dict(state)
    return net.eval()


# ----------------------------------------------------------------------------- metrics


def write_metrics(run_dir: str | Path, rows: list[dict]) -> None:
    """Rewrite ``metrics.jsonl`` atomically with ``rows`` (one JSON object per line)."""
    text = "".join(json.dumps(r) + "\n" for r in rows)
    with atomic_path(Path(run_dir) / METRICS) as tmp:
        tmp.write_text(text)


def read_metrics(run_dir: str | Path, required: bool = False) -> list[dict]:
    """The rows of ``metrics.jsonl`` ([] when there is none, unless ``required``)."""
    path = Path(run_dir) / METRICS
    if not path.is_file():
        if required:
            raise CheckpointError(f"{path} not found; it is written while `sciml train` runs, train the model first")
        return []
    rows = []
    for k, line in enumerate(read_text(path).splitlines()):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except ValueError:
                raise CheckpointError(f"{path} line {k + 1} is not JSON; the run is damaged") from None
    if required and not rows:
        raise CheckpointError(f"{path} is empty; train at least one epoch")
    return rows


# ----------------------------------------------------------------------------- load


@dataclasses.dataclass(frozen=True)
class LoadedRun:
    """What :func:`load` returns for any kind.

    kind, run_dir, meta: the run's kind, folder and metadata. model: the trained network (eval
    mode, CPU): an operator as a grid callable ``(B, C_in, *S) -> (B, C_out, *S)``, a DCDM network,
    a CGS, a preconditioner's grid operator. info: what else the kind needs to use it (an
    operator's :class:`~sciml.training.checkpoint.RunInfo` with its normaliser; the metadata for
    the learned solvers).
    """

    kind: str
    run_dir: Path
    meta: dict
    model: nn.Module
    info: Any


_KINDS: dict[str, Callable[[Path], tuple[nn.Module, Any]]] = {}


def register_kind(name: str, loader: Callable[[Path], tuple[nn.Module, Any]]) -> None:
    """Make :func:`load` rebuild runs of kind ``name`` with ``loader(run_dir) -> (model, info)``."""
    _KINDS[name] = loader


def kinds() -> list[str]:
    load_plugins()
    return sorted(_KINDS)


def load(run_dir: str | Path) -> LoadedRun:
    """Rebuild the run in ``run_dir``, whatever trained it (see :class:`LoadedRun`)."""
    run_dir = Path(run_dir)
    meta = read_meta(run_dir)
    if meta["kind"] not in kinds():
        raise CheckpointError(f"{run_dir} holds a run of kind {meta['kind']!r}, which this sciml cannot load "
                              f"(kinds: {', '.join(kinds())}); retrain it")
    model, info = _KINDS[meta["kind"]](run_dir)
    return LoadedRun(meta["kind"], run_dir, meta, model, info)
