"""Interrupted generations (SIGKILL, Ctrl-C) resume to the very file an uninterrupted run writes."""

from __future__ import annotations

import functools
import json
import os
import signal
import subprocess
import sys
import time

import h5py
import numpy as np
import pytest

from sciml import datasets
from sciml.cli.app import main
from sciml.datasets.format import DatasetWriter
from sciml.errors import ConfigError, DataError

ARGS = ["generate", "darcy", "--n", "40", "-s", "33", "--seed", "3", "--no-progress"]

# A Darcy sample at s = 33 takes ~2 ms and the writer flushes once a second, so a plain run
# is over before anything reaches the disk; sleeping in every solve (results unchanged)
# stretches the run to a few seconds with done flags on disk part way.
SLOW_SOLVES = """
import sys, time
from sciml.datasets.darcy import Darcy
if not hasattr(Darcy, "unslowed_solve"):  # a Dask worker runs a preload file twice
    Darcy.unslowed_solve = Darcy.solve
    Darcy.solve = lambda self, inputs: (time.sleep(%s), Darcy.unslowed_solve(self, inputs))[1]
"""
SLOW_CLI = SLOW_SOLVES % 0.05 + "from sciml.cli.app import main\nmain(sys.argv[1:])\n"


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The uninterrupted run."""
    out = tmp_path_factory.mktemp("reference") / "darcy.h5"
    return datasets.generate("darcy", n=40, resolution=33, seed=3, out=out, progress=False)


def assert_same_data(a, b):
    with h5py.File(a, "r") as fa, h5py.File(b, "r") as fb:
        assert set(fa) == set(fb)
        for name in fa:
            np.testing.assert_array_equal(fa[name][()], fb[name][()], err_msg=name)
        assert {k: str(v) for k, v in fa.attrs.items() if k != "created"} == \
               {k: str(v) for k, v in fb.attrs.items() if k != "created"}


def done_on_disk(partial) -> int:
    """Samples marked done in a .partial file another process is writing (-1: not readable now)."""
    try:
        with h5py.File(partial, "r", locking=False) as f:
            return int(f["done"][()].sum())
    except (OSError, KeyError, ValueError):
        return -1


#: children start with Ctrl-C at its default, as under a terminal: an ignored SIGINT is inherited
#: through exec, and Python then installs no KeyboardInterrupt handler. In CI both Ctrl-C tests
#: here saw their child finish with exit 0 on one xdist worker, twice in a row; no test left
#: Python's handler at SIG_IGN (``conftest._sigint_left_as_found``), so the cause is not found.
DEFAULT_SIGINT = functools.partial(signal.signal, signal.SIGINT, signal.SIG_DFL)


def start_slow_run(tmp_path, out):
    script = tmp_path / "slow_cli.py"
    script.write_text(SLOW_CLI)
    return subprocess.Popen([sys.executable, str(script), *ARGS, "--out", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=DEFAULT_SIGINT)


def wait_for_done_samples(proc, partial, timeout=60.0) -> int:
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        done = done_on_disk(partial) if partial.exists() else -1
        if 0 < done < 40:
            return done
        assert proc.poll() is None, f"the run ended before it could be interrupted: {proc.communicate()}"
        time.sleep(0.02)
    proc.kill()
    raise AssertionError("no samples reached the disk in time")


def test_sigkill_then_resume_gives_the_identical_file(tmp_path, reference):
    out = tmp_path / "darcy.h5"
    partial = tmp_path / "darcy.h5.partial"
    proc = start_slow_run(tmp_path, out)
    wait_for_done_samples(proc, partial)
    with pytest.raises(ConfigError, match="being written by another sciml process"):  # one writer at a time
        datasets.generate("darcy", n=40, resolution=33, seed=3, out=out, progress=False, resume=True)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    assert not out.exists() and 0 < done_on_disk(partial) < 40
    resumed = subprocess.run([sys.executable, "-m", "sciml", *ARGS, "--out", str(out), "--resume"],
                             capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    assert not partial.exists()
    assert_same_data(reference, out)


def test_ctrl_c_says_how_far_it_got_exits_130_and_resumes(tmp_path, reference):
    out = tmp_path / "darcy.h5"
    partial = tmp_path / "darcy.h5.partial"
    proc = start_slow_run(tmp_path, out)
    wait_for_done_samples(proc, partial)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    done = done_on_disk(partial)  # every finished sample was saved on the way out
    assert 0 < done < 40 and err.strip() == f"interrupted; {done} of 40 samples done, rerun with --resume"
    datasets.generate("darcy", n=40, resolution=33, seed=3, out=out, progress=False, resume=True)
    assert_same_data(reference, out)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGUSR1])
def test_a_job_signal_keeps_the_finished_samples_exits_75_and_resumes(tmp_path, reference, sig):
    """SLURM's SIGTERM at the time limit, or the SIGUSR1 warning of ``--signal=USR1@120``."""
    out = tmp_path / "darcy.h5"
    partial = tmp_path / "darcy.h5.partial"
    proc = start_slow_run(tmp_path, out)
    wait_for_done_samples(proc, partial)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 75, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    done = done_on_disk(partial)
    name = signal.Signals(sig).name
    assert 0 < done < 40 and err.strip() == f"stopped by {name}; interrupted; {done} of 40 samples done, rerun with --resume"
    resumed = subprocess.run([sys.executable, "-m", "sciml", *ARGS, "--out", str(out), "--resume"],
                             capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    assert_same_data(reference, out)


def on_disk(path) -> list:
    """``[done flags, sample 0 of a]`` as another process sees them (what a hard kill would leave)."""
    code = ("import h5py, json; f = h5py.File(%r, 'r', locking=False); "
            "print(json.dumps([f['done'][()].tolist(), f['a'][0].tolist()]))" % str(path))
    return json.loads(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)


def test_done_flags_on_disk_only_name_flushed_data(tmp_path):
    coords = {"x": np.arange(4.0)}
    attrs = {"pde": "t", "inputs": "a", "outputs": "a", "params": {}, "seed": 0, "grid": "node"}
    writer = DatasetWriter(tmp_path / "t.h5", 3, coords, {"a": ("x",)}, attrs)
    writer.write(0, residual=0.5, a=np.full(4, 7.0))
    assert writer.done().tolist() == [True, False, False]
    assert on_disk(writer.tmp)[0] == [0, 0, 0]  # not flushed yet: a kill now redoes sample 0
    writer.flush()
    assert on_disk(writer.tmp) == [[1, 0, 0], [7.0] * 4]
    writer.close()
    resumed = DatasetWriter(tmp_path / "t.h5", 3, coords, {"a": ("x",)}, attrs, resume=True)
    assert resumed.done().tolist() == [True, False, False]
    assert np.isnan(resumed.residuals()[1:]).all() and resumed.residuals()[0] == 0.5
    resumed.close()


def test_an_existing_partial_is_kept_unless_resume_is_asked(tmp_path, monkeypatch):
    from sciml.datasets.darcy import Darcy

    out = tmp_path / "d.h5"
    original = Darcy.sample

    def stop_at_three(self, seed, index):
        if index == 3:
            raise KeyboardInterrupt
        return original(self, seed, index)

    monkeypatch.setattr(Darcy, "sample", stop_at_three)
    with pytest.raises(KeyboardInterrupt, match="interrupted; 3 of 6 samples done, rerun with --resume"):
        datasets.generate("darcy", n=6, resolution=17, out=out, progress=False)
    monkeypatch.setattr(Darcy, "sample", original)
    with pytest.raises(DataError, match=r"d.h5.partial holds an unfinished generation; pass --resume"):
        datasets.generate("darcy", n=6, resolution=17, out=out, progress=False)
    with pytest.raises(DataError, match=r"other parameters \(low 3.0 there, 4.0 now\)"):
        datasets.generate("darcy", n=6, resolution=17, low=4.0, out=out, progress=False, resume=True)
    with pytest.raises(DataError, match="stores float32, not float64; resume with dtype float32"):
        datasets.generate("darcy", n=6, resolution=17, dtype="float64", out=out, progress=False, resume=True)
    with h5py.File(tmp_path / "d.h5.partial", "r") as f:
        assert f["done"][()].tolist() == [1, 1, 1, 0, 0, 0]  # none of the refusals touched it
    datasets.generate("darcy", n=6, resolution=17, out=out, progress=False, resume=True)
    assert_same_data(out, datasets.generate("darcy", n=6, resolution=17, out=tmp_path / "ref.h5", progress=False))


def test_a_damaged_partial_is_one_line_saying_delete_it(tmp_path, capsys):
    out = tmp_path / "d.h5"
    partial = tmp_path / "d.h5.partial"
    partial.write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(range(256)) * 2)  # an HDF5 signature, then garbage
    with pytest.raises(SystemExit) as exit_:
        main(["generate", "darcy", "--n", "4", "-s", "9", "--out", str(out), "--resume"])
    err = capsys.readouterr().err
    assert exit_.value.code == 1 and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert "d.h5.partial cannot be reopened" in err and "delete it and start again" in err
    # --overwrite (without --resume) is the way to start again
    with pytest.raises(SystemExit) as exit_:
        main(["generate", "darcy", "--n", "4", "-s", "9", "--out", str(out), "--overwrite", "--no-progress"])
    assert exit_.value.code == 0 and out.exists() and not partial.exists()


def test_ctrl_c_in_a_terminal_stops_a_parallel_run_cleanly(tmp_path, reference):
    """A terminal's Ctrl-C reaches the workers too: still one line, exit 130, a resumable file."""
    out = tmp_path / "darcy.h5"
    partial = tmp_path / "darcy.h5.partial"
    slow = tmp_path / "slow_worker.py"  # a Dask worker preload: 0.1 s of sleep per solve, as SLOW_CLI
    slow.write_text(SLOW_SOLVES % 0.1)
    env = {**os.environ, "DASK_DISTRIBUTED__WORKER__PRELOAD": f"[{str(slow)!r}]"}
    proc = subprocess.Popen([sys.executable, "-m", "sciml", *ARGS, "-w", "2", "--out", str(out)], env=env,
                            start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=DEFAULT_SIGINT)
    wait_for_done_samples(proc, partial)
    os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "Traceback" not in err, err
    done = done_on_disk(partial)
    assert 0 < done < 40 and err.strip() == f"interrupted; {done} of 40 samples done, rerun with --resume"
    datasets.generate("darcy", n=40, resolution=33, seed=3, out=out, progress=False, resume=True)
    assert_same_data(reference, out)
