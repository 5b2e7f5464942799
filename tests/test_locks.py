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
