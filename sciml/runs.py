"""Run directories of learned solvers (DCDM, CGS): safe weights, JSON metadata, metrics.

A learned-solver run directory holds

* ``solver.safetensors``: the network weights (never unpickled);
* ``solver.json``: ``{"format", "kind", "config", "sciml_version", "saved", ...extra}``; the
  network is rebuilt from ``kind`` and ``config`` alone;
* ``metrics.jsonl``: one JSON object per logged step or epoch.

Every file is written atomically, so an interrupted run never leaves a torn file behind.
"""

from __future__ import annotations

import datetime as _dt
import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .errors import CheckpointError
from .io import atomic_path, atomic_write_text, read_text

WEIGHTS = "solver.safetensors"
META = "solver.json"
METRICS = "metrics.jsonl"
FORMAT = 1


def save_learned(run_dir: str | Path, kind: str, config: dict, net: nn.Module, extra: dict | None = None) -> Path:
    """Write ``net``'s weights and ``{"kind": kind, "config": config, **extra}`` to ``run_dir``."""
    from safetensors.torch import save_file

    from . import __version__

    run_dir = Path(run_dir)
    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in net.state_dict().items()}
    with atomic_path(run_dir / WEIGHTS) as tmp:
        save_file(tensors, str(tmp), metadata={"format": "sciml", "kind": kind})
    meta = {"format": FORMAT, "kind": kind, "config": config, "sciml_version": __version__,
            "saved": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"), **(extra or {})}
    atomic_write_text(run_dir / META, json.dumps(meta, indent=2) + "\n")
    return run_dir


def read_meta(run_dir: str | Path, kind: str | None = None) -> dict[str, Any]:
    """The checked ``solver.json`` of a learned-solver run; ``kind`` checks what was trained there."""
    run_dir = Path(run_dir)
    meta_path = run_dir / META
    if not run_dir.is_dir():
        raise CheckpointError(f"{run_dir} is not a run directory; train one first (`sciml train dcdm|cgs ...`, or `sciml train fno --task precond ...` for a preconditioner)")
    if not meta_path.is_file():
        raise CheckpointError(f"{run_dir} has no {META}: it is not a learned-solver run (or its training never saved); retrain it")
    try:
        meta = json.loads(read_text(meta_path))
        if not isinstance(meta, dict) or not isinstance(meta.get("config"), dict) or "kind" not in meta:
            raise ValueError("missing 'kind' or 'config'")
    except (ValueError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{meta_path} is damaged ({exc}); retrain the run") from None
    if kind is not None and meta["kind"] != kind:
        raise CheckpointError(f"{run_dir} holds a {meta['kind']!r} solver, not {kind!r}")
    return meta


def read_learned(run_dir: str | Path, kind: str | None = None) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """``(state_dict, meta)`` of a learned-solver run; ``kind`` checks what was trained there."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    run_dir = Path(run_dir)
    meta = read_meta(run_dir, kind)
    weights = run_dir / WEIGHTS
    if not weights.is_file():
        raise CheckpointError(f"{weights} not found; the run has no saved weights, retrain it")
    try:
        state = load_file(str(weights), device="cpu")
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise CheckpointError(f"{weights} is not a readable safetensors file ({first}); the run is damaged, retrain it") from None
    return state, meta


def load_state(net: nn.Module, state: dict[str, torch.Tensor], where: str | Path) -> nn.Module:
    """Load ``state`` into ``net``, with one clear error when the architecture differs."""
    expected = net.state_dict()
    if set(expected) != set(state) or any(expected[k].shape != state[k].shape for k in expected):
        raise CheckpointError(f"{where}: the saved weights do not match the network described in {META}; the run is damaged, retrain it")
    net.load_state_dict(state)
    return net.eval()


def write_metrics(run_dir: str | Path, rows: list[dict]) -> None:
    """Rewrite ``metrics.jsonl`` atomically with ``rows``."""
    text = "".join(json.dumps(r) + "\n" for r in rows)
    with atomic_path(Path(run_dir) / METRICS) as tmp:
        tmp.write_text(text)


def read_metrics(run_dir: str | Path) -> list[dict]:
    path = Path(run_dir) / METRICS
    if not path.is_file():
        return []
    return [json.loads(line) for line in read_text(path).splitlines() if line.strip()]


def step_progress(enabled: bool, total: int, label: str):
    """A rich progress bar on stderr for ``total`` optimiser steps; ``(progress, task)``.

    Use as ``with progress: ... progress.update(task, advance=1, loss="0.12")``; it draws
    nothing when ``enabled`` is false.
    """
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    progress = Progress(TextColumn(label), BarColumn(), MofNCompleteColumn(), TextColumn("loss {task.fields[loss]}"),
                        TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(),
                        console=Console(stderr=True), disable=not enabled, transient=True)
    return progress, progress.add_task(label, total=total, loss="-")


def kind(run_dir: str | Path) -> str:
    """What the run in ``run_dir`` holds: ``operator``, ``coral``, ``precond``, ``dcdm`` or ``cgs``.

    Raises :class:`CheckpointError` (one line) when the folder holds no run.
    """
    run_dir = Path(run_dir)
    if (run_dir / META).is_file():
        return str(read_meta(run_dir)["kind"])
    model_json = run_dir / "model.json"
    if model_json.is_file():
        try:
            meta = json.loads(read_text(model_json))
        except (ValueError, UnicodeDecodeError):
            raise CheckpointError(f"{model_json} is not valid JSON; the run is damaged, retrain it") from None
        return "coral" if isinstance(meta, dict) and meta.get("model") == "coral" else "operator"
    if not run_dir.is_dir():
        raise CheckpointError(f"run directory {str(run_dir)!r} not found; train one with `sciml train ... --out {run_dir}`")
    raise CheckpointError(f"{run_dir} holds no run (no {META} or model.json); give a folder written by `sciml train`")
