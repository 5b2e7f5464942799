"""`sciml run`: the whole experiment from one YAML file, at a tiny size."""

from __future__ import annotations

import json

import pytest
import yaml

from sciml import workflow
from sciml.errors import ConfigError


def tiny_config(tmp_path, **over):
    cfg = {
        "name": "tiny",
        "out": str(tmp_path / "exp"),
        "seed": 0,
        "data": {"pde": "darcy", "resolution": 16, "n_train": 48, "n_test": 8},
        "model": "fno",
        "model_config": {"modes": [6, 6], "width": 12},
        "train": {"epochs": 6, "batch_size": 8, "lr": 0.005},
        "evaluate": {"solver_samples": 3, "plot_samples": 2},
    }
    cfg.update(over)
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_run_writes_report_with_figures_and_learns(tmp_path):
    result = workflow.run(tiny_config(tmp_path), progress=False)
    root = tmp_path / "exp"
    report = root / "report" / "report.md"
    assert report.exists()
    pngs = list((root / "report").glob("*.png"))
    assert len(pngs) >= 2, pngs
    text = report.read_text()
    assert f"{result['rel_l2']:.4f}" in text
    ev = json.loads((root / "run" / "eval.json").read_text())
    assert ev["datasets"][0]["rel_l2_mean"] == pytest.approx(result["rel_l2"])
    # the trained operator must beat the trivial predictor "zero" (rel. L2 = 1) by far
    assert result["rel_l2"] < 0.5
    lines = [json.loads(x) for x in (root / "run" / "metrics.jsonl").read_text().splitlines()]
    assert lines[-1]["train_loss"] < lines[0]["train_loss"]


def test_rerun_reuses_data_and_finished_run(tmp_path):
    cfg = tiny_config(tmp_path, train={"epochs": 2, "batch_size": 8})
    workflow.run(cfg, progress=False)
    train_h5 = tmp_path / "exp" / "data" / "train.h5"
    stamp = train_h5.stat().st_mtime_ns
    again = workflow.run(cfg, progress=False)
    assert train_h5.stat().st_mtime_ns == stamp
    assert again["rel_l2"] > 0


def test_unknown_section_key_is_named(tmp_path):
    with pytest.raises(ConfigError, match="n_trian"):
        workflow.run(tiny_config(tmp_path, data={"pde": "darcy", "n_trian": 3}), progress=False)
    with pytest.raises(ConfigError, match="modle"):
        workflow.run(tiny_config(tmp_path, modle="fno"), progress=False)


def test_interrupted_generation_resumes_with_the_same_result(tmp_path):
    from sciml import datasets
    from sciml.datasets.format import partial_path

    cfg = tiny_config(tmp_path, train={"epochs": 1, "batch_size": 8})
    first = workflow.run(cfg, progress=False)
    train_h5 = tmp_path / "exp" / "data" / "train.h5"
    with datasets.open(train_h5) as ds:
        reference = ds["u"].values.copy()
    # fake an interruption: the finished file goes back to being a .partial with half the samples undone
    import h5py

    train_h5.rename(partial_path(train_h5))
    with h5py.File(partial_path(train_h5), "a") as f:
        f["done"][24:] = 0
        f["u"][24:] = 0.0
    again = workflow.run(cfg, progress=False)
    with datasets.open(train_h5) as ds:
        assert (ds["u"].values == reference).all()
    assert again["rel_l2"] == pytest.approx(first["rel_l2"])
