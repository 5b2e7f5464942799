"""Sweeps: a grid of (model x dataset x seed) cells, each trained and evaluated as one Dask task.

The YAML (every key but ``models`` and ``datasets`` optional; unknown keys are an error)::

    name: demo
    out: sweeps/demo                  # relative to the working directory
    models: [fno, deeponet]           # names or presets, or a mapping label -> options:
    #   fno-small: {model: fno, model_config: {width: 16}, train: {lr: 0.002}}
    datasets:                         # name -> files, or name -> data to generate
      darcy: {train: data/train.h5, test: data/test.h5}
      darcy16: {generate: {pde: darcy, resolution: 16, n_train: 64, n_test: 16, seed: 0}}
    seeds: [0, 1]
    train: {epochs: 10, batch_size: 16}   # any `sciml train` option but data/seed/model
    evaluate: {solver_samples: 0}         # classical-solver timings per cell (0: none)
    cluster: {kind: local, workers: 2}    # or slurm/pbs job settings (sciml.distributed)

Cell ``<model>-<dataset>-s<seed>`` trains into ``OUT/cells/<cell>/`` (a run directory) and,
when it finishes, writes ``result.json`` there atomically, with the cell's full spec. A re-run
skips cells whose ``result.json`` is a success of the same spec; the others (never run,
interrupted, failed, or changed in the config) start again from scratch: the cell is the
unit of restart. A failed cell records its error in one line and the sweep goes on. After
each finished cell ``OUT/results.csv`` (one row per cell) and ``OUT/results.md`` (mean and
std over seeds per model and dataset) are rewritten; ``OUT/results.png`` at the end.

Training is deterministic per seed on one thread, so a cell's numbers do not depend on the
worker count, the cluster or the order in which cells finish.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
import os
import re
import shutil
import socket
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

from . import runtime
from .config import check_keys, from_dict, load_yaml
from .errors import ConfigError, DataError, Preempted, SciMLError
from .io import atomic_write_text, json_ready, output_lock, read_text
from .workflow import DataSection

RESULT = "result.json"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")
#: training options a sweep sets itself
_SET_BY_SWEEP = {"data": "datasets", "test_data": "datasets", "out": "out", "seed": "seeds", "model": "models",
                 "model_config": "models (a mapping label -> {model_config: ...})"}


@dataclass(frozen=True)
class SweepConfig:
    name: str = "sweep"
    out: str = ""
    models: Any = None
    datasets: Any = None
    seeds: Any = (0,)
    train: dict = field(default_factory=dict)
    evaluate: dict = field(default_factory=dict)
    cluster: dict = field(default_factory=dict)


@dataclass(frozen=True)
class ModelEntry:
    model: str = ""
    model_config: dict = field(default_factory=dict)
    train: dict = field(default_factory=dict)


@dataclass(frozen=True)
class GenerateSection(DataSection):
    """Data a sweep generates itself: ``OUT/data/<dataset>/{train,test}.h5`` (test seed ``seed + 1``);
    the keys of ``sciml run``'s data section, smaller by default, and a seed."""

    n_train: int = 100
    n_test: int = 20
    seed: int = 0


@dataclass(frozen=True)
class EvaluateSection:
    solver_samples: int = 0
    batch_size: int | None = None


@dataclass(frozen=True)
class Cell:
    """One (model, dataset, seed) of the grid; ``spec`` is everything its numbers depend on."""

    model: str
    dataset: str
    seed: int
    spec: dict
    dir: Path

    @property
    def name(self) -> str:
        return f"{self.model}-{self.dataset}-s{self.seed}"


@dataclass(frozen=True)
class Plan:
    config: SweepConfig
    root: Path
    cells: list[Cell]
    generate: dict[str, dict]  # dataset name -> request for data the sweep makes


# ----------------------------------------------------------------------------- the config


def load_sweep(config: str | Path | dict, out: str | Path | None = None) -> Plan:
    """Validate a sweep config (a YAML path or a mapping) and lay out its cells under ``out``."""
    raw = load_yaml(config) if not isinstance(config, dict) else dict(config)
    where = f"sweep config {config}" if not isinstance(config, dict) else "sweep config"
    cfg = from_dict(SweepConfig, raw, where=where)
    root = Path(out or cfg.out or f"sweeps/{cfg.name}")
    models = _models(cfg.models)
    datasets, generate = _datasets(cfg.datasets, root)
    seeds = _seeds(cfg.seeds)
    train = _train_options(cfg.train, "the train section")
    evaluate = dataclasses.asdict(from_dict(EvaluateSection, cfg.evaluate, where="the evaluate section"))
    from .distributed import cluster_spec

    cluster_spec(settings=cfg.cluster)  # the cluster section's keys, checked before anything runs
    cells = []
    for label, entry in models.items():
        options = _train_options({**train, **entry.train}, f"the train options of model {label!r}")
        options.setdefault("checkpoint_every", options.get("epochs", 100))  # a cell restarts from scratch
        for dataset, files in datasets.items():
            for seed in seeds:
                spec = {"model": entry.model, "model_config": dict(entry.model_config),
                        "train": {**options, "seed": seed}, "data": dict(files), "evaluate": evaluate}
                name = f"{label}-{dataset}-s{seed}"
                cells.append(Cell(label, dataset, seed, json.loads(json.dumps(spec)), root / "cells" / name))
    return Plan(cfg, root, cells, generate)


def _models(models: Any) -> dict[str, ModelEntry]:
    from .operators import presets

    if isinstance(models, str):
        models = [models]
    if isinstance(models, (list, tuple)):
        models = {m: {} for m in models}
    if not isinstance(models, dict) or not models:
        raise ConfigError("the sweep config needs `models:`, a list of model names (`sciml models`) or a "
                          "mapping label -> {model: NAME, model_config: {...}, train: {...}}")
    entries = {}
    for label, options in models.items():
        label = _name(label, "model label")
        if not isinstance(options or {}, dict):
            raise ConfigError(f"model {label!r} must map to options {{model: NAME, model_config: {{...}}, train: {{...}}}}, "
                              f"got {options!r}")
        entry = from_dict(ModelEntry, options or {}, where=f"model {label!r}")
        entry = dataclasses.replace(entry, model=entry.model or label)
        presets.resolve(entry.model)  # an unknown name lists the valid ones
        entries[label] = entry
    return entries


def _datasets(datasets: Any, root: Path) -> tuple[dict[str, dict], dict[str, dict]]:
    if isinstance(datasets, list):
        as_map = {}
        for item in datasets:
            if not isinstance(item, dict) or "name" not in item:
                raise ConfigError("a list of datasets holds mappings {name: ..., train: FILE, test: FILE}; "
                                  f"got {item!r}")
            item = dict(item)
            as_map[item.pop("name")] = item
        datasets = as_map
    if not isinstance(datasets, dict) or not datasets:
        raise ConfigError("the sweep config needs `datasets:`, a mapping name -> {train: FILE, test: FILE} "
                          "(or name -> {generate: {pde: darcy, resolution: 32, n_train: 100, n_test: 20}})")
    files, generate = {}, {}
    for name, entry in datasets.items():
        name = _name(name, "dataset name")
        if not isinstance(entry, dict):
            raise ConfigError(f"dataset {name!r} must be a mapping {{train: FILE, test: FILE}}, got {entry!r}")
        check_keys(entry, ["train", "test", "generate"], f"dataset {name!r}")
        if "generate" in entry:
            if set(entry) != {"generate"}:
                raise ConfigError(f"dataset {name!r}: give either generate or train/test files, not both")
            gen = from_dict(GenerateSection, entry["generate"] or {}, where=f"the generate section of dataset {name!r}")
            base = {"pde": gen.pde, "resolution": gen.resolution, "subsample": gen.subsample, "dtype": gen.dtype,
                    "params": dict(gen.params)}
            folder = root / "data" / name
            generate[name] = {"train": (folder / "train.h5", {**base, "n": gen.n_train, "seed": gen.seed}),
                              "test": (folder / "test.h5", {**base, "n": gen.n_test, "seed": gen.seed + 1})}
            files[name] = {"train": str(folder / "train.h5"), "test": str(folder / "test.h5")}
            continue
        for split in ("train", "test"):
            path = entry.get(split)
            if not isinstance(path, str):
                raise ConfigError(f"dataset {name!r} needs a {split} file ({split}: PATH), got {path!r}")
            if not Path(path).is_file():
                raise DataError(f"the {split} file of dataset {name!r}, {path!r}, was not found; "
                                "check the path or make it with `sciml generate`")
        files[name] = {"train": entry["train"], "test": entry["test"]}
    return files, generate


def _seeds(seeds: Any) -> list[int]:
    seeds = [seeds] if isinstance(seeds, int) and not isinstance(seeds, bool) else seeds
    if (not isinstance(seeds, (list, tuple)) or not seeds
            or any(isinstance(s, bool) or not isinstance(s, int) or s < 0 for s in seeds)):
        raise ConfigError(f"seeds must be a list of integers >= 0, e.g. [0, 1, 2], got {seeds!r}")
    if len(set(seeds)) != len(seeds):
        raise ConfigError(f"seeds must be distinct, got {list(seeds)}")
    return list(seeds)


def _train_options(options: Any, where: str) -> dict:
    from .training.options import TrainOptions

    if not isinstance(options, dict):
        raise ConfigError(f"{where} must be a mapping of training options, got {options!r}")
    for key, section in _SET_BY_SWEEP.items():
        if key in options:
            raise ConfigError(f"{where} must not set {key!r}: the sweep sets it from `{section}`")
    options = {"progress": False, "figures": False, "num_threads": 1, **options}
    from_dict(TrainOptions, options, where=where)  # unknown keys and bad values, before anything runs
    return options


def _name(name: Any, what: str) -> str:
    if not isinstance(name, str) or not _NAME.match(name):
        raise ConfigError(f"{what} {name!r} must be a plain name (letters, digits, _ . + -): it names the cells' folders")
    return name


# ----------------------------------------------------------------------------- one cell


def run_cell(cell: Cell, tracked: dict | None = None) -> dict[str, Any]:
    """Train and evaluate one cell (a Dask task, or in-process); write and return its record.

    ``tracked``: the sweep's experiment trackers (see :func:`_tracked`), not part of the cell's spec
    (logging does not change its numbers). Never raises for a failing cell: the record says
    ``status: failed`` with a one-line ``error`` (an unexpected exception also leaves
    ``traceback.txt`` in the cell folder).
    """
    from . import evaluation, training

    spec, t0 = cell.spec, time.perf_counter()
    options = _tracked_options(spec["train"], tracked or {})
    if cell.dir.exists():  # an interrupted or changed cell starts again from scratch
        shutil.rmtree(cell.dir)
    try:
        with runtime.limit_threads(spec["train"]["num_threads"]):
            summary = training.train(spec["model"], data=spec["data"]["train"], out=cell.dir,
                                     model_config=spec["model_config"], **options)
            scores = evaluation.evaluate(cell.dir, data=[spec["data"]["test"]], out=cell.dir / "eval.json",
                                         n_solver_samples=spec["evaluate"]["solver_samples"],
                                         batch_size=spec["evaluate"]["batch_size"])
        scored = scores["datasets"][0]
        training.tracking.log_scores(cell.dir, options, scored, step=summary["epochs"])
        record = _record(cell, "ok", rel_l2_mean=scored["rel_l2_mean"], rel_l2_std=scored["rel_l2_std"],
                         rel_l2_max=scored["rel_l2_max"], n_parameters=summary["n_parameters"],
                         train_seconds=summary["seconds"], epochs=summary["epochs"], train_loss=summary["train_loss"],
                         model_s_per_sample=scored["model_s_per_sample"])
    except Preempted:  # a job signal: not the cell's failure; the sweep stops (a re-run redoes the cell)
        raise
    except SciMLError as exc:
        record = _record(cell, "failed", error=_one_line(exc))
    except Exception as exc:  # a bug: keep the traceback for the report, and let the other cells go on
        cell.dir.mkdir(parents=True, exist_ok=True)
        (cell.dir / "traceback.txt").write_text(traceback.format_exc())
        record = _record(cell, "failed", error=f"{type(exc).__name__}: {_one_line(exc)} (see {cell.dir / 'traceback.txt'})")
    record["wall_seconds"] = time.perf_counter() - t0
    write_record(cell, record)
    return record


def _record(cell: Cell, status: str, **values: Any) -> dict[str, Any]:
    return {"cell": cell.name, "model": cell.model, "dataset": cell.dataset, "seed": cell.seed, "status": status,
            **values, "host": socket.gethostname(), "finished": time.strftime("%Y-%m-%dT%H:%M:%S"), "spec": cell.spec}


def write_record(cell: Cell, record: dict) -> None:
    atomic_write_text(cell.dir / RESULT, json.dumps(json_ready(record), indent=2) + "\n")


def read_record(cell: Cell) -> dict | None:
    """The cell's record, or None when it has none (or a damaged one)."""
    try:
        record = json.loads(read_text(cell.dir / RESULT))
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) and record.get("cell") == cell.name else None


def finished(cell: Cell) -> bool:
    """Whether the cell succeeded earlier with the very same spec (a re-run skips it)."""
    record = read_record(cell)
    return record is not None and record.get("status") == "ok" and record.get("spec") == cell.spec


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


# ----------------------------------------------------------------------------- the sweep


def run_sweep(
    config: str | Path | dict,
    *,
    out: str | Path | None = None,
    cluster: str | None = None,
    workers: int | None = None,
    progress: bool = True,
    on_cell: Callable[[dict], None] | None = None,
    logger: str | list[str] | None = None,
) -> dict[str, Any]:
    """Run the cells of a sweep config that have not finished yet; gather the results table.

    ``cluster``/``workers`` override the config's ``cluster:`` section (see
    :func:`sciml.distributed.cluster_spec`); local with one worker runs the cells here, one
    after the other. ``logger`` (``tensorboard``, ``mlflow``) adds experiment trackers to every cell,
    as the ``logger`` training option does, without changing the cells' specs: TensorBoard in each
    cell's folder (``tensorboard --logdir OUT/cells``), MLflow one run per cell in ``OUT/mlruns``
    (or ``MLFLOW_TRACKING_URI``), experiment named after the sweep. Returns ``{"out", "cells", "ran",
    "skipped", "failed": [(cell, error)], "where", "summary"`` (:func:`summarise`) ``, "csv",
    "markdown", "plot"}``.
    """
    from .distributed import cluster_spec, dask_client
    from .distributed.cluster import check_can_submit

    plan = load_sweep(config, out)
    where = cluster_spec(cluster, workers, settings=plan.config.cluster)
    check_can_submit(where)  # before the data are generated
    tracked = _tracked(plan, logger)
    plan.root.mkdir(parents=True, exist_ok=True)
    with output_lock(plan.root, "out"):  # one sweep at a time writes OUT
        todo = [c for c in plan.cells if not finished(c)]
        _generate(plan, progress)
        failed: list[tuple[str, str]] = []
        records = {c.name: r for c in plan.cells if (r := read_record(c)) is not None}

        def done(record: dict) -> None:
            if record["status"] != "ok":
                failed.append((record["cell"], record["error"]))
            records[record["cell"]] = record
            gather(plan, records)
            if on_cell:
                on_cell(record)

        with runtime.progress(len(todo), "cells", enabled=progress and len(todo) > 1, text="{task.fields[last]}",
                              fields={"last": ""}) as advance:
            if not todo:
                pass
            elif where.in_process:
                for cell in todo:
                    runtime.raise_pending()
                    done(run_cell(cell, tracked))
                    advance(last=f"last: {cell.name}")
            else:
                with dask_client(spec=where) as client:
                    for record in _on_dask(client, todo, tracked):
                        done(record)
                        advance(last=f"last: {record['cell']}")
                        runtime.raise_pending()
        tables = gather(plan, records, plot=True)
        return {"out": str(plan.root), "cells": len(plan.cells), "ran": len(todo), "skipped": len(plan.cells) - len(todo),
                "failed": failed, "where": where.describe(), "summary": summarise(list(records.values())), **tables}


def _on_dask(client, todo: list[Cell], tracked: dict | None = None) -> Iterator[dict]:
    """Records of ``todo``, each cell an independent task, yielded as they finish."""
    from .distributed.cluster import finished_tasks, tasks_from

    stamp = time.time_ns()
    for cell, future in finished_tasks(client, tasks_from(todo, lambda c: (c, run_cell, (c, tracked), f"sweep-{c.name}-{stamp}"))):
        try:
            record = future.result()
        except Exception as exc:  # the task never ran to its end: its worker died (KilledWorker), ...
            record = _record(cell, "failed", error=f"{type(exc).__name__}: {_one_line(exc)}")
            write_record(cell, record)
        yield record


def _tracked(plan: Plan, logger: str | list[str] | None) -> dict:
    """The sweep's trackers: ``logger`` (checked to be installed, with those the config's train
    options name) and one MLflow store and experiment for all the cells."""
    from .training import tracking

    names = tracking.parse_loggers(logger)
    tracking.require([*names, *(n for c in plan.cells for n in tracking.parse_loggers(c.spec["train"].get("logger")))])
    uri = os.environ.get("MLFLOW_TRACKING_URI") or (plan.root / "mlruns").resolve().as_uri()
    return {"logger": list(names), "tracking_uri": uri, "experiment": plan.config.name}


def _tracked_options(train: dict, tracked: dict) -> dict:
    """A cell's training options with the sweep's trackers (the config's own MLflow settings win)."""
    logger = tracked.get("logger") or train.get("logger")
    if not logger:
        return dict(train)
    return {"tracking_uri": tracked.get("tracking_uri"), "experiment": tracked.get("experiment"), **train, "logger": logger}


def _generate(plan: Plan, progress: bool) -> None:
    """Make the datasets the config asks to generate (reused when made by the same request)."""
    from .workflow import generate_cached

    for name, splits in plan.generate.items():
        for split, (path, request) in splits.items():
            generate_cached(path, request, progress)


# ----------------------------------------------------------------------------- results

CSV_COLUMNS = ("cell", "model", "dataset", "seed", "status", "rel_l2_mean", "rel_l2_std", "rel_l2_max",
               "n_parameters", "train_seconds", "epochs", "train_loss", "model_s_per_sample", "host", "finished", "error")


def gather(plan: Plan, records: dict[str, dict] | None = None, plot: bool = False) -> dict[str, str]:
    """Rewrite ``results.csv`` (a row per recorded cell, in grid order) and ``results.md`` (and the
    plot) from ``records`` (cell name -> record; default: read from the cells' folders)."""
    if records is None:
        records = {c.name: r for c in plan.cells if (r := read_record(c)) is not None}
    records = [records[c.name] for c in plan.cells if c.name in records]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, CSV_COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for r in records:
        writer.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in CSV_COLUMNS})
    paths = {"csv": plan.root / "results.csv", "markdown": plan.root / "results.md"}
    atomic_write_text(paths["csv"], buf.getvalue())
    summary = summarise(records)
    atomic_write_text(paths["markdown"], _markdown(plan, records, summary))
    if plot:
        paths["plot"] = plan.root / "results.png"
        _plot(plan, summary, records, paths["plot"])
    return {k: str(v) for k, v in paths.items()}


def summarise(records: list[dict]) -> list[dict[str, Any]]:
    """Per (dataset, model): the seeds that succeeded, mean and std (population, over seeds) of
    the test relative L2 and of the training time, and the parameter count."""
    import numpy as np

    groups: dict[tuple[str, str], list[dict]] = {}
    for r in records:
        if r["status"] == "ok":
            groups.setdefault((r["dataset"], r["model"]), []).append(r)
    rows = []
    for (dataset, model), rs in groups.items():
        l2 = np.array([r["rel_l2_mean"] if r["rel_l2_mean"] is not None else math.nan for r in rs], dtype=float)
        secs = np.array([r["train_seconds"] for r in rs], dtype=float)
        rows.append({"dataset": dataset, "model": model, "seeds": sorted(r["seed"] for r in rs),
                     "rel_l2_mean": float(l2.mean()), "rel_l2_std": float(l2.std()),
                     "n_parameters": rs[0]["n_parameters"],
                     "train_seconds_mean": float(secs.mean()), "train_seconds_std": float(secs.std())})
    return rows


def _markdown(plan: Plan, records: list[dict], summary: list[dict]) -> str:
    ok = sum(r["status"] == "ok" for r in records)
    lines = [f"# Sweep {plan.config.name}", "",
             f"{ok} of {len(plan.cells)} cells finished; test relative L2 averaged over each test set, then "
             "mean ± std (population) over seeds.", "",
             "| dataset | model | seeds | test rel. L2 | parameters | training s |",
             "|---|---|---|---|---:|---:|"]
    for s in summary:
        lines.append(f"| {s['dataset']} | {s['model']} | {len(s['seeds'])} | {s['rel_l2_mean']:.4g} ± {s['rel_l2_std']:.2g} "
                     f"| {s['n_parameters']:,} | {s['train_seconds_mean']:.3g} ± {s['train_seconds_std']:.2g} |")
    failed = [r for r in records if r["status"] != "ok"]
    if failed:
        lines += ["", "## Failed cells", ""] + [f"- `{r['cell']}`: {r['error']}" for r in failed]
    return "\n".join(lines) + "\n"


def _plot(plan: Plan, summary: list[dict], records: list[dict], path: Path) -> None:
    """Test relative L2 per model, one panel per dataset: each seed a dot, the mean ± std a bar."""
    from .plots import figure, save

    datasets = list(dict.fromkeys(c.dataset for c in plan.cells))
    models = list(dict.fromkeys(c.model for c in plan.cells))
    fig = figure(max(4.0, 1.2 + 0.9 * len(models)) * len(datasets), 3.6)
    axes = fig.subplots(1, len(datasets), squeeze=False)[0]
    for ax, dataset in zip(axes, datasets):
        for x, model in enumerate(models):
            seeds = [r["rel_l2_mean"] for r in records
                     if r["status"] == "ok" and r["dataset"] == dataset and r["model"] == model and r["rel_l2_mean"]]
            stats = [s for s in summary if s["dataset"] == dataset and s["model"] == model]
            if stats:
                ax.errorbar([x], [stats[0]["rel_l2_mean"]], yerr=[stats[0]["rel_l2_std"]], fmt="s", color="C0",
                            capsize=4, ms=7, label="mean ± std over seeds" if x == 0 else None)
            ax.plot([x + 0.12] * len(seeds), seeds, "o", color="C1", ms=4, alpha=0.8,
                    label="one seed" if x == 0 else None)
        ax.set_xticks(range(len(models)), models, rotation=30 if len(models) > 3 else 0)
        ax.set_xlim(-0.5, len(models) - 0.5)
        values = [r["rel_l2_mean"] for r in records if r["status"] == "ok" and r["dataset"] == dataset and r["rel_l2_mean"]]
        if values and max(values) > 10 * min(values):  # errors spanning decades: a log axis
            ax.set_yscale("log")
        else:
            ax.set_ylim(bottom=0)
        ax.set_title(dataset, fontsize=10)
        ax.set_ylabel("test relative L2")
        ax.grid(True, axis="y", which="both", alpha=0.3)
    if records:
        axes[0].legend(fontsize=8)
    fig.suptitle(f"sweep {plan.config.name}", fontsize=11)
    save(fig, path)
