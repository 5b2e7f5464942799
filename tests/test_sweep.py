"""Sweeps: a (model x dataset x seed) grid of train + evaluate cells on a real 2-worker LocalCluster."""

from __future__ import annotations

import csv
import json
import math

import pytest
import yaml

from test_cli import assert_one_line_error, run_cli

MODELS = {
    "fno": {"model_config": {"modes": [4, 4], "width": 8, "n_layers": 2, "projection": 16}},
    "deeponet": {"model_config": {"branch": [16, 16], "trunk": [16, 16]}},
}


def write_config(folder, darcy16, **changes):
    train, test = darcy16
    config = {
        "name": "tiny",
        "models": MODELS,
        "datasets": {"darcy": {"train": str(train), "test": str(test)}},
        "seeds": [0, 1],
        "train": {"epochs": 2, "batch_size": 8},
        "cluster": {"queue": "ignored-locally", "cores": 4},
    }
    config.update(changes)
    path = folder / "sweep.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def read_rows(out):
    with open(out / "results.csv") as f:
        return {row["cell"]: row for row in csv.DictReader(f)}


def sweep(capsys, config, out, *args):
    code, stdout, err = run_cli(["sweep", config, "--out", out, "--no-progress", *args], capsys)
    assert code == 0, err
    return stdout


@pytest.fixture(scope="module")
def runs(tmp_path_factory, darcy16):
    """The same 4-cell sweep on 2 Dask workers and serially (``--workers 1``, in-process)."""
    from sciml.cli.app import main  # a module fixture has no capsys: call the CLI directly

    folder = tmp_path_factory.mktemp("sweep")
    config = write_config(folder, darcy16)
    outputs = {}
    for name, workers in (("parallel", "2"), ("serial", "1")):
        with pytest.raises(SystemExit) as exit_:
            main(["sweep", str(config), "--out", str(folder / name), "--workers", workers, "--no-progress"])
        assert exit_.value.code == 0
        outputs[name] = folder / name
    return config, outputs


def test_two_workers_write_a_row_per_cell_with_finite_errors(runs):
    _, outputs = runs
    rows = read_rows(outputs["parallel"])
    assert sorted(rows) == sorted(f"{m}-darcy-s{s}" for m in MODELS for s in (0, 1))
    for row in rows.values():
        assert row["status"] == "ok" and row["error"] == ""
        assert 0 < float(row["rel_l2_mean"]) < 2 and math.isfinite(float(row["rel_l2_std"]))
        assert int(row["n_parameters"]) > 0 and int(row["epochs"]) == 2 and float(row["train_seconds"]) > 0
    # the two seeds of a model differ (they are two trainings, not one result copied)
    assert rows["fno-darcy-s0"]["rel_l2_mean"] != rows["fno-darcy-s1"]["rel_l2_mean"]
    md = (outputs["parallel"] / "results.md").read_text()
    for model in MODELS:
        mean = sum(float(rows[f"{model}-darcy-s{s}"]["rel_l2_mean"]) for s in (0, 1)) / 2
        assert f"| darcy | {model} | 2 | {mean:.4g} ± " in md
    assert (outputs["parallel"] / "results.png").stat().st_size > 5000
    record = json.loads((outputs["parallel"] / "cells" / "fno-darcy-s0" / "result.json").read_text())
    assert record["spec"]["train"]["seed"] == 0 and record["spec"]["data"]["test"].endswith("test.h5")
    assert (outputs["parallel"] / "cells" / "fno-darcy-s0" / "weights.safetensors").is_file()  # the cell is a run


def test_cells_on_two_workers_equal_the_serial_run(runs):
    """Training is deterministic per seed on one thread: the worker count changes no number."""
    _, outputs = runs
    parallel, serial = read_rows(outputs["parallel"]), read_rows(outputs["serial"])
    assert parallel.keys() == serial.keys()
    for cell in parallel:
        for key in ("rel_l2_mean", "rel_l2_std", "rel_l2_max", "train_loss"):
            assert float(parallel[cell][key]) == pytest.approx(float(serial[cell][key]), rel=1e-9, abs=0), (cell, key)
        assert parallel[cell]["n_parameters"] == serial[cell]["n_parameters"]


def test_a_rerun_trains_only_the_cells_without_a_result(runs, capsys):
    config, outputs = runs
    out = outputs["serial"]
    before = read_rows(out)
    cells = out / "cells"
    stamps = {p.parent.name: p.stat().st_mtime_ns for p in cells.glob("*/result.json")}
    (cells / "deeponet-darcy-s1" / "result.json").unlink()
    stdout = sweep(capsys, config, out, "--workers", "1")
    assert "ran 1 cells" in stdout and "skipped 3 finished earlier" in stdout
    after = {p.parent.name: p.stat().st_mtime_ns for p in cells.glob("*/result.json")}
    assert {c for c in after if after[c] != stamps[c]} == {"deeponet-darcy-s1"}
    rows = read_rows(out)
    assert rows["deeponet-darcy-s1"]["rel_l2_mean"] == before["deeponet-darcy-s1"]["rel_l2_mean"]  # retrained, same numbers
    # nothing left: a third run trains nothing
    assert "ran 0 cells" in sweep(capsys, config, out, "--workers", "1")


def test_a_failed_cell_is_recorded_and_the_others_finish(tmp_path, darcy16, capsys):
    models = {"fno": MODELS["fno"], "broken": {"model": "fno", "model_config": {"modez": 3}}}
    config = write_config(tmp_path, darcy16, models=models, seeds=[0], train={"epochs": 1, "batch_size": 8})
    code, _, err = run_cli(["sweep", config, "--out", tmp_path / "out", "--workers", "1", "--no-progress"], capsys)
    assert_one_line_error(code, err, "1 of 2 cells failed", "broken-darcy-s0", "modez")
    rows = read_rows(tmp_path / "out")
    assert rows["fno-darcy-s0"]["status"] == "ok" and 0 < float(rows["fno-darcy-s0"]["rel_l2_mean"]) < 2
    assert rows["broken-darcy-s0"]["status"] == "failed" and "modez" in rows["broken-darcy-s0"]["error"]
    assert "\n" not in rows["broken-darcy-s0"]["error"]
    assert "broken-darcy-s0" in (tmp_path / "out" / "results.md").read_text()


@pytest.mark.parametrize("change, needles", [
    ({"sedes": [0]}, ["unknown key 'sedes'", "did you mean 'seeds'"]),
    ({"train": {"epoch": 2}}, ["unknown key 'epoch'", "did you mean 'epochs'"]),
    ({"train": {"epochs": 2, "seed": 3}}, ["must not set 'seed'", "seeds"]),
    ({"models": ["fno", "fnoo"]}, ["unknown model 'fnoo'"]),
    ({"models": {"fno": {"model_conifg": {}}}}, ["did you mean 'model_config'"]),
    ({"datasets": {"darcy": {"train": "nowhere.h5", "test": "nowhere.h5"}}}, ["nowhere.h5", "not found"]),
    ({"cluster": {"queu": "cpu"}}, ["unknown key 'queu' in the cluster section", "did you mean 'queue'"]),
    ({"seeds": [0, 0]}, ["seeds must be distinct"]),
])
def test_a_bad_config_is_one_clear_line(tmp_path, darcy16, capsys, change, needles):
    config = write_config(tmp_path, darcy16, **change)
    code, _, err = run_cli(["sweep", config, "--out", tmp_path / "out", "--workers", "1"], capsys)
    assert_one_line_error(code, err, *needles)
    assert not (tmp_path / "out").exists()  # nothing ran


def test_dry_run_lists_the_cells_and_runs_nothing(tmp_path, darcy16, capsys):
    config = write_config(tmp_path, darcy16)
    code, out, err = run_cli(["sweep", config, "--out", tmp_path / "out", "--dry-run", "--workers", "2"], capsys)
    assert code == 0, err
    assert "4 of 4 cells to run on a local Dask cluster of 2 workers" in out and "fno-darcy-s1" in out
    assert not (tmp_path / "out").exists()


def test_the_example_config_is_valid(tmp_path):
    from pathlib import Path

    from sciml.sweep import load_sweep

    plan = load_sweep(Path(__file__).parents[1] / "configs" / "sweep_example.yaml", out=tmp_path)
    assert len(plan.cells) == 4 and plan.generate  # it makes its own data
