"""Evaluate a trained run on test datasets: accuracy, inference time, classical-solver time.

For every dataset: the relative L2 error per sample (mean, std, max), the model's inference
time per sample (normalisation included, data loading excluded), the classical solver's time per
sample from :func:`sciml.datasets.reference_solve` on the first ``n_solver_samples`` samples,
and the speed-up ``solver time / model time``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from .. import runs as runs_format
from .. import runtime
from ..errors import ConfigError, ModelError, SciMLError
from ..io import atomic_write_text, json_ready
from ..training.checkpoint import RunInfo, grid_name, load_run, normaliser_for
from ..training.stream import Samples, iterate, open_samples, ranges
from ..training.normalisers import DataNormaliser
from ..training.trainer import predict
from ..learned.cgs import evaluate_cgs
from ..training.coral import evaluate_on_points
from .metrics import relative_l2, summarise


#: GiB of test samples read at once; larger sets are streamed batch by batch (one pass: nothing to gain
#: from holding them)
EVAL_CACHE_GB = 0.25


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _scored(model, normaliser, samples: Samples, batch_size: int, device: torch.device,
            workers: int | None = None) -> tuple[np.ndarray, float]:
    """Relative L2 error of every sample and the model's seconds per sample, batch by batch (the
    samples may be streamed from the file: only one batch is held). Inputs start on the CPU, like
    the classical solver's, so transfers count in the model's time; reading the file does not.
    One warm-up batch is not timed."""
    n = len(samples)
    masked = "mask" in samples.signature.inputs
    errors, seconds, warm = [], 0.0, False
    for x, y in iterate(samples, ranges(n, batch_size), workers):
        if not warm:
            predict(model, normaliser, x, batch_size=batch_size)
            warm = True
        _sync(device)
        t0 = time.perf_counter()
        pred = predict(model, normaliser, x, batch_size=batch_size)
        _sync(device)
        seconds += time.perf_counter() - t0
        pred, target = pred.cpu().double(), y.double()
        if masked:  # a non-rectangular domain: score the points inside it
            inside = (x[:, samples.signature.inputs.index("mask")] < 0.5).unsqueeze(1).double()
            pred, target = pred * inside, target * inside
        errors.append(relative_l2(pred, target).numpy())
    return np.concatenate(errors), seconds / max(n, 1)


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
    data = open_samples(path, cache_gb=EVAL_CACHE_GB)
    info.signature.check_same_problem(data.signature, str(path))
    normaliser, notes = normaliser_for(info, data)
    errors, model_s = _scored(model, normaliser, data, batch_size, device)
    if "mask" in data.signature.inputs:
        notes.append("errors over the grid points inside the domain (mask = 0)")
    stats = summarise(errors)
    solver_s, n_solved, note = _solver_time(Path(path), n_solver_samples)
    if note:
        notes.append(note)
    return {
        "path": str(path),
        "pde": data.signature.pde,
        "n": len(data),
        "resolution": grid_name(data.signature.shape),
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
    data: str | Path | Sequence[str | Path] | None = None,
    out: str | Path | None = None,
    batch_size: int | None = None,
    n_solver_samples: int = 10,
    device: str = "auto",
    *,
    points: float | None = None,
    points_seed: int = 1,
    graphs: int = 100,
) -> dict[str, Any]:
    """Evaluate the trained run ``run_dir``, whatever its kind (read from the run, :func:`sciml.runs.kind`).

    Operators (CORAL included) are scored on each dataset in ``data`` (see :func:`evaluate_operator`);
    with ``points`` (a fraction) point operators are also scored on a random ``points`` of each
    sample's points (seed ``points_seed``), under ``"points"``. A CGS run is scored on ``graphs``
    fresh graphs (:func:`sciml.learned.cgs.evaluate_cgs`). DCDM runs and neural preconditioners
    solve linear systems: they are compared with the classical solvers by ``sciml solve``.
    Returns a dict with ``kind`` and the kind's results.
    """
    kind = runs_format.kind(run_dir)
    if kind in ("operator", "coral"):
        if not data:
            raise ConfigError("no test data given; pass data=PATH (--data), the dataset(s) to evaluate the model on")
        result = evaluate_operator(run_dir, _paths(data), out, batch_size, n_solver_samples, device)
        if points is not None:
            result["points"] = [{"path": str(p), **evaluate_on_points(run_dir, p, points, seed=points_seed)}
                                for p in _paths(data)]
        return {"kind": kind, **result}
    if kind == "cgs":
        if data:
            raise ConfigError("a cgs run is scored on fresh generated graphs; drop --data (use --graphs N)")
        return {"kind": kind, "run": str(run_dir), **evaluate_cgs(run_dir, n_graphs=graphs),
                "out": str(Path(run_dir) / "evaluation.json")}
    how = f"hints:{run_dir},fcg:{run_dir},fgmres:{run_dir}" if kind == "precond" else f"{kind}:{run_dir}"
    what = "a neural preconditioner" if kind == "precond" else f"a {kind} solver"
    raise ConfigError(f"{run_dir} is {what} of linear systems: compare it with the classical solvers by "
                      f"`sciml solve PDE -s N --method cg,pcg-ic,pcg-amg,{how}` (or `--data FILE` for a stored sample)")


def evaluate_operator(
    run_dir: str | Path,
    data: str | Path | Sequence[str | Path],
    out: str | Path | None = None,
    batch_size: int | None = None,
    n_solver_samples: int = 10,
    device: str = "auto",
) -> dict[str, Any]:
    """Evaluate the trained operator of run ``run_dir`` on each dataset in ``data``.

    Returns ``{"run", "model", "epoch", "device", "datasets": [...], "out"}``; each dataset entry
    has ``path, pde, n, resolution, shape, rel_l2_mean, rel_l2_std`` (population std over
    samples) ``, rel_l2_max, rel_l2_median, model_s_per_sample, solver_s_per_sample,
    solver_samples, speedup, normaliser_resampled, notes``; with several datasets, one the model
    cannot be applied to (a fixed-sensor model on another grid) gets ``{"path", "error"}`` instead
    (ModelError when it is the only one, or when no dataset works). The result is also written as JSON
    to ``out`` (default ``RUN/eval.json``), atomically.
    """
    run_dir = Path(run_dir)
    paths = _paths(data)
    model, info, dev, bs = _load(run_dir, device, batch_size)
    results = [_dataset_or_error(model, info, p, len(paths), bs, n_solver_samples, dev) for p in paths]
    return _write_result(run_dir, info.model_name, info.epoch, str(dev), results, out)


def _load(run_dir, device: str, batch_size: int | None):
    """The run's model on its device, its info, the device and the batch size to predict with."""
    model, info = load_run(run_dir)
    dev = runtime.device(device)
    model.to(dev)
    return model, info, dev, int(batch_size or info.config.get("batch_size") or 20)


def _paths(data) -> list:
    paths = [data] if isinstance(data, (str, Path)) else list(data)
    if not paths:
        raise ModelError("no dataset to evaluate on; pass at least one --data file")
    return paths


def _dataset_or_error(model, info: RunInfo, path, n_paths: int, batch_size: int, n_solver_samples: int,
                      device: torch.device) -> dict[str, Any]:
    try:
        return evaluate_dataset(model, info, path, batch_size=batch_size, n_solver_samples=n_solver_samples, device=device)
    except ModelError as exc:
        # e.g. a fixed-sensor model on another resolution: say so in that row, keep the others
        if n_paths == 1:
            raise
        return {"path": str(path), "error": str(exc)}


def _write_result(run_dir: Path, model_name: str, epoch: int, device: str, results: list[dict], out) -> dict[str, Any]:
    if all("error" in r for r in results):
        raise ModelError(results[0]["error"])
    out = Path(out) if out is not None else run_dir / "eval.json"
    result = {
        "run": str(run_dir),
        "model": model_name,
        "epoch": epoch,
        "device": device,
        "datasets": results,
        "out": str(out),
    }
    atomic_write_text(out, json.dumps(json_ready(result), indent=2) + "\n")
    return result


def evaluate_many(
    runs: Sequence[str | Path],
    data: str | Path | Sequence[str | Path],
    out: str | Path | None = None,
    batch_size: int | None = None,
    n_solver_samples: int = 10,
    device: str = "auto",
    *,
    cluster: str | None = None,
    workers: int | None = None,
    cluster_settings: dict | None = None,
    progress: bool = False,
    **kind_options: Any,
) -> list[dict[str, Any]]:
    """Evaluate every run in ``runs`` on every dataset in ``data``: one result per run, as :func:`evaluate`
    (``kind_options``: its ``points``, ``points_seed``, ``graphs``).

    With ``cluster``/``workers`` asking for Dask (see :func:`sciml.distributed.cluster_spec`), each
    (run, dataset) pair is an independent task; the results are gathered here and written as
    :func:`evaluate` writes them (``RUN/eval.json``, or ``out`` for a single run). With several
    runs, ``out`` (if given) receives the list of all results. The errors equal the serial ones;
    times per sample are measured on workers that may share the machine with other tasks.
    """
    from ..distributed import cluster_spec, dask_client
    from ..errors import CheckpointError

    runs = [Path(r) for r in runs]
    paths = _paths(data) if data else []
    if not runs:
        raise CheckpointError("no run to evaluate; name at least one run directory written by `sciml train`")
    kinds = {runs_format.kind(run) for run in runs}  # a CheckpointError names a folder that holds no run
    if "cgs" in kinds and paths:
        raise ConfigError("a cgs run is scored on fresh generated graphs; drop --data (use --graphs N)")
    for p in paths:
        if not Path(p).is_file():
            raise ModelError(f"test dataset {str(p)!r} not found; check the path or make it with `sciml generate`")
    where = cluster_spec(cluster, workers, settings=cluster_settings)
    single_out = out if len(runs) == 1 else None
    if where.in_process:
        results = []
        with runtime.progress(len(runs), "evaluate", enabled=progress and len(runs) > 1) as advance:
            for run in runs:
                results.append(evaluate(run, paths or None, out=single_out, batch_size=batch_size,
                                        n_solver_samples=n_solver_samples, device=device, **kind_options))
                advance()
    else:
        if kinds - {"operator", "coral"} or kind_options.get("points") is not None:
            raise ConfigError("only operators are evaluated as Dask tasks (one per run and dataset), without --points; "
                              "drop --cluster/--workers")
        with dask_client(spec=where) as client:
            results = _evaluate_on_dask(client, runs, paths, single_out, batch_size, n_solver_samples, device, progress)
    if out is not None and len(runs) > 1:
        atomic_write_text(Path(out), json.dumps(json_ready(results), indent=2) + "\n")
    return results


def _evaluate_on_dask(client, runs, paths, out, batch_size, n_solver_samples, device, progress) -> list[dict]:
    from ..distributed.cluster import finished_tasks, tasks_from

    stamp = time.time_ns()
    pairs = [(run, j) for run in runs for j in range(len(paths))]
    tasks = tasks_from(pairs, lambda pair: (pair, _evaluate_task, (str(pair[0]), str(paths[pair[1]]), len(paths), batch_size,
                                                                   n_solver_samples, device),
                                            f"evaluate-{pair[0].name}-{pair[1]}-{stamp}"))
    entries: dict[Path, list] = {run: [None] * len(paths) for run in runs}
    meta: dict[Path, tuple] = {}
    with runtime.progress(len(pairs), "evaluate", enabled=progress and len(pairs) > 1) as advance:
        for (run, j), future in finished_tasks(client, tasks):
            entries[run][j], *meta[run] = future.result()
            advance()
    return [_write_result(run, *meta[run], entries[run], out) for run in runs]


def _evaluate_task(run_dir: str, path: str, n_paths: int, batch_size: int | None, n_solver_samples: int,
                   device: str) -> tuple[dict, str, int, str]:
    """Worker task: the entry of ``path`` in the evaluation of ``run_dir`` (see :func:`evaluate`),
    the model name, its epoch and the device."""
    model, info, dev, bs = _load(run_dir, device, batch_size)
    return _dataset_or_error(model, info, path, n_paths, bs, n_solver_samples, dev), info.model_name, info.epoch, str(dev)
