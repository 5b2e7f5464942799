"""Killing `sciml train` at random moments (issue 10): SIGKILL and SIGINT at seeded random
times leave every file in the run directory valid, and `sciml train --resume` then ends with
exactly the weights and metrics of an uninterrupted run (the same seed).

Generation is covered by tests/test_resume_generation.py (SIGKILL and Ctrl-C, then --resume gives
the identical file) and sweeps by tests/test_sweep.py.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time

import pytest
import torch
import yaml
from safetensors.torch import load_file

from sciml import datasets

EPOCHS = 6


def _default_sigint():
    """A child starts with Ctrl-C at its default, as under a terminal: an ignored SIGINT is
    inherited through exec, and Python then installs no KeyboardInterrupt handler (in CI both
    SIGINT cases of this module saw their child finish with exit 0, on the same xdist worker)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def cli(*args, **kw):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "sciml", *map(str, args)], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, preexec_fn=_default_sigint, **kw)


def train_args(data, out):
    return ["train", "fno", "--data", data, "--out", out, "--epochs", EPOCHS, "--seed", 3, "--no-progress",
            "--batch-size", 8, "--set", "modes=[4,4]", "--set", "width=8", "--option", "figures=false"]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    root = tmp_path_factory.mktemp("interrupts")
    data = root / "d.h5"
    datasets.generate("darcy", n=48, resolution=16, seed=0, out=data, progress=False)
    ref = root / "ref"
    proc = cli(*train_args(data, ref))
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    rows = [json.loads(x) for x in (ref / "metrics.jsonl").read_text().splitlines()]
    return data, ref, sum(r["seconds"] for r in rows)  # the training part of the run


def assert_valid(run):
    """Every file there is whole: weights load, JSON and YAML parse, metrics are full lines."""
    for path in run.iterdir():
        if path.name.startswith("."):
            continue  # an unfinished temporary file or the lock, never read
        if path.suffix == ".safetensors":
            load_file(path)
        elif path.suffix == ".json":
            json.loads(path.read_text())
        elif path.suffix == ".yaml":
            assert isinstance(yaml.safe_load(path.read_text()), dict)
        elif path.suffix == ".jsonl":
            for line in path.read_text().splitlines():
                json.loads(line)
        elif path.suffix == ".pt":
            torch.load(path, weights_only=True)


def start_and_kill(data, run, sig, seed, duration):
    """Start a training run and send ``sig`` once it has begun: with ``seed`` None as soon as its
    config is written (before any checkpoint), else after a seeded random number of finished
    epochs plus a random fraction of the next (so during an epoch or a checkpoint write)."""
    proc = cli(*train_args(data, run))
    rng = random.Random(seed)
    epochs = 0 if seed is None else rng.randint(1, EPOCHS - 1)
    t0 = time.perf_counter()
    metrics = run / "metrics.jsonl"
    while not (run / "config.yaml").exists() or (
            epochs and (not metrics.exists() or len(metrics.read_text().splitlines()) < epochs)):
        assert proc.poll() is None, f"finished before the signal: {proc.communicate()[1]}"
        assert time.perf_counter() - t0 < 120
        time.sleep(0.002)
    if seed is not None:
        time.sleep(rng.uniform(0.0, 1.0) * duration / EPOCHS)
    proc.send_signal(sig)
    return proc


@pytest.mark.parametrize("sig, seed", [(signal.SIGKILL, None), (signal.SIGKILL, 1), (signal.SIGKILL, 2),
                                       (signal.SIGINT, 3)])
def test_kill_train_at_a_random_moment_then_resume_matches_an_uninterrupted_run(reference, tmp_path, sig, seed):
    data, ref, duration = reference
    run = tmp_path / "run"
    proc = start_and_kill(data, run, sig, seed, duration)
    _, err = proc.communicate(timeout=120)
    if proc.returncode == 0:
        pytest.fail(f"the run finished before the signal (duration {duration:.1f} s); the test timing is off")
    if sig == signal.SIGINT:
        assert proc.returncode != 0 and "Traceback" not in err, err
    assert run.is_dir()
    assert_valid(run)
    proc = cli("train", "--resume", run, "--no-progress")
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    assert_valid(run)
    a, b = load_file(ref / "weights.safetensors"), load_file(run / "weights.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0)
    rows = lambda r: [{k: v for k, v in json.loads(x).items() if k != "seconds"}  # noqa: E731
                      for x in (r / "metrics.jsonl").read_text().splitlines()]
    assert rows(run) == rows(ref) and len(rows(run)) == EPOCHS


@pytest.mark.parametrize("sig, seed", [(signal.SIGTERM, 4), (signal.SIGUSR1, 5)])
def test_a_job_signal_saves_at_the_next_batch_exits_75_and_resume_matches(reference, tmp_path, sig, seed):
    """A batch system's SIGTERM (time limit) or SIGUSR1 (``--signal=USR1@120``) at a seeded random moment:
    the run saves its state at the next batch boundary, exits 75 with one line saying how to resume,
    and ``--resume`` then ends with exactly the weights and metrics of the uninterrupted run."""
    data, ref, duration = reference
    run = tmp_path / "run"
    proc = start_and_kill(data, run, sig, seed, duration)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 75, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert f"stopped by {signal.Signals(sig).name}" in err and f"sciml train --resume {run}" in err
    assert_valid(run)
    proc = cli("train", "--resume", run, "--no-progress")
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    a, b = load_file(ref / "weights.safetensors"), load_file(run / "weights.safetensors")
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0)
    rows = lambda r: [{k: v for k, v in json.loads(x).items() if k != "seconds"}  # noqa: E731
                      for x in (r / "metrics.jsonl").read_text().splitlines()]
    assert rows(run) == rows(ref) and len(rows(run)) == EPOCHS


SWEEP = {
    "name": "killed",
    "models": {"fno": {"model_config": {"modes": [4, 4], "width": 8, "n_layers": 2, "projection": 16}}},
    "seeds": [0, 1, 2],
    "train": {"epochs": 3, "batch_size": 8},
    "cluster": {"workers": 1},
}


def sweep_rows(out):
    import csv

    with open(out / "results.csv") as fh:
        timing = ("train_seconds", "model_s_per_sample", "finished")  # wall clock, not results
        return {row["cell"]: {k: v for k, v in row.items() if k not in timing} for row in csv.DictReader(fh)}


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT, signal.SIGTERM])
def test_kill_a_sweep_then_rerun_finishes_with_the_uninterrupted_results(reference, tmp_path, sig):
    data, _, _ = reference
    config = {**SWEEP, "datasets": {"darcy": {"train": str(data), "test": str(data)}}}
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(config))
    ref = cli("sweep", path, "--out", tmp_path / "ref", "--no-progress")
    _, err = ref.communicate(timeout=600)
    assert ref.returncode == 0, err
    out = tmp_path / "out"
    proc = cli("sweep", path, "--out", out, "--no-progress")
    t0 = time.perf_counter()
    while not list(out.glob("cells/*/result.json")):  # one cell done, the next one under way
        assert proc.poll() is None, f"finished before the signal: {proc.communicate()[1]}"
        assert time.perf_counter() - t0 < 300
        time.sleep(0.01)
    time.sleep(random.Random(int(sig)).uniform(0.0, 1.0))
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode != 0 and "Traceback" not in err, err
    if sig == signal.SIGTERM:  # a job signal: exit 75 and one line saying how to continue
        assert proc.returncode == 75 and len(err.strip().splitlines()) == 1 and "again to continue" in err, err
    for result in out.glob("cells/*/result.json"):  # what was stored is whole
        json.loads(result.read_text())
    if (out / "results.csv").exists():
        sweep_rows(out)
    again = cli("sweep", path, "--out", out, "--no-progress")
    text, err = again.communicate(timeout=600)
    assert again.returncode == 0, err
    assert sweep_rows(out) == sweep_rows(tmp_path / "ref") and len(sweep_rows(out)) == 3


def test_a_job_signal_lost_in_a_finaliser_is_raised_at_the_next_check_without_a_traceback(capsys):
    """A SIGTERM whose handler runs inside ``__del__`` (or a weakref callback) raises where Python
    cannot pass the exception on: it must not vanish (CI once saw a sweep finish with exit 0 after
    one) nor print a traceback; the next ``raise_pending`` or the block's end raises it."""
    from sciml import runtime

    class Finaliser:
        def __del__(self):
            os.kill(os.getpid(), signal.SIGTERM)
            for _ in range(1000):  # the handler runs here, between bytecodes
                pass

    before, hook = signal.getsignal(signal.SIGTERM), sys.unraisablehook
    reached = []
    with pytest.raises(runtime.JobSignal) as caught:
        with runtime.job_signals("raise") as state:
            Finaliser()  # dropped at once: __del__ runs, its JobSignal is lost
            reached.append(state.signum)
            runtime.raise_pending()
            reached.append("not stopped")
    assert reached == [signal.SIGTERM] and caught.value.name == "SIGTERM"
    assert "Traceback" not in capsys.readouterr().err
    runtime.raise_pending()  # outside the block: nothing pending
    with pytest.raises(runtime.JobSignal):  # no check inside: the block's end raises it
        with runtime.job_signals("raise"):
            Finaliser()
    assert signal.getsignal(signal.SIGTERM) is before and sys.unraisablehook is hook  # both put back


def test_a_ctrl_c_lost_in_a_finaliser_is_raised_at_the_next_check_as_a_keyboard_interrupt(capsys):
    """The same for SIGINT (CI once saw a sweep sent SIGINT print "Exception ignored ...
    KeyboardInterrupt" from a weakref callback and finish with exit 0): a ``raise`` block records
    Ctrl-C while Python's default handler is in place, and it stays a plain KeyboardInterrupt."""
    from sciml import runtime

    class Finaliser:
        def __del__(self):
            os.kill(os.getpid(), signal.SIGINT)
            for _ in range(1000):
                pass

    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    reached = []
    with pytest.raises(KeyboardInterrupt) as caught:
        with runtime.job_signals("raise") as state:
            Finaliser()
            reached.append(state.signum)
            runtime.raise_pending()
            reached.append("not stopped")
    assert reached == [signal.SIGINT] and type(caught.value) is KeyboardInterrupt
    assert "Traceback" not in capsys.readouterr().err
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    with runtime.job_signals("flag") as state:  # flag mode leaves Ctrl-C to Python
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    own = []

    def mine(signum, frame):
        own.append(signum)

    previous = signal.signal(signal.SIGINT, mine)  # a handler of the caller's own
    try:
        with runtime.job_signals("raise") as state:
            assert signal.getsignal(signal.SIGINT) is mine  # left in place
            os.kill(os.getpid(), signal.SIGINT)  # the caller's handler takes it: nothing raised
            for _ in range(1000):
                pass
            assert own == [signal.SIGINT] and state.signum is None
    finally:
        signal.signal(signal.SIGINT, previous)
