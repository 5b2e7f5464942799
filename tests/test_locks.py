"""Two processes writing the same output are prevented (issue 10): an flock held while writing,
released by the kernel when the holder dies, even by SIGKILL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from sciml.errors import ConfigError
from sciml.io import output_lock

HOLD = """
import sys, time
from sciml.io import output_lock
with output_lock(sys.argv[1], "--out"):
    print("locked", flush=True)
    time.sleep(60)
"""


def hold(path):
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(path)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_a_second_writer_is_refused_naming_the_first_and_a_killed_holder_frees_the_lock(tmp_path):
    target = tmp_path / "run"
    proc = hold(target)
    try:
        with pytest.raises(ConfigError) as exc:
            with output_lock(target, "--out"):
                pass
        message = str(exc.value)
        assert f"pid {proc.pid}" in message and "choose another --out" in message and "\n" not in message
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    with output_lock(target):  # the kernel dropped the dead holder's lock: no stale lock
        with pytest.raises(ConfigError):  # and it excludes within one process too (a second open file)
            with output_lock(target):
                pass
    with output_lock(target):
        pass


def test_locks_on_different_outputs_do_not_interfere(tmp_path):
    proc = hold(tmp_path / "a.h5")
    try:
        t0 = time.perf_counter()
        with output_lock(tmp_path / "b.h5"):
            pass
        assert time.perf_counter() - t0 < 1.0
    finally:
        proc.kill()
        proc.wait()


def test_a_second_training_on_the_same_run_directory_is_refused(tmp_path, capsys):
    """While one process trains into runs/x, another `sciml train ... --out runs/x` (or
    --resume) stops at once with one line; the first run's files are untouched."""
    from sciml import datasets
    from test_cli import assert_one_line_error, run_cli

    data = tmp_path / "d.h5"
    datasets.generate("darcy", n=6, resolution=12, seed=0, out=data, progress=False)
    run = tmp_path / "run"
    proc = hold(run)  # stands for a training process holding the run directory
    try:
        for args in (["train", "fno", "--data", data, "--out", run, "--epochs", "1"], ["train", "--resume", run]):
            code, _, err = run_cli(args, capsys)
            if args[1] == "--resume":
                assert code == 1  # (no run there yet: refused either way, in one line)
            assert_one_line_error(code, err)
        assert not run.exists() or not any(run.iterdir())
        code, _, err = run_cli(["train", "fno", "--data", data, "--out", run, "--epochs", "1"], capsys)
        assert_one_line_error(code, err, "being written by another sciml process", f"pid {proc.pid}")
    finally:
        proc.kill()
        proc.wait()


def test_generate_and_sweep_refuse_an_output_another_process_writes(tmp_path, capsys):
    from test_cli import assert_one_line_error, run_cli

    target = tmp_path / "data.h5"
    target.write_bytes(b"an existing file that must survive")
    proc = hold(target)
    try:
        code, _, err = run_cli(["generate", "darcy", "--n", "2", "-s", "8", "--out", target, "--no-progress", "--overwrite"], capsys)
        assert_one_line_error(code, err, "being written by another sciml process", f"pid {proc.pid}")
        assert target.read_bytes() == b"an existing file that must survive"
        assert not (tmp_path / "data.h5.partial").exists()
        partial = tmp_path / "data.h5.partial"  # another writer's unfinished file is not discarded
        partial.write_bytes(b"another process's samples")
        code, _, err = run_cli(["generate", "darcy", "--n", "2", "-s", "8", "--out", target, "--overwrite"], capsys)
        assert_one_line_error(code, err, "being written by another sciml process")
        assert partial.read_bytes() == b"another process's samples"
    finally:
        proc.kill()
        proc.wait()
    sweep_out = tmp_path / "sweep"
    config = tmp_path / "sweep.yaml"
    config.write_text(f"models: [fno]\ndatasets: {{d: {{generate: {{pde: darcy, resolution: 8, n_train: 4, n_test: 2}}}}}}\n"
                      f"out: {sweep_out}\ntrain: {{epochs: 1}}\n")
    proc = hold(sweep_out)
    try:
        code, _, err = run_cli(["sweep", config, "--no-progress"], capsys)
        assert_one_line_error(code, err, "being written by another sciml process")
        assert not (sweep_out / "cells").exists()
    finally:
        proc.kill()
        proc.wait()
