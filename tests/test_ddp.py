"""Data-parallel training: real 2-process torchrun runs on the CPU (gloo) against one process.

The global batch is ``--batch-size`` whatever the process count, so two processes must give the
weights and metrics of one process up to float32 rounding; only rank 0 writes; resume continues a
2-process run exactly. Each torchrun launch costs ~5-10 s (three Python interpreters importing torch).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from safetensors.torch import load_file

from sciml import training
from sciml.cli.app import main
from sciml.errors import SciMLError
from sciml.training.ddp import World, shard_batches

SMALL_FNO = {"modes": [4, 4], "width": 8, "n_layers": 2, "projection": 16}
# 16 samples minus 3 for validation = 13 training samples: global batches of 4, 4, 4 and 1, so the
# ranks' shares are uneven and rank 1 has none in the last batch; the 3 validation and 8 test
# samples are scored 1 + 2 and 4 + 4 per rank. The step schedule halves the lr every epoch.
OPTIONS = {"epochs": 2, "batch_size": 4, "lr": 5e-3, "n_train": 16, "val_fraction": 0.2, "step_size": 1,
           "gamma": 0.5, "seed": 3, "device": "cpu", "num_threads": 1, "progress": False, "figures": False}
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]

# `sciml` under torchrun with every atomic write logged as "RANK FILE" (all run files go through
# sciml.io.atomic_path: sciml.runs and checkpoint.py hold their own references to it)
RECORD_WRITES = textwrap.dedent("""
    import contextlib, os, sys
    import sciml.io
    import sciml.runs
    import sciml.training.checkpoint

    real = sciml.io.atomic_path

    @contextlib.contextmanager
    def logged(path):
        with open(os.environ["WRITES_LOG"], "a") as log:
            log.write(f"{os.environ['RANK']} {os.path.basename(path)}\\n")
        with real(path) as tmp:
            yield tmp

    sciml.io.atomic_path = sciml.runs.atomic_path = sciml.training.checkpoint.atomic_path = logged
    from sciml.cli.app import main
    main(sys.argv[1:])
""")


def cli_args(data, test, out, **changes):
    opts = {**OPTIONS, **changes}
    args = ["train", "fno", "--data", str(data), "--test-data", str(test), "--out", str(out), "--no-progress"]
    for key in ("epochs", "batch_size", "lr", "n_train", "seed", "device"):
        args += [f"--{key.replace('_', '-')}", str(opts[key])]
    for key in ("val_fraction", "step_size", "gamma", "num_threads", "figures"):
        args += ["--option", f"{key}={str(opts[key]).lower()}"]
    args += [f"--set={k}={v}".replace(" ", "") for k, v in SMALL_FNO.items()]
    return args


def run(cmd, home, **env):
    """A subprocess with one torch thread per process and a private HOME; its output on failure."""
    full = {**os.environ, "OMP_NUM_THREADS": "1", "HOME": str(home), **env}
    full.pop("WORLD_SIZE", None)
    proc = subprocess.run(cmd, env=full, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"{cmd} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
    return proc


def rows(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def two_process_run(darcy16, tmp_path_factory):
    """A 2-process torchrun of `sciml train` (2 epochs) with every file write logged with its rank."""
    train, test = darcy16
    d = tmp_path_factory.mktemp("ddp")
    script = d / "record_writes.py"
    script.write_text(RECORD_WRITES)
    out, log = d / "two", d / "writes.log"
    proc = run([*TORCHRUN, str(script), *cli_args(train, test, out)], d, WRITES_LOG=str(log))
    return out, log, proc


# ----------------------------------------------------------------------------- the sampler


def test_sampler_splits_each_global_batch_into_disjoint_rank_shares():
    perm = torch.randperm(13, generator=torch.Generator().manual_seed(0))
    one = [batch for _, batch in shard_batches(perm, 4)]
    assert [b.tolist() for b in one] == [perm[i : i + 4].tolist() for i in (0, 4, 8, 12)]
    for size in (2, 3, 5):
        shares = [list(shard_batches(perm, 4, rank, size)) for rank in range(size)]
        for k, batch in enumerate(one):
            parts = [shares[r][k][0].tolist() for r in range(size)]
            assert sum(parts, []) == batch.tolist()  # disjoint, in order, together the global batch
            assert max(map(len, parts)) - min(map(len, parts)) <= 1
    assert World(rank=1, size=2).span(3) == (1, 3) and World(rank=0, size=2).span(3) == (0, 1)


# ----------------------------------------------------------------------------- 1 vs 2 processes


def test_two_processes_give_the_weights_and_metrics_of_one(two_process_run, darcy16, tmp_path):
    two, log, proc = two_process_run
    train, test = darcy16
    one = tmp_path / "one"
    training.train("fno", data=train, test_data=test, out=one, model_config=SMALL_FNO, **OPTIONS)

    a, b = load_file(one / "weights.safetensors"), load_file(two / "weights.safetensors")
    assert a.keys() == b.keys()
    # The ranks' gradients are summed by an all-reduce in another order than one process sums
    # the batch (float32: ~1e-7 relative per step); Adam divides by sqrt(v), which keeps that
    # relative, and 8 steps at lr <= 5e-3 move a weight by <= 0.04. Measured: max |diff| 3.1e-7.
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=1e-4, atol=1e-5, msg=lambda m, k=k: f"{k}: {m}")
    # the tolerance is far below what a per-rank batch meaning would give (half the global batch)
    half = tmp_path / "half"
    training.train("fno", data=train, test_data=test, out=half, model_config=SMALL_FNO, **{**OPTIONS, "batch_size": 2})
    c = load_file(half / "weights.safetensors")
    assert max(float((c[k] - a[k]).abs().max()) for k in a) > 1e-3

    ra, rb = rows(one), rows(two)
    assert [r["epoch"] for r in rb] == [1, 2] and [r["lr"] for r in rb] == [r["lr"] for r in ra] == [5e-3, 2.5e-3]
    for x, y in zip(ra, rb):
        for key in ("train_loss", "val_loss", "test_loss"):
            assert y[key] == pytest.approx(x[key], rel=1e-5), key
    meta_a, meta_b = (json.loads((d / "run.json").read_text()) for d in (one, two))
    assert meta_b["n_train"] == meta_a["n_train"] == 13 and meta_b["epoch"] == 2
    assert load_file(two / "weights.safetensors")["normaliser.inputs.mean"].equal(a["normaliser.inputs.mean"])

    # only rank 0 wrote: config, then weights + state + metrics each epoch; rank 1 said nothing
    writes = log.read_text().split("\n")[:-1]
    assert {w.split()[0] for w in writes} == {"0"}, writes
    names = [w.split()[1] for w in writes]
    assert names.count("metrics.jsonl") == 2 and names.count("weights.safetensors") == 2
    assert names.count("train_state.pt") == 2 and names.count("config.yaml") == 1
    assert proc.stdout.count("run ") == 1 and "2 epochs" in proc.stdout, proc.stdout
    assert "error" not in proc.stderr.lower(), proc.stderr
    assert sorted(p.name for p in two.iterdir()) == ["config.yaml", "metrics.jsonl", "run.json",
                                                    "train_state.pt", "weights.safetensors"]


def test_resumed_two_process_run_matches_a_straight_one(two_process_run, darcy16, tmp_path):
    """`sciml train --nproc 2` for 1 epoch, resumed with --nproc 2 to 2 epochs (the lr halves in
    the resumed part), equals the straight 2-epoch run of the same 2 processes."""
    straight = two_process_run[0]
    train, test = darcy16
    split = tmp_path / "split"
    sciml = [sys.executable, "-m", "sciml"]
    first = run([*sciml, *cli_args(train, test, split, epochs=1), "--nproc", "2"], tmp_path)
    assert first.stdout.count("run ") == 1 and len(rows(split)) == 1
    again = run([*sciml, "train", "--resume", str(split), "--epochs", "2", "--no-progress", "--nproc", "2"], tmp_path)
    assert again.stdout.count("run ") == 1 and "2 epochs" in again.stdout, again.stdout

    a, b = load_file(straight / "weights.safetensors"), load_file(split / "weights.safetensors")
    for k in a:  # the same operations in the same order: equal up to the last bit in practice
        torch.testing.assert_close(b[k], a[k], rtol=0, atol=1e-6, msg=lambda m, k=k: f"{k}: {m}")
    ra, rb = rows(straight), rows(split)
    assert [r["epoch"] for r in rb] == [1, 2]
    for x, y in zip(ra, rb):
        for key in ("train_loss", "val_loss", "test_loss", "lr"):
            assert y[key] == pytest.approx(x[key], rel=1e-6, abs=1e-9), key


# ----------------------------------------------------------------------------- errors


AGREE = textwrap.dedent("""
    import os, sys
    from sciml.errors import DataError
    from sciml.training import ddp

    with ddp.world("cpu") as world:
        try:
            with world.agree("loading the data"):
                if world.rank == 1:
                    raise DataError("train.h5 is damaged")
        except Exception as exc:  # one file per rank: the ranks' prints could interleave
            with open(os.path.join(sys.argv[1], f"rank{world.rank}.txt"), "w") as f:
                f.write(f"{type(exc).__name__}: {exc}")
""")


def test_a_failure_on_one_rank_raises_on_every_rank(tmp_path):
    script = tmp_path / "agree.py"
    script.write_text(AGREE)
    run([*TORCHRUN, str(script), str(tmp_path)], tmp_path, SCIML_DDP_TIMEOUT="60")
    assert (tmp_path / "rank0.txt").read_text() == "SciMLError: rank 1 of 2 failed while loading the data: train.h5 is damaged"
    assert (tmp_path / "rank1.txt").read_text() == "DataError: train.h5 is damaged"


def run_cli(args, capsys):
    with pytest.raises(SystemExit) as exc:
        main([str(a) for a in args])
    out = capsys.readouterr()
    return exc.value.code, out.err


@pytest.mark.parametrize("extra, needle", [
    (["--nproc", "0"], "--nproc must be a number of processes >= 1, got 0"),
    (["--nproc", "-2"], "got -2"),
    (["--nproc", "2", "--task", "precond"], "precond training does not run data-parallel"),
    (["--nproc", "2", "--steps", "5"], "unknown key 'steps' in operator training options"),
])
def test_bad_nproc_is_one_line_and_exit_code_1(extra, needle, darcy16, tmp_path, capsys):
    code, err = run_cli(["train", "fno", "--data", darcy16[0], "--out", tmp_path / "r", *extra], capsys)
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert code == 1 and len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], err
    assert not (tmp_path / "r").exists()


def test_world_size_without_torchrun_variables_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    for key in ("RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(key, raising=False)
    with pytest.raises(SciMLError, match="RANK, LOCAL_RANK, MASTER_ADDR, MASTER_PORT are not.*torchrun"):
        with training.ddp.world("cpu"):
            pass


# ----------------------------------------------------------------------------- streaming per rank

# `sciml` under torchrun with every streamed read logged as "RANK START STOP INDICES" (the loader's
# worker processes are forks: they log too)
RECORD_READS = textwrap.dedent("""
    import json, os, sys
    from sciml.training import stream

    real = stream.FileSamples.read

    def logged(self, idx):
        with open(os.environ["READS_LOG"], "a") as log:
            log.write(json.dumps([int(os.environ["RANK"]), self.start, self.stop, [int(i) for i in idx]]) + "\\n")
        return real(self, idx)

    stream.FileSamples.read = stream.FileSamples.__getitem__ = logged
    from sciml.cli.app import main
    main(sys.argv[1:])
""")


def test_streamed_ranks_read_only_their_shares_and_match_the_cached_two_process_run(two_process_run, darcy16,
                                                                                     tmp_path):
    cached = two_process_run[0]
    train, test = darcy16
    script, log, out = tmp_path / "record_reads.py", tmp_path / "reads.log", tmp_path / "streamed"
    script.write_text(RECORD_READS)
    run([*TORCHRUN, str(script), *cli_args(train, test, out), "--cache-gb", "0", "--workers", "1"], tmp_path,
        READS_LOG=str(log))
    a, b = load_file(cached / "weights.safetensors"), load_file(out / "weights.safetensors")
    for k in a:
        assert torch.equal(a[k], b[k]), k  # the same 2-process run, whichever way the samples arrive
    reads = [json.loads(line) for line in log.read_text().splitlines()]
    # training batches: the 13 training samples [0, 13) of the file; per epoch each rank reads its
    # share of every global batch, the two shares disjoint and together every sample
    train_reads = {r: [i for rank, start, stop, idx in reads if rank == r and (start, stop) == (0, 13) and len(idx) <= 2
                       for i in idx] for r in (0, 1)}
    # 2 epochs x 4 global batches (4, 4, 4, 1): rank 0 reads 2, 2, 2, 1 samples, rank 1 reads 2, 2, 2 and,
    # having no share of the last batch, its first sample (zero-weighted, so DDP's all-reduce has its part)
    assert len(train_reads[0]) == len(train_reads[1]) == 14, train_reads
    for epoch in range(2):
        r0, r1 = (train_reads[r][7 * epoch:7 * (epoch + 1)] for r in (0, 1))
        assert sorted(set(r0) | set(r1)) == list(range(13))
        assert set(r0) & set(r1) == {r0[-1]} and r1[-1] == r0[-1]
    # the normaliser: rank 0 reads the training samples once; rank 1 reads two for the statistics' shapes
    fits = [(rank, len(idx)) for rank, start, stop, idx in reads if (start, stop) == (0, 13) and len(idx) > 4]
    assert fits == [(0, 13)], fits
