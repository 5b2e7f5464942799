"""One experiment from one YAML file: generate train/test data -> train -> evaluate -> report.

The YAML has the sections below (every key optional, unknown keys are an error)::

    name: quickstart
    out: runs/quickstart          # everything goes under this folder
    seed: 0                       # train data use `seed`, test data `seed + 1`, training `seed`
    data: {pde: darcy, resolution: 32, n_train: 1000, n_test: 100, subsample: 1, params: {}}
    model: fno                    # a model or preset name (`sciml models`)
    model_config: {modes: [12, 12], width: 32}
    train: {epochs: 30, batch_size: 20, lr: 0.001}   # any `sciml train` option
    evaluate: {solver_samples: 10, plot_samples: 3}

Re-running reuses finished data files and continues an unfinished training run.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from .config import from_dict, load_yaml
from . import runs
from .errors import ConfigError


@dataclasses.dataclass(frozen=True)
class DataSection:
    pde: str = "darcy"
    resolution: int = 32
    n_train: int = 1000
    n_test: int = 100
    subsample: int = 1
    dtype: str = "float32"
    params: dict = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class EvaluateSection:
    solver_samples: int = 10
    plot_samples: int = 3


@dataclasses.dataclass(frozen=True)
class Experiment:
    name: str = "experiment"
    out: str = "runs/experiment"
    seed: int = 0
    data: dict = dataclasses.field(default_factory=dict)
    model: str = "fno"
    model_config: dict = dataclasses.field(default_factory=dict)
    train: dict = dataclasses.field(default_factory=dict)
    evaluate: dict = dataclasses.field(default_factory=dict)


def generate_cached(path: Path, request: dict[str, Any], progress: bool = True) -> Path:
    """Generate ``path`` unless it exists from the very same request (recorded next to it).

    An interrupted generation of the same request resumes from its ``.partial`` file; one of
    another request is discarded.
    """
    from . import datasets
    from .datasets.format import partial_path

    stamp = path.with_name(path.name + ".request.json")
    wanted = json.dumps(request, sort_keys=True)
    same = stamp.exists() and stamp.read_text() == wanted
    if path.exists() and same:
        return path
    path.unlink(missing_ok=True)
    resume = same and partial_path(path).exists()
    if not resume:
        partial_path(path).unlink(missing_ok=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    stamp.write_text(wanted)
    req = dict(request)
    pde = req.pop("pde")
    params = req.pop("params")
    datasets.generate(pde, out=path, progress=progress, resume=resume, **req, **params)
    return path


def load_experiment(config: str | Path | dict) -> Experiment:
    raw = load_yaml(config) if not isinstance(config, dict) else dict(config)
    where = f"experiment config {config}" if not isinstance(config, dict) else "experiment config"
    exp = from_dict(Experiment, raw, where=where)
    from_dict(DataSection, exp.data, where="the data section")
    from_dict(EvaluateSection, exp.evaluate, where="the evaluate section")
    return exp


def run(config: str | Path | dict, out: str | Path | None = None, progress: bool = True) -> dict:
    """Run an experiment; returns ``{"rel_l2", "report", "eval", "run_dir"}``."""
    from . import evaluation, training

    exp = load_experiment(config)
    data = from_dict(DataSection, exp.data, where="the data section")
    ev = from_dict(EvaluateSection, exp.evaluate, where="the evaluate section")
    root = Path(out or exp.out)
    if "data" in exp.train or "out" in exp.train:
        raise ConfigError("the train section must not set data/out: the experiment sets them")
    base = {"pde": data.pde, "resolution": data.resolution, "subsample": data.subsample,
            "dtype": data.dtype, "params": dict(data.params)}
    train_h5 = generate_cached(root / "data" / "train.h5", {**base, "n": data.n_train, "seed": exp.seed}, progress)
    test_h5 = generate_cached(root / "data" / "test.h5", {**base, "n": data.n_test, "seed": exp.seed + 1}, progress)

    run_dir = root / "run"
    options = {"seed": exp.seed, **exp.train, "progress": progress}
    if exp.model_config:
        options["model_config"] = dict(exp.model_config)
    if runs.holds_run(run_dir):
        training.resume(run_dir, test_data=test_h5, **options)
    else:
        training.train(exp.model, data=train_h5, out=run_dir, test_data=test_h5, **options)

    result = evaluation.evaluate(run_dir, data=[test_h5], n_solver_samples=ev.solver_samples)
    report = evaluation.write_report(run_dir, result, root / "report", [test_h5], n_samples=ev.plot_samples,
                                     title=exp.name)
    rel = result["datasets"][0]["rel_l2_mean"]
    return {"rel_l2": rel, "report": str(report), "eval": result, "run_dir": str(run_dir)}
