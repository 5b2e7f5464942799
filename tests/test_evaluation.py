"""Evaluation: metrics equal a direct computation, solver timing, resolution transfer,
signature mismatches, figures and the report."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from sciml import datasets, evaluation, training
from sciml.datasets.format import DatasetWriter
from sciml.errors import DataError, ModelError

SMALL_FNO = {"modes": [4, 4], "width": 8, "n_layers": 2, "projection": 16}
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def run(tmp_path_factory, darcy16):
    out = tmp_path_factory.mktemp("eval") / "run"
    training.train("fno", data=darcy16[0], out=out, epochs=3, batch_size=8, lr=1e-2, model_config=SMALL_FNO,
                   progress=False, figures=False, num_threads=1)
    return out


@pytest.fixture(scope="module")
def result(run, darcy16):
    return evaluation.evaluate(run, data=[darcy16[1]], n_solver_samples=2)


def test_evaluate_equals_a_direct_numpy_computation(run, result, darcy16):
    model, info = training.load_run(run)
    data = training.load_grid_data(darcy16[1])
    pred = training.predict(model, info.normaliser, data.x).numpy().astype(np.float64)
    true = data.y.numpy().astype(np.float64)
    n = true.shape[0]
    err = np.linalg.norm((pred - true).reshape(n, -1), axis=1) / np.linalg.norm(true.reshape(n, -1), axis=1)
    r = result["datasets"][0]
    assert r["n"] == n == 8 and r["resolution"] == "16x16" and r["pde"] == "darcy"
    assert r["rel_l2_mean"] == pytest.approx(err.mean(), rel=1e-6)
    assert r["rel_l2_std"] == pytest.approx(err.std(), rel=1e-5)
    assert r["rel_l2_max"] == pytest.approx(err.max(), rel=1e-6)
    assert 0 < r["rel_l2_mean"] < 1


def test_speed_is_measured_against_the_classical_solver(result):
    r = result["datasets"][0]
    assert r["model_s_per_sample"] > 0 and r["solver_s_per_sample"] > 0 and r["solver_samples"] == 2
    assert r["speedup"] == pytest.approx(r["solver_s_per_sample"] / r["model_s_per_sample"])


def test_result_is_written_as_json(run, result, tmp_path, darcy16):
    on_disk = json.loads((run / "eval.json").read_text())
    assert on_disk["datasets"][0]["rel_l2_mean"] == result["datasets"][0]["rel_l2_mean"]
    assert result["out"] == str(run / "eval.json") and result["model"] == "fno"
    other = evaluation.evaluate(run, data=darcy16[1], out=tmp_path / "e.json", n_solver_samples=0)
    assert json.loads((tmp_path / "e.json").read_text())["datasets"][0]["solver_s_per_sample"] is None
    assert other["datasets"][0]["speedup"] is None


def _poisson_file(path, s=16, n=3):
    xs = np.linspace(0, 1, s)
    w = DatasetWriter(path, n, {"x": xs, "y": xs}, {"f": ("x", "y"), "u": ("x", "y")},
                      {"pde": "poisson", "inputs": "f", "outputs": "u", "params": {}, "seed": 0, "grid": "node"})
    rng = np.random.default_rng(0)
    for i in range(n):
        w.write(i, f=rng.normal(size=(s, s)), u=rng.normal(size=(s, s)))
    return w.finish()


def test_dataset_of_another_problem_is_refused(run, tmp_path):
    path = _poisson_file(tmp_path / "poisson.h5")
    with pytest.raises(DataError, match=r"model was trained on pde=darcy inputs a -> u, got pde=poisson inputs f -> u"):
        evaluation.evaluate(run, data=[path], n_solver_samples=0)


def test_fno_transfers_to_another_resolution_with_interpolated_statistics(run, tmp_path):
    fine = datasets.generate("darcy", n=3, resolution=24, seed=5, out=tmp_path / "fine.h5", progress=False)
    r = evaluation.evaluate(run, data=[fine], n_solver_samples=0, out=tmp_path / "e.json")["datasets"][0]
    assert r["resolution"] == "24x24" and r["normaliser_resampled"]
    assert any("interpolated" in note for note in r["notes"]), r["notes"]
    assert np.isfinite(r["rel_l2_mean"]) and r["rel_l2_mean"] < 1


def test_fixed_sensor_models_need_the_training_resolution(tmp_path, darcy16):
    out = tmp_path / "don"
    training.train("deeponet", data=darcy16[0], out=out, epochs=1, batch_size=8, progress=False, figures=False,
                   model_config={"branch": [16, 16], "trunk": [16, 16]})
    same = evaluation.evaluate(out, data=[darcy16[1]], n_solver_samples=0)["datasets"][0]
    assert np.isfinite(same["rel_l2_mean"]) and not same["normaliser_resampled"]
    fine = datasets.generate("darcy", n=2, resolution=20, seed=5, out=tmp_path / "fine.h5", progress=False)
    with pytest.raises(ModelError, match="deeponet .* needs the training resolution 16x16, got 20x20"):
        evaluation.evaluate(out, data=[fine], n_solver_samples=0)
    # several resolutions: the one it cannot read is reported in its row, the other is evaluated
    both = evaluation.evaluate(out, data=[darcy16[1], fine], n_solver_samples=0)["datasets"]
    assert both[0]["rel_l2_mean"] == same["rel_l2_mean"]
    assert set(both[1]) == {"path", "error"} and "needs the training resolution 16x16" in both[1]["error"]
    from typer.testing import CliRunner

    from sciml.cli.app import app

    res = CliRunner().invoke(app, ["evaluate", str(out), "--data", str(darcy16[1]), "--data", str(fine),
                                   "--solver-samples", "0"])
    assert res.exit_code == 0, res.output
    assert "fine.h5 not evaluated: deeponet reads its inputs at fixed sensors" in " ".join(res.output.split())


def test_plots_are_pngs(run, tmp_path):
    x, y = torch.rand(3, 1, 10, 12), torch.rand(3, 1, 10, 12)
    p = evaluation.plot_samples(x, y, y + 0.1 * torch.rand_like(y), tmp_path / "s.png", n=2)
    assert p.read_bytes()[:8] == PNG
    p1 = evaluation.plot_samples(np.random.rand(2, 1, 30), np.random.rand(2, 1, 30), np.random.rand(2, 1, 30),
                                 tmp_path / "s1.png")
    assert p1.read_bytes()[:8] == PNG
    assert evaluation.plot_loss(run, tmp_path / "loss.png").read_bytes()[:8] == PNG


def test_report_has_the_metrics_table_and_figures(run, result, tmp_path, darcy16):
    report = evaluation.write_report(run, result, tmp_path / "report", [darcy16[1]], n_samples=2)
    text = report.read_text()
    r = result["datasets"][0]
    assert f"{r['rel_l2_mean']:.4f}" in text and "| dataset | grid |" in text
    for png in ("loss.png", "samples_test.png"):
        assert f"]({png})" in text
        assert (tmp_path / "report" / png).read_bytes()[:8] == PNG
