"""Soak test: generate -> train -> evaluate in a loop for a set time; memory growth and failures.

Each cycle makes a small Darcy dataset (a new seed each time), trains a small FNO on it, and
evaluates the run on a test set, all in this one process through the Python API (the code
paths of ``sciml generate``, ``sciml train`` and ``sciml evaluate``), plus one CLI round trip
per cycle (``sciml evaluate`` in a subprocess, whose exit code must be 0). After every cycle it
records the process's resident memory (RSS) and the number of open file descriptors. A leak
shows as RSS or descriptors growing from cycle to cycle after the first (which loads torch,
warms the allocators and caches); a failure is any exception or non-zero exit.

Expected: no failures, RSS growth after the warm-up cycles within noise (a few MB), no
descriptor growth. Writes ``soak.json`` (one row per cycle) and prints a summary; exit code 1
if anything failed or the RSS grew by more than ``--max-growth-mb`` between the second cycle and
the last.

    python benchmarks/soak.py --quick            # about 1 minute
    python benchmarks/soak.py --minutes 60       # an hour
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

import torch

from sciml import datasets, evaluation, training


def rss_mb() -> float:
    """Current resident set size of this process in MB (Linux /proc, else peak RSS)."""
    try:
        with open("/proc/self/statm") as fh:
            pages = int(fh.read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def open_fds() -> int:
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError:
        return -1


def cycle(root: Path, seed: int, args) -> dict:
    work = root / f"cycle{seed}"
    work.mkdir()
    train_file, test_file = work / "train.h5", work / "test.h5"
    datasets.generate("darcy", n=args.n_train, resolution=args.resolution, seed=2 * seed, out=train_file, progress=False)
    datasets.generate("darcy", n=args.n_test, resolution=args.resolution, seed=2 * seed + 1, out=test_file,
                      progress=False)
    run = work / "run"
    summary = training.train("fno", data=train_file, out=run, epochs=args.epochs, batch_size=10,
                             model_config={"modes": [6, 6], "width": 12}, progress=False)
    res = evaluation.evaluate(run, data=[test_file], n_solver_samples=2)
    cli = subprocess.run([sys.executable, "-m", "sciml", "evaluate", str(run), "--data", str(test_file)],
                         capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    if cli.returncode != 0:
        raise RuntimeError(f"sciml evaluate exited {cli.returncode}: {cli.stderr.strip().splitlines()[-1:]}")
    shutil.rmtree(work)
    return {"rel_l2": res["datasets"][0]["rel_l2_mean"], "train_loss": summary["train_loss"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="about a minute")
    ap.add_argument("--minutes", type=float, default=30.0, help="how long to run (default 30)")
    ap.add_argument("--resolution", type=int, default=24)
    ap.add_argument("--n-train", type=int, default=40)
    ap.add_argument("--n-test", type=int, default=10)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--max-growth-mb", type=float, default=50.0,
                    help="RSS growth from the second cycle to the last that counts as a leak")
    ap.add_argument("--out", type=Path, default=Path("bench-out/soak"))
    args = ap.parse_args()
    minutes = 1.0 if args.quick else args.minutes
    torch.set_num_threads(1)
    args.out.mkdir(parents=True, exist_ok=True)
    rows, failures = [], 0
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="sciml-soak-") as tmp:
        seed = 0
        while time.perf_counter() - start < 60 * minutes or seed < 3:
            t0 = time.perf_counter()
            row = {"cycle": seed}
            try:
                row.update(cycle(Path(tmp), seed, args))
                row["ok"] = True
            except Exception as exc:  # a soak test counts failures rather than stopping at the first
                failures += 1
                row.update(ok=False, error=f"{type(exc).__name__}: {exc}", trace=traceback.format_exc(limit=3))
            gc.collect()
            row.update(seconds=round(time.perf_counter() - t0, 2), rss_mb=round(rss_mb(), 1), fds=open_fds())
            rows.append(row)
            print(f"cycle {seed:3d}: {'ok  ' if row['ok'] else 'FAIL'} {row['seconds']:6.1f} s  "
                  f"RSS {row['rss_mb']:7.1f} MB  fds {row['fds']}"
                  + (f"  rel L2 {row['rel_l2']:.3f}" if row["ok"] else f"  {row['error']}"), flush=True)
            seed += 1
    base = rows[1] if len(rows) > 1 else rows[0]
    growth = rows[-1]["rss_mb"] - base["rss_mb"]
    fd_growth = rows[-1]["fds"] - base["fds"]
    summary = {"cycles": len(rows), "failures": failures, "minutes": round((time.perf_counter() - start) / 60, 2),
               "rss_growth_mb_after_warmup": round(growth, 1), "fd_growth_after_warmup": fd_growth,
               "max_growth_mb": args.max_growth_mb, "rows": rows}
    (args.out / "soak.json").write_text(json.dumps(summary, indent=2))
    print(f"{len(rows)} cycles in {summary['minutes']} min: {failures} failure(s); RSS growth after the first "
          f"cycle {growth:+.1f} MB, open descriptors {fd_growth:+d} (wrote {args.out / 'soak.json'})")
    if failures or growth > args.max_growth_mb or fd_growth > 0:
        sys.exit(1)


if __name__ == "__main__":
    main()
