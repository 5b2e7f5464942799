"""Run directories: round trips, the refusal to unpickle, and one-line errors for damaged runs."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
import yaml

from sciml import runs, training
from sciml.errors import CheckpointError
from sciml.training import checkpoint as ckpt
from test_cli import assert_one_line_error, run_cli

SMALL_FNO = {"modes": [4, 4], "width": 8, "n_layers": 2, "projection": 16}


@pytest.fixture(scope="module")
def run(tmp_path_factory, darcy16):
    out = tmp_path_factory.mktemp("ckpt") / "run"
    training.train("fno", data=darcy16[0], out=out, epochs=2, batch_size=8, lr=5e-3, model_config=SMALL_FNO,
                   progress=False, figures=False, num_threads=1)
    return out


@pytest.fixture
def copy(run, tmp_path):
    dst = tmp_path / "copy"
    shutil.copytree(run, dst)
    return dst


def test_round_trip_gives_identical_predictions(run, darcy16):
    from safetensors.torch import load_file

    model, info = training.load_run(run)
    assert not model.training and next(model.parameters()).device.type == "cpu"
    assert info.model_name == "fno" and info.epoch == 2 and info.normaliser.kind == "pointwise"
    assert info.signature.describe() == "pde=darcy inputs a -> u"
    # rebuild by hand from the raw files: same weights, same normaliser, same numbers
    tensors = load_file(run / "weights.safetensors")
    fresh = training.trainer.build_model("fno", info.model_config, info.signature, seed=123)
    fresh.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    fresh.eval()
    x = training.load_grid_data(darcy16[1]).x
    with torch.no_grad():  # encode, apply, decode by hand
        mean, std = tensors["normaliser.inputs.mean"], tensors["normaliser.inputs.std"]
        want = fresh((x - mean) / (std + 1e-5)) * (tensors["normaliser.outputs.std"] + 1e-5) + tensors["normaliser.outputs.mean"]
    got = training.predict(model, info.normaliser, x)
    torch.testing.assert_close(got, want, rtol=0, atol=0)
    # a second load predicts bit for bit the same
    model2, info2 = training.load_run(run)
    torch.testing.assert_close(training.predict(model2, info2.normaliser, x), got, rtol=0, atol=0)


def test_train_state_with_a_pickled_object_is_refused(copy, tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    state = torch.load(copy / "train_state.pt", weights_only=True)
    state["extra"] = Evil()
    torch.save(state, copy / "train_state.pt")
    with pytest.raises(CheckpointError, match="refusing to unpickle"):
        ckpt.load_train_state(copy)
    with pytest.raises(CheckpointError, match="refusing to unpickle"):
        training.resume(copy, epochs=3, progress=False, figures=False)
    assert not marker.exists()


def test_train_state_holds_only_plain_data(run):
    state = ckpt.load_train_state(run)
    assert state["epoch"] == 2 and "state" in state["optimizer"] and state["scheduler"]["last_epoch"] == 2
    assert isinstance(state["rng"]["torch"], torch.Tensor)


def test_rng_state_round_trip():
    import random

    import numpy as np

    saved = ckpt.rng_state()
    a = (torch.rand(3), np.random.rand(3), random.random())
    ckpt.set_rng_state(saved)
    b = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(a[0], b[0]) and np.array_equal(a[1], b[1]) and a[2] == b[2]


def test_missing_run_and_missing_model_json(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        training.load_run(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="no run.json"):
        training.load_run(tmp_path / "empty")


def _edit_json(run, **changes):
    meta = json.loads((run / "run.json").read_text())
    meta.update(changes)
    (run / "run.json").write_text(json.dumps(meta))
    return meta


def test_unknown_model_name_lists_the_valid_ones(copy):
    _edit_json(copy, model="fnord")
    with pytest.raises(CheckpointError, match=r"unknown model 'fnord'; valid models are: .*fno"):
        training.load_run(copy)


def test_config_that_fails_is_reported(copy):
    meta = json.loads((copy / "run.json").read_text())
    _edit_json(copy, config={**meta["config"], "width": -3})
    with pytest.raises(CheckpointError, match="cannot be built.*width"):
        training.load_run(copy)
    _edit_json(copy, config={**meta["config"], "wdith": 8})
    with pytest.raises(CheckpointError, match="wdith"):
        training.load_run(copy)


def test_weights_of_another_architecture_are_detected(copy):
    meta = json.loads((copy / "run.json").read_text())
    _edit_json(copy, config={**meta["config"], "width": 12})
    with pytest.raises(CheckpointError, match=r"checkpoint is of another architecture: .*shape"):
        training.load_run(copy)
    _edit_json(copy, config={**meta["config"], "n_layers": 3})
    with pytest.raises(CheckpointError, match=r"checkpoint is of another architecture: .*lacks"):
        training.load_run(copy)


def test_damaged_weights_file(copy):
    data = (copy / "weights.safetensors").read_bytes()
    (copy / "weights.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="weights.safetensors"):
        training.load_run(copy)
    (copy / "run.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        training.load_run(copy)


@pytest.mark.parametrize("killed_early", [False, True], ids=["with-checkpoint", "before-first-checkpoint"])
def test_resume_of_a_run_whose_config_names_no_dataset(copy, killed_early, capsys):
    """Found by test_fuzz in CI: a config.yaml cut down until it names no dataset raised a TypeError on resume."""
    saved = yaml.safe_load((copy / "config.yaml").read_text())
    assert "data" in saved
    del saved["data"]
    (copy / "config.yaml").write_text(yaml.safe_dump(saved))
    if killed_early:  # no training state: the resume restarts from the config alone
        (copy / runs.TRAIN_STATE).unlink()
    before = {p.name: p.read_bytes() for p in copy.iterdir() if p.is_file()}
    code, _, err = run_cli(["train", "--resume", copy, "--epochs", "3", "--no-progress"], capsys)
    assert_one_line_error(code, err, "names no dataset", "--data")
    after = {p.name: p.read_bytes() for p in copy.iterdir() if p.is_file()}
    assert after == before  # nothing the run had written is lost
