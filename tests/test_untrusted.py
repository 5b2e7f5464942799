"""Untrusted files: a pickle payload (or a YAML constructor) in any file sciml reads is refused
with one clear line, and its code never runs.

The payload's ``__reduce__`` creates a marker file when unpickled; every test checks the
marker is absent after the reader refused the file. Files poisoned: a dataset (.h5), a dataset
variable of opaque bytes, a MATLAB file and a PDEBench file to import, a config for ``sciml
run``, a run directory's weights, metadata, config and training state, and a learned solver's
weights.
"""

from __future__ import annotations

import pickle
import shutil

import h5py
import numpy as np
import pytest
import torch

from sciml import datasets, training
from test_cli import assert_one_line_error, run_cli

pytestmark = pytest.mark.usefixtures("one_thread")


class Payload:
    """Unpickling this creates ``path`` (stands for arbitrary code)."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def copied(run, tmp_path):
    """A copy of the trained run directory to poison."""
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    return copy


def pickled(marker) -> bytes:
    return pickle.dumps({"weights": Payload(marker)})


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("untrusted")
    data = root / "darcy.h5"
    datasets.generate("darcy", n=12, resolution=16, seed=0, out=data, progress=False)
    run = root / "run"
    torch.set_num_threads(1)
    training.train("fno", data=data, out=run, epochs=1, batch_size=4, model_config={"modes": [4, 4], "width": 8},
                   progress=False, figures=False)
    return data, run


def test_pickle_instead_of_a_dataset(tmp_path, capsys):
    marker = tmp_path / "pwned"
    bad = tmp_path / "data.h5"
    bad.write_bytes(pickled(marker))
    for args in (["info", bad], ["plot", bad, "--out", tmp_path / "p.png"]):
        code, _, err = run_cli(args, capsys)
        assert_one_line_error(code, err, str(bad))
    assert not marker.exists()


def test_dataset_variable_of_pickled_bytes_is_refused(trained, tmp_path, capsys):
    data, run = trained
    marker = tmp_path / "pwned"
    bad = tmp_path / "opaque.h5"
    shutil.copy(data, bad)
    with h5py.File(bad, "r+") as f:  # the input field replaced by an opaque blob of pickle bytes
        del f["a"]
        blob = np.frombuffer(pickled(marker), dtype=np.uint8)
        f.create_dataset("a", data=np.void(blob.tobytes()))
        f.attrs["payload"] = np.void(pickled(marker))
    code, _, err = run_cli(["evaluate", run, "--data", bad], capsys)
    assert_one_line_error(code, err, str(bad))
    assert not marker.exists()


@pytest.mark.parametrize("fmt", ["fno-mat", "pdebench", "condiff"])
def test_pickle_instead_of_a_file_to_import(fmt, tmp_path, capsys):
    marker = tmp_path / "pwned"
    bad = tmp_path / ("file.mat" if fmt == "fno-mat" else "file.h5")
    bad.write_bytes(pickled(marker))
    code, _, err = run_cli(["import", fmt, bad, "--out", tmp_path / "out.h5", "--no-progress"], capsys)
    assert_one_line_error(code, err)
    assert not marker.exists() and not (tmp_path / "out.h5").exists()


def test_yaml_constructor_in_a_config(tmp_path, capsys):
    marker = tmp_path / "pwned"
    cfg = tmp_path / "run.yaml"
    cfg.write_text(f"name: x\nout: {tmp_path / 'out'}\nmodel: !!python/object/apply:builtins.open ['{marker}', 'w']\n")
    code, _, err = run_cli(["run", cfg], capsys)
    assert_one_line_error(code, err, str(cfg))
    assert not marker.exists()


@pytest.mark.parametrize("target", ["weights.safetensors", "run.json", "config.yaml"])
def test_poisoned_run_directory_for_evaluate(trained, target, tmp_path, capsys):
    data, run = trained
    marker, copy = tmp_path / "pwned", copied(run, tmp_path)
    if target == "config.yaml":
        (copy / target).write_text(f"model: !!python/object/apply:builtins.open ['{marker}', 'w']\n")
    else:
        (copy / target).write_bytes(pickled(marker))
    code, _, err = run_cli(["evaluate", copy, "--data", data], capsys)
    assert_one_line_error(code, err)
    assert not marker.exists()


def test_torch_save_file_posing_as_safetensors(trained, tmp_path, capsys):
    data, run = trained
    marker, copy = tmp_path / "pwned", copied(run, tmp_path)
    torch.save({"weights": Payload(marker)}, copy / "weights.safetensors")  # a zip holding a pickle
    code, _, err = run_cli(["evaluate", copy, "--data", data], capsys)
    assert_one_line_error(code, err)
    assert not marker.exists()


def test_pickle_in_the_training_state_on_resume(trained, tmp_path, capsys):
    data, run = trained
    marker, copy = tmp_path / "pwned", copied(run, tmp_path)
    states = [p for p in copy.iterdir() if p.suffix == ".pt"]
    assert states, "the run keeps a training state to resume from"
    for state in states:
        torch.save({"state": Payload(marker)}, state)
    code, _, err = run_cli(["train", "--resume", copy, "--epochs", "2"], capsys)
    assert_one_line_error(code, err, "unpickle")
    assert not marker.exists()


def test_pickle_instead_of_learned_solver_weights(tmp_path, capsys):
    from sciml.learned import dcdm

    marker = tmp_path / "pwned"
    run = tmp_path / "dcdm"
    dcdm.train_dcdm(run, pde="poisson", resolution=10, n_systems=1, steps=2, seed=0)
    (run / "weights.safetensors").write_bytes(pickled(marker))
    code, _, err = run_cli(["solve", "poisson", "-s", "10", "--method", f"dcdm:{run}"], capsys)
    assert_one_line_error(code, err)
    assert not marker.exists()
