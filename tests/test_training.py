"""Training: losses, normalisers, options, the loop, resume, divergence and misuse errors."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from sciml import training
from sciml.errors import ConfigError, DataError, ModelError
from sciml.training.losses import mse_loss, rel_l2_loss, relative_l2
from sciml.training.normalisers import DataNormaliser, GlobalGaussian, UnitGaussian, interpolate_grid

SMALL_FNO = {"modes": [4, 4], "width": 8, "n_layers": 2, "projection": 16}
QUIET = {"progress": False, "figures": False, "num_threads": 1}


def small_run(data, out, **options):
    kw = {"epochs": 3, "batch_size": 8, "lr": 5e-3, "model_config": SMALL_FNO, **QUIET, **options}
    return training.train("fno", data=data, out=out, **kw)


# ----------------------------------------------------------------------------- losses


def test_relative_l2_matches_numpy():
    rng = np.random.default_rng(0)
    p, t = rng.normal(size=(5, 2, 7, 6)), rng.normal(size=(5, 2, 7, 6))
    want = np.linalg.norm((p - t).reshape(5, -1), axis=1) / np.linalg.norm(t.reshape(5, -1), axis=1)
    got = relative_l2(torch.from_numpy(p), torch.from_numpy(t)).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-12)
    assert float(rel_l2_loss(torch.from_numpy(p), torch.from_numpy(t))) == pytest.approx(want.mean(), rel=1e-12)
    assert float(mse_loss(torch.from_numpy(p), torch.from_numpy(t))) == pytest.approx(np.mean((p - t) ** 2), rel=1e-12)


def test_relative_l2_rejects_shape_mismatch():
    with pytest.raises(ValueError, match="shape"):
        relative_l2(torch.zeros(2, 1, 4), torch.ones(2, 1, 5))


# ----------------------------------------------------------------------------- normalisers


def test_pointwise_normaliser_is_fnos_unit_gaussian_and_round_trips():
    x = torch.rand(30, 2, 9, 7) * 5 + 3
    norm = UnitGaussian.fit(x)
    # FNO utilities3.UnitGaussianNormalizer: torch.mean/std over the sample axis (unbiased), eps 1e-5
    torch.testing.assert_close(norm.mean, torch.mean(x, 0), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(norm.std, torch.std(x, 0), rtol=1e-5, atol=1e-6)
    enc = norm.encode(x)
    torch.testing.assert_close(enc, (x - torch.mean(x, 0)) / (torch.std(x, 0) + 1e-5), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(norm.decode(enc), x, rtol=1e-6, atol=1e-5)


def test_global_normaliser_has_one_mean_and_std_per_channel():
    x = torch.randn(20, 2, 5, 5, dtype=torch.float64)
    x[:, 1] = x[:, 1] * 10 + 4
    norm = GlobalGaussian.fit(x)
    for c in range(2):
        vals = x[:, c].numpy().ravel()
        assert float(norm.mean[c]) == pytest.approx(vals.mean(), rel=1e-5)
        assert float(norm.std[c]) == pytest.approx(vals.std(ddof=1), rel=1e-5)
    torch.testing.assert_close(norm.decode(norm.encode(x.float())), x.float(), rtol=1e-5, atol=1e-5)


def test_normaliser_fit_needs_two_samples():
    with pytest.raises(DataError, match="at least 2"):
        DataNormaliser.fit("pointwise", torch.ones(1, 1, 4), torch.ones(1, 1, 4))


def test_pointwise_statistics_interpolate_like_bilinear_align_corners():
    t = torch.rand(2, 9, 13)
    got = interpolate_grid(t, (17, 25))
    want = F.interpolate(t[None], size=(17, 25), mode="bilinear", align_corners=True)[0]
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


def test_pointwise_statistics_interpolate_exactly_at_cell_centres():
    # a linear field is reproduced exactly when the coordinates of both grids are used
    old = [(np.arange(8) + 0.5) / 8, (np.arange(6) + 0.5) / 6]
    new = [(np.arange(16) + 0.5) / 16, (np.arange(12) + 0.5) / 12]
    lin = lambda cx, cy: torch.tensor(2 * cx[:, None] + 3 * cy[None, :], dtype=torch.float64)[None]
    got = interpolate_grid(lin(*old), (16, 12), old, new)
    inside = (slice(None), slice(1, -1), slice(1, -1))  # beyond the old end points values are held
    torch.testing.assert_close(got[inside], lin(*new)[inside])


# ----------------------------------------------------------------------------- options


def test_unknown_option_is_named_with_a_suggestion(tmp_path, darcy16):
    with pytest.raises(ConfigError, match=r"'epoch'.*did you mean 'epochs'"):
        training.train("fno", data=darcy16[0], out=tmp_path / "r", epoch=3)
    with pytest.raises(ConfigError, match="lr"):
        training.TrainOptions(lr=-1.0)


def test_keyword_options_override_the_config_mapping():
    from sciml.training.options import resolve_options

    opts = resolve_options({"epochs": 7, "lr": 0.1, "batch_size": 4}, {"lr": 0.01})
    assert (opts.epochs, opts.lr, opts.batch_size) == (7, 0.01, 4)
    assert training.TrainOptions().scheduler == "step" and training.TrainOptions().step_size == 100


# ----------------------------------------------------------------------------- the loop


def test_training_lowers_the_loss_and_writes_the_run(tmp_path, darcy16):
    train, test = darcy16
    out = tmp_path / "run"
    summary = small_run(train, out, epochs=20, lr=2e-2, test_data=test, figures=True)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == list(range(1, 21))
    assert {"train_loss", "test_loss", "lr", "seconds"} <= set(rows[0])
    # the first epoch scores about the mean field's error; measured on darcy16: 0.243 -> 0.092
    assert rows[-1]["train_loss"] < 0.5 * rows[0]["train_loss"], [r["train_loss"] for r in rows]
    assert summary["train_loss"] == rows[-1]["train_loss"] and summary["epochs"] == 20
    assert summary["test_loss"] == rows[-1]["test_loss"]
    for name in ("config.yaml", "weights.safetensors", "run.json", "train_state.pt", "loss.png"):
        assert (out / name).is_file(), name
    meta = json.loads((out / "run.json").read_text())
    assert meta["model"] == "fno" and meta["epoch"] == 20 and meta["normaliser"]["kind"] == "pointwise"
    assert meta["signature"]["inputs"] == ["a"] and meta["config"]["in_channels"] == 1
    assert not list(out.glob(".*tmp")), "temporary files left behind"


def test_resume_continues_exactly_like_a_straight_run(tmp_path, darcy16):
    opts = {"step_size": 2, "gamma": 0.5}  # the learning rate changes inside the resumed part
    small_run(darcy16[0], tmp_path / "straight", epochs=4, **opts)
    small_run(darcy16[0], tmp_path / "split", epochs=2, **opts)
    summary = training.train(out=tmp_path / "split", resume=True, epochs=4, progress=False, figures=False)
    assert summary["epochs"] == 4 and summary["epochs_run"] == 2
    a = load_file(tmp_path / "straight" / "weights.safetensors")
    b = load_file(tmp_path / "split" / "weights.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-6)
    ra = (tmp_path / "straight" / "metrics.jsonl").read_text().splitlines()
    rb = (tmp_path / "split" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["train_loss"] for x in ra] == pytest.approx([json.loads(x)["train_loss"] for x in rb], abs=1e-6)


def test_resume_refuses_to_change_the_numerics(tmp_path, darcy16):
    small_run(darcy16[0], tmp_path / "r", epochs=1)
    with pytest.raises(ConfigError, match="cannot change 'lr'"):
        training.resume(tmp_path / "r", epochs=2, lr=0.1)
    with pytest.raises(ConfigError, match="cannot change 'model_config'"):
        training.resume(tmp_path / "r", epochs=2, model_config={"width": 9})
    # repeating the run's own settings is fine (tuples equal YAML lists)
    summary = training.resume(tmp_path / "r", epochs=2, lr=5e-3, model_config={"modes": (4, 4)}, **QUIET)
    assert summary["epochs"] == 2 and summary["epochs_run"] == 1


def test_existing_run_is_not_overwritten(tmp_path, darcy16):
    small_run(darcy16[0], tmp_path / "r", epochs=1)
    with pytest.raises(ConfigError, match="already holds a run"):
        small_run(darcy16[0], tmp_path / "r", epochs=1)


def test_diverging_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, darcy16):
    model = training.trainer.build_model("fno", SMALL_FNO, training.load_grid_data(darcy16[0]).signature, seed=0)
    calls = {"n": 0}
    forward = model.forward

    def poisoned(x):  # 3 batches per epoch: the 5th call is in epoch 2
        calls["n"] += 1
        y = forward(x)
        return y * float("nan") if calls["n"] >= 5 else y

    model.forward = poisoned
    out = tmp_path / "r"
    with pytest.raises(ModelError, match=r"diverged.*nan at epoch 2.*last good checkpoint \(epoch 1\)"):
        training.train(model, data=darcy16[0], out=out, epochs=3, batch_size=8, **QUIET)
    assert json.loads((out / "run.json").read_text())["epoch"] == 1
    model_back, _ = training.load_run(out)
    assert all(torch.isfinite(p).all() for p in model_back.parameters())


def test_validation_split_is_logged(tmp_path, darcy16):
    summary = small_run(darcy16[0], tmp_path / "r", epochs=1, val_fraction=0.25)
    row = json.loads((tmp_path / "r" / "metrics.jsonl").read_text())
    assert summary["n_train"] == 18 and "val_loss" in row and np.isfinite(row["val_loss"])


def test_misuse_errors_are_one_line(tmp_path, darcy16):
    with pytest.raises(DataError, match="holds 24"):
        small_run(darcy16[0], tmp_path / "a", n_train=100)
    with pytest.raises(ModelError, match="in_channels=3.*1 input channel"):
        small_run(darcy16[0], tmp_path / "b", model_config={**SMALL_FNO, "in_channels": 3})
    with pytest.raises(DataError, match="not found"):
        small_run(tmp_path / "missing.h5", tmp_path / "c")


def test_staggered_coefficient_is_averaged_onto_the_solution_grid(tmp_path):
    """ConDiff stores k at the (n+1)^2 cell centres; on the n^2 nodes it is the mean of 4 cells."""
    import numpy as np

    from sciml import datasets

    path = datasets.generate("condiff", n=2, resolution=8, seed=0, out=tmp_path / "c.h5", progress=False,
                             dtype="float64")
    data = training.load_grid_data(path)
    with datasets.open(path) as ds:
        k = ds["k"].values
        f = ds["f"].values
    expected = 0.25 * (k[:, :-1, :-1] + k[:, 1:, :-1] + k[:, :-1, 1:] + k[:, 1:, 1:])
    assert data.x.shape == (2, 2, 8, 8)
    np.testing.assert_allclose(data.x[:, 0].numpy(), expected, rtol=1e-6)
    np.testing.assert_allclose(data.x[:, 1].numpy(), f, rtol=1e-6)
    assert data.signature.dims == ("x", "y")


def test_h1_loss_is_relative_l2_weighted_by_wavenumbers():
    from sciml.training.losses import relative_h1

    n = 32
    x = torch.arange(n, dtype=torch.float64) / n
    true = torch.sin(2 * torch.pi * 3 * x).reshape(1, 1, n)  # wavenumber 3
    err = 0.01 * torch.sin(2 * torch.pi * 5 * x).reshape(1, 1, n)  # wavenumber 5
    got = float(relative_h1(true + err, true))
    # Parseval: ||w F e|| / ||w F t|| = 0.01 * sqrt(1 + 25) / sqrt(1 + 9)
    assert abs(got - 0.01 * math.sqrt(26 / 10)) < 1e-12
    # with both errors at the same wavenumber the weights cancel: equal to the relative L2
    u = torch.randn(2, 1, 8, 8, dtype=torch.float64)
    y = torch.sin(2 * torch.pi * torch.arange(8, dtype=torch.float64) / 8).reshape(1, 1, 8, 1).expand(2, 1, 8, 8)
    assert torch.allclose(relative_h1(1.1 * y, y), torch.full((2,), 0.1, dtype=torch.float64))
    assert relative_h1(u, u).abs().max() == 0


def test_onecycle_schedule_peaks_at_lr_and_trains_with_h1(tmp_path, darcy16):
    summary = small_run(darcy16[0], tmp_path / "r", epochs=5, scheduler="onecycle", loss="h1", lr=1e-3)
    rows = [json.loads(line) for line in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    lrs = [r["lr"] for r in rows]
    assert abs(lrs[0] - 5e-4) < 1e-12 and abs(max(lrs) - 1e-3) < 1e-12 and lrs[-1] < lrs[1]
    assert math.isfinite(summary["train_loss"]) and rows[-1]["train_loss"] < rows[0]["train_loss"]
    with pytest.raises(ConfigError, match="onecycle"):
        training.train(out=tmp_path / "r", resume=True, epochs=8, progress=False, figures=False)
