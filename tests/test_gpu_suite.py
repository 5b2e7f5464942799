"""benchmarks/gpu_suite.py's runner: budget, resumption, stopped and failed parts (no GPU needed)."""

from __future__ import annotations

import importlib.util
import json
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def suite():
    spec = importlib.util.spec_from_file_location("gpu_suite", ROOT / "benchmarks" / "gpu_suite.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_suite"] = module  # its dataclass looks its module up
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop("gpu_suite", None)


def _script(code: str):
    return lambda args, folder: [sys.executable, "-c", code, str(folder)]


def _args(tmp_path, budget):
    return SimpleNamespace(out=tmp_path / "out", budget=budget, margin=0.5, quick=False)


def test_budget_resume_stop_and_fail(suite, tmp_path):
    write = "import sys, pathlib; pathlib.Path(sys.argv[1], 'result.txt').write_text('42')"
    parts = [
        suite.Part("first", "writes a file", (1, 1), _script(write)),
        suite.Part("slow", "outlives its time", (1, 1), _script("import time; print('started', flush=True); time.sleep(60)")),
        suite.Part("broken", "exits 3", (0.1, 0.1), _script("import sys; print('bad input'); sys.exit(3)")),
        suite.Part("huge", "does not fit", (10_000, 10_000), _script(write)),
    ]
    t0 = time.perf_counter()
    state = suite.run_suite(_args(tmp_path, budget=4.0), parts)
    elapsed = time.perf_counter() - t0
    out = tmp_path / "out"
    assert (out / "first" / "result.txt").read_text() == "42"
    assert state["parts"]["first"]["status"] == "done"
    # the slow part is killed when the budget (less the margin) is spent, well before its 60 s
    assert state["parts"]["slow"]["status"] == "stopped"
    assert elapsed < 20
    assert "started" in (out / "slow" / "log.txt").read_text()
    # nothing is left for the last two: not run, with the reason
    assert state["parts"]["broken"]["status"] == "not run"
    assert state["parts"]["huge"]["status"] == "not run" and "estimated 10000 s" in state["parts"]["huge"]["reason"]
    saved = json.loads((out / "suite.json").read_text())
    assert saved["parts"]["first"]["status"] == "done"
    readme = (out / "README.md").read_text()
    assert "| first | writes a file | done |" in readme and "result.txt" in readme and "| huge |" in readme

    # a rerun skips the finished part (its file is not rewritten) and runs the others
    (out / "first" / "result.txt").write_text("kept")
    state = suite.run_suite(_args(tmp_path, budget=3.0), parts[:1] + parts[2:3])
    assert (out / "first" / "result.txt").read_text() == "kept"
    assert state["parts"]["broken"]["status"] == "failed"
    assert state["parts"]["broken"]["reason"] == "exit 3: bad input"


def test_parts_are_unique_and_ordered(suite):
    names = [p.name for p in suite.PARTS]
    assert len(names) == len(set(names))
    assert names[:4] == ["generation", "multigrid", "nmg", "fno-speed"]  # the order of priority
    assert all(p.estimate[0] > 0 and p.estimate[1] > 0 for p in suite.PARTS)


def test_unknown_part_is_one_line(suite, capsys):
    with pytest.raises(SystemExit) as exc:
        suite.main(["--quick", "--parts", "generation,typo"])
    assert "unknown part ['typo']" in str(exc.value)


def test_precond_cache_retrains_an_unfinished_run(tmp_path, capsys):
    """Training writes its run at every checkpoint, so a stopped job leaves a run.json: the
    benchmark's cache must not measure that network as the finished one."""
    spec = importlib.util.spec_from_file_location("precond_bench", ROOT / "benchmarks" / "precond.py")
    precond = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(precond)
    done, partial = tmp_path / "done", tmp_path / "partial"
    for run, step in ((done, 400), (partial, 50)):
        run.mkdir()
        (run / "run.json").write_text(json.dumps({"kind": "nmg", "step": step}))
    assert precond.finished_run(done, "step", 400) == {"kind": "nmg", "step": 400}
    assert precond.finished_run(partial, "step", 400) is None
    assert not partial.exists()  # removed, so the next call trains it again
    assert "unfinished run (step 50 of 400)" in capsys.readouterr().out
    assert precond.finished_run(tmp_path / "missing", "epoch", 20) is None
