"""Fuzzing the readers (issue 10): mutated dataset files and configs never crash a reader with
a traceback and never hang; they are read, or refused with one clear line (exit code 1).

Hypothesis mutates a valid small dataset file byte by byte (flipped bytes, overwritten runs,
truncation) and a valid experiment config (renamed keys, values of other types, dropped
sections). Each example runs under an alarm: a reader that takes longer than the limit fails
the test as a hang.
"""

from __future__ import annotations

import contextlib
import gc
import signal
import sys

import pytest
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from sciml import datasets, training, workflow
from sciml.config import from_dict
from sciml.errors import SciMLError
from test_cli import run_cli

pytestmark = pytest.mark.usefixtures("one_thread")

HANG_S = 20


@contextlib.contextmanager
def no_hang(seconds: int = HANG_S):
    def fail(*_):
        raise TimeoutError(f"a reader took longer than {seconds} s (a hang)")

    old = signal.signal(signal.SIGALRM, fail)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


class Valid:
    """The bytes of a valid dataset file (a short repr: Hypothesis prints it in failing examples)."""

    def __init__(self, data: bytes):
        self.data = data

    def __repr__(self) -> str:
        return f"<valid darcy dataset, {len(self.data)} bytes>"


@pytest.fixture(scope="module")
def valid(tmp_path_factory):
    path = tmp_path_factory.mktemp("fuzz") / "darcy.h5"
    datasets.generate("darcy", n=3, resolution=12, seed=0, out=path, progress=False)
    return Valid(path.read_bytes())


@contextlib.contextmanager
def unraisable():
    """Collect the errors Python would print as "Exception ignored in ..." (destructors)."""
    seen, previous = [], sys.unraisablehook
    sys.unraisablehook = lambda u: seen.append(f"{type(u.exc_value).__name__}: {u.exc_value} in {u.object!r}")
    try:
        yield seen
    finally:
        sys.unraisablehook = previous


mutations = st.lists(
    st.tuples(st.floats(0, 1, exclude_max=True), st.binary(min_size=1, max_size=16)), min_size=1, max_size=6
)


def mutate(data: bytes, edits, cut: float | None) -> bytes:
    out = bytearray(data)
    for where, chunk in edits:
        at = int(where * len(out))
        out[at:at + len(chunk)] = chunk
    if cut is not None:
        out = out[: int(cut * len(out))]
    return bytes(out)


def one_line_or_ok(code, err):
    assert code in (0, 1), (code, err)
    assert "Traceback" not in err, err
    if code == 1:
        lines = [ln for ln in err.strip().splitlines() if ln.strip()]
        assert len(lines) == 1 and lines[0].startswith("error: "), err


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(edits=mutations, cut=st.one_of(st.none(), st.floats(0, 1)))
@example(edits=[(0.6328125, b"\x01")], cut=None)  # found by this test: a bad chunk offset read by the trainer
@example(edits=[(0.2109375, b"\x80")], cut=None)  # found by this test: a damaged attribute printed as a lone surrogate
def test_mutated_dataset_files_are_read_or_refused_in_one_line(valid, tmp_path, capsys, edits, cut):
    path = tmp_path / "mutated.h5"
    path.write_bytes(mutate(valid.data, edits, cut))
    with no_hang(), unraisable() as ignored:
        code, _, err = run_cli(["info", path], capsys)
        one_line_or_ok(code, err)
        try:  # the training reader: the data, or a SciMLError (one line on the CLI), nothing else
            data = training.load_grid_data(path)
        except SciMLError as exc:
            assert str(exc) and "\n" not in str(exc), repr(str(exc))
        else:
            assert data.x.shape[0] == data.y.shape[0] >= 1
        gc.collect()
    # an error in a destructor prints "Exception ignored in ..." and a traceback on the terminal
    assert not ignored, ignored


QUICKSTART = {
    "name": "fuzz", "out": "runs/fuzz", "seed": 0,
    "data": {"pde": "darcy", "resolution": 16, "n_train": 8, "n_test": 4},
    "model": "fno", "model_config": {"modes": [4, 4], "width": 8},
    "train": {"epochs": 1, "batch_size": 4}, "evaluate": {"solver_samples": 2, "plot_samples": 1},
}

values = st.one_of(st.none(), st.booleans(), st.integers(-5, 10**6), st.floats(allow_nan=True), st.text(max_size=8),
                   st.lists(st.integers(-3, 30), max_size=3), st.dictionaries(st.text(max_size=4), st.integers(), max_size=2))


@st.composite
def mutated_configs(draw):
    cfg = yaml.safe_load(yaml.safe_dump(QUICKSTART))  # a deep copy
    for _ in range(draw(st.integers(1, 3))):
        section = draw(st.sampled_from([None, "data", "train", "evaluate", "model_config"]))
        target = cfg if section is None or not isinstance(cfg.get(section), dict) else cfg[section]
        if not target:
            continue
        key = draw(st.sampled_from(sorted(target)))
        action = draw(st.sampled_from(["rename", "retype", "drop"]))
        if action == "rename":
            new = key[:-1] if len(key) > 1 else key + "x"
            target[new] = target.pop(key)
        elif action == "retype":
            target[key] = draw(values)
        else:
            target.pop(key)
    return cfg


@settings(max_examples=80, deadline=None)
@given(cfg=mutated_configs())
def test_mutated_configs_load_or_fail_with_a_config_error(cfg):
    with no_hang(5):
        try:
            exp = workflow.load_experiment(cfg)
        except SciMLError as exc:
            assert "\n" not in str(exc) and str(exc)
        else:
            assert isinstance(exp.data, dict)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cfg=mutated_configs())
def test_mutated_configs_on_the_command_line(cfg, tmp_path, capsys):
    """The CLI path of every mutated config: one that the parser refuses ends in one line, exit 1,
    before any data is made; one that it accepts is taken to the data generation with its own data
    section (stopped there by a stub, since real generation and training would take minutes). Either
    way nothing is written."""
    path = tmp_path / "exp.yaml"
    cfg = {**cfg, "out": str(tmp_path / "out")}
    path.write_text(yaml.safe_dump(cfg))
    try:
        exp = workflow.load_experiment(path)
        valid = True
    except SciMLError:
        valid = False
    requests = []

    def stop_before_generating(path, request, progress=True):
        requests.append(request)
        raise SciMLError("stopped before generating")

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(workflow, "generate_cached", stop_before_generating)
        code, _, err = run_cli(["run", path], capsys)
    one_line_or_ok(code, err)
    assert code == 1 and not (tmp_path / "out").exists()
    if not valid:
        assert not requests, f"a config the parser refuses reached the data generation: {requests}"
    elif "must not set data/out" not in err:  # the one check workflow.run adds to the parser's
        assert "stopped before generating" in err, err
        data = from_dict(workflow.DataSection, exp.data)  # defaults filled in for dropped keys
        assert requests and {k: requests[0][k] for k in ("pde", "resolution", "n", "seed")} == \
            {"pde": data.pde, "resolution": data.resolution, "n": data.n_train, "seed": exp.seed}


def _damage(path, how):
    import h5py
    import numpy as np

    with h5py.File(path, "r+") as f:
        if how == "missing variable":
            del f["u"]
        elif how == "wrong dims":
            del f["a"]
            f["a"] = np.ones(7, dtype=np.float32)
        elif how == "text dtype":
            del f["a"]
            f["a"] = np.array([b"x"] * 3)
        elif how == "missing attribute":
            del f.attrs["inputs"]
        elif how == "nan":
            u = f["u"][:]
            u[1, 2, 3] = np.nan
            f["u"][:] = u


@pytest.mark.parametrize("how", ["missing variable", "wrong dims", "text dtype", "missing attribute"])
def test_structural_damage_is_refused_in_one_line(valid, tmp_path, capsys, how):
    path = tmp_path / "damaged.h5"
    path.write_bytes(valid.data)
    _damage(path, how)
    code, _, err = run_cli(["info", path], capsys)
    one_line_or_ok(code, err)
    assert code == 1 and str(path) in err
    with pytest.raises(SciMLError):
        training.load_grid_data(path)


def test_nan_is_flagged_by_info_and_refused_by_strict_info_and_training(valid, tmp_path, capsys):
    path = tmp_path / "nan.h5"
    path.write_bytes(valid.data)
    _damage(path, "nan")
    code, out, err = run_cli(["info", path], capsys)
    assert code == 0 and "WARNING: 1 NaN/Inf value(s) in u, in samples 1" in out
    code, _, err = run_cli(["info", path, "--strict"], capsys)
    one_line_or_ok(code, err)
    assert code == 1 and "NaN or Inf" in err and "sample 1" in err
    with pytest.raises(SciMLError, match="NaN or Inf"):
        training.load_grid_data(path)


@pytest.fixture(scope="module")
def run_and_mat(tmp_path_factory):
    """A trained run (its checkpoint files) and a small FNO-style .mat file to import."""
    import numpy as np
    import scipy.io

    root = tmp_path_factory.mktemp("fuzzrun")
    data = root / "d.h5"
    datasets.generate("darcy", n=6, resolution=12, seed=0, out=data, progress=False)
    run = root / "run"
    training.train("fno", data=data, out=run, epochs=1, batch_size=3, model_config={"modes": [3, 3], "width": 4},
                   progress=False, figures=False)
    rng = np.random.default_rng(0)
    mat = root / "piececonst.mat"
    scipy.io.savemat(mat, {"coeff": rng.random((3, 9, 9)), "sol": rng.random((3, 9, 9))})
    return data, run, Valid(mat.read_bytes())


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@example(target="config.yaml", edits=[(0.0, b"\x80")], cut=None)  # found by this test: a UnicodeDecodeError traceback
@example(target="train_state.pt", edits=[(0.0, b"a")], cut=None)  # found by this test: an IndexError from torch's unpickler
@given(target=st.sampled_from(["weights.safetensors", "run.json", "train_state.pt", "config.yaml"]),
       edits=mutations, cut=st.one_of(st.none(), st.floats(0, 1)))
def test_mutated_checkpoints_are_loaded_or_refused_in_one_line(run_and_mat, tmp_path, capsys, target, edits, cut):
    import shutil

    data, run, _ = run_and_mat
    copy = tmp_path / "run"
    shutil.rmtree(copy, ignore_errors=True)
    shutil.copytree(run, copy)
    (copy / target).write_bytes(mutate((run / target).read_bytes(), edits, cut))
    with no_hang(), unraisable() as ignored:
        code, _, err = run_cli(["evaluate", copy, "--data", data], capsys)
        one_line_or_ok(code, err)
        if target in ("train_state.pt", "config.yaml"):
            code, _, err = run_cli(["train", "--resume", copy, "--epochs", "2", "--no-progress"], capsys)
            one_line_or_ok(code, err)
        gc.collect()
    assert not ignored, ignored


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(edits=mutations, cut=st.one_of(st.none(), st.floats(0, 1)))
@example(edits=[(0.0, b"\x01")], cut=0.75)  # found by this test: a truncated file's OSError traceback mid-import
def test_mutated_files_to_import_are_converted_or_refused_in_one_line(run_and_mat, tmp_path, capsys, edits, cut):
    _, _, mat = run_and_mat
    source, out = tmp_path / "in.mat", tmp_path / "out.h5"
    source.write_bytes(mutate(mat.data, edits, cut))
    out.unlink(missing_ok=True)
    with no_hang(), unraisable() as ignored:
        code, _, err = run_cli(["import", "fno-mat", source, "--out", out, "--no-progress"], capsys)
        one_line_or_ok(code, err)
        assert (code == 0) == out.exists()  # nothing half-written is left behind on a refusal
        gc.collect()
    assert not ignored, ignored
