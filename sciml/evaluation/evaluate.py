"""Evaluate a trained run on test datasets: accuracy, inference time, classical-solver time.

For every dataset: the relative L2 error per sample (mean, std, max), the model's inference
time per sample (normalisation included, data loading excluded), the classical solver's time per
sample from :func:`sciml.datasets.reference_solve` on the first ``n_solver_samples`` samples,
and the speed-up ``solver time / model time``.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from ..errors import ModelError, SciMLError
from ..io import atomic_write_text
from ..training.checkpoint import RunInfo, load_run
from ..training.data import GridData, inside_domain, load_grid_data
from ..training.normalisers import DataNormaliser
from ..training.build import resolve_device
from ..training.trainer import predict
from .metrics import relative_l2, summarise


def _grid_name(shape: Sequence[int]) -> str:
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
            f"{_grid_name(sig.shape)}, got {_grid_name(new.shape)} in {data.path}; evaluate it on data of that resolution"
        )
    notes = [f"evaluated at {_grid_name(new.shape)}, trained at {_grid_name(sig.shape)}"]
    if info.normaliser.shape is None:
        return info.normaliser, notes
    old_c = sig.coords or None
    new_c = new.coords or None
    if old_c is None or new_c is None:
        old_c = new_c = None
    norm = info.normaliser.resample(new.shape, old_c, new_c)
    how = "at the new grid's coordinates" if old_c else "(bilinear, both grid ends aligned)"
    notes.append(
        f"pointwise normaliser statistics interpolated linearly from {_grid_name(sig.shape)} to {_grid_name(new.shape)} {how}"
    )
    return norm, notes


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed_predict(model, normaliser, x: torch.Tensor, batch_size: int, device: torch.device) -> tuple[torch.Tensor, float]:
    """Predictions (on the CPU) and seconds per sample, after one warm-up batch."""
    # inputs start on the CPU, like the classical solver's: transfers count in the model's time
    predict(model, normaliser, x[:batch_size], batch_size=batch_size)
    _sync(device)
    t0 = time.perf_counter()
    pred = predict(model, normaliser, x, batch_size=batch_size)
    _sync(device)
    seconds = time.perf_counter() - t0
    return pred.cpu(), seconds / x.shape[0]


def _solver_time(path: Path, n: int) -> tuple[float | None, int, str | None]:
    """Mean seconds of the classical solver over the first ``n`` samples (None when unavailable)."""
    if n <= 0:
        return None, 0, None
    from .. import datasets

    try:
        ds = datasets.open(path)
    except SciMLError as exc:
        return None, 0, f"classical solver not timed: {exc}"
    try:
        n = min(n, int(ds.sizes["sample"]))
        total = 0.0
        for i in range(n):
            _, seconds = datasets.reference_solve(ds, i)
            total += float(seconds)
    except SciMLError as exc:
        return None, 0, f"classical solver not timed: {exc}"
    finally:
        ds.close()
    return total / n, n, None


def evaluate_dataset(model, info: RunInfo, path: str | Path, *, batch_size: int, n_solver_samples: int,
                     device: torch.device) -> dict[str, Any]:
    """Metrics of one dataset (see :func:`evaluate`)."""
    data = load_grid_data(path)
    info.signature.check_same_problem(data.signature, str(path))
    normaliser, notes = normaliser_for(info, data)
    pred, model_s = _timed_predict(model, normaliser, data.x, batch_size, device)
    target = data.y.double()
    if "mask" in data.signature.inputs:  # a non-rectangular domain: score the points inside it
        inside = inside_domain(data).unsqueeze(1).double()
        pred, target = pred.double() * inside, target * inside
        notes.append("errors over the grid points inside the domain (mask = 0)")
    errors = relative_l2(pred.double(), target).numpy()
    stats = summarise(errors)
    solver_s, n_solved, note = _solver_time(Path(path), n_solver_samples)
    if note:
        notes.append(note)
    return {
        "path": str(path),
        "pde": data.signature.pde,
        "n": len(data),
        "resolution": _grid_name(data.signature.shape),
        "shape": list(data.signature.shape),
        "rel_l2_mean": stats["mean"],
        "rel_l2_std": stats["std"],
        "rel_l2_max": stats["max"],
        "rel_l2_median": stats["median"],
        "model_s_per_sample": model_s,
        "solver_s_per_sample": solver_s,
        "solver_samples": n_solved,
        "speedup": (solver_s / model_s) if solver_s is not None and model_s > 0 else None,
        "normaliser_resampled": data.signature.shape != info.signature.shape and info.normaliser.shape is not None,
        "notes": notes,
    }


def evaluate(
    run_dir: str | Path,
    data: str | Path | Sequence[str | Path],
    out: str | Path | None = None,
    batch_size: int | None = None,
    n_solver_samples: int = 10,
    device: str = "auto",
) -> dict[str, Any]:
    """Evaluate the trained run ``run_dir`` on each dataset in ``data``.

    Returns ``{"run", "model", "epoch", "device", "datasets": [...], "out"}``; each dataset entry
    has ``path, pde, n, resolution, shape, rel_l2_mean, rel_l2_std`` (population std over
    samples) ``, rel_l2_max, rel_l2_median, model_s_per_sample, solver_s_per_sample,
    solver_samples, speedup, normaliser_resampled, notes``; with several datasets, one the model
    cannot be applied to (a fixed-sensor model on another grid) gets ``{"path", "error"}`` instead
    (ModelError when it is the only one, or when no dataset works). The result is also written as JSON
    to ``out`` (default ``RUN/eval.json``), atomically.
    """
    run_dir = Path(run_dir)
    paths = [data] if isinstance(data, (str, Path)) else list(data)
    if not paths:
        raise ModelError("no dataset to evaluate on; pass at least one --data file")
    model, info = load_run(run_dir)
    dev = resolve_device(device)
    model.to(dev)
    bs = int(batch_size or info.config.get("batch_size") or 20)
    results = []
    for p in paths:
        try:
            results.append(
                evaluate_dataset(model, info, p, batch_size=bs, n_solver_samples=n_solver_samples, device=dev)
            )
        except ModelError as exc:
            # e.g. a fixed-sensor model on another resolution: say so in that row, keep the others
            if len(paths) == 1:
                raise
            results.append({"path": str(p), "error": str(exc)})
    if all("error" in r for r in results):
        raise ModelError(results[0]["error"])
    out = Path(out) if out is not None else run_dir / "eval.json"
    result = {
        "run": str(run_dir),
        "model": info.model_name,
        "epoch": info.epoch,
        "device": str(dev),
        "datasets": results,
        "out": str(out),
    }
    atomic_write_text(out, json.dumps(_finite(result), indent=2) + "\n")
    return result


def _finite(obj: Any) -> Any:
    """JSON has no NaN/Inf: write them as null."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_finite(v) for v in obj]
    if isinstance(obj, np.generic):
        return _finite(obj.item())
    return obj
