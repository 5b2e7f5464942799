"""Parallel generation: wall time of ``generate(workers=2)`` against the serial run.

For each resolution the script generates the same ``n`` Darcy samples three ways and
prints seconds per sample and the ratio to the serial time (TARGETS.md goal: 2 workers
<= 0.6 x serial, ideal 0.5):

* ``serial``: ``workers=1``, everything in this process (imports warmed up beforehand);
* ``2 workers``: ``workers=2`` end to end, the local Dask cluster's start included (what
  ``sciml generate --workers 2`` costs);
* ``2 warm``: the same 2-process cluster started (and its imports warmed) beforehand and
  passed as ``scheduler=``: the steady-state throughput of a long run;
* ``bare pool``: ``compute_sample`` mapped over a warm 2-process ``ProcessPoolExecutor``
  with nothing written, the hardware's own limit for 2 processes (on a 2-vCPU VM, each
  solve runs slower when both vCPUs are busy).

It also checks that the files are identical. Best of ``--repeat`` runs (shared machines
are noisy).

    python benchmarks/generation_scaling.py --quick     # s = 211 and 421, 16 samples, 1 repeat
    python benchmarks/generation_scaling.py             # same, best of 3
"""

from __future__ import annotations

import argparse
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import numpy as np


def timed_generate(out: Path, s: int, n: int, **kw) -> float:
    from sciml import datasets

    out.unlink(missing_ok=True)
    t0 = time.perf_counter()
    datasets.generate("darcy", n=n, resolution=s, seed=0, out=out, progress=False, **kw)
    return time.perf_counter() - t0


def same_file(a: Path, b: Path) -> bool:
    import h5py

    with h5py.File(a, "r") as fa, h5py.File(b, "r") as fb:
        return set(fa) == set(fb) and all(np.array_equal(fa[k][()], fb[k][()]) for k in fa)


def timed_pool(pool, s: int, n: int) -> float:
    from sciml.datasets.generators import compute_sample

    t0 = time.perf_counter()
    list(pool.map(compute_sample, ["darcy"] * n, [{"resolution": s}] * n, [0] * n, range(n)))
    return time.perf_counter() - t0


def _warm() -> None:
    from sciml.datasets.generators import compute_sample

    compute_sample("darcy", {"resolution": 9}, 0, 0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one repeat")
    parser.add_argument("-n", type=int, default=16, help="samples per resolution (16)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[211, 421])
    parser.add_argument("--repeat", type=int, default=None, help="runs per setting, best kept (3; 1 with --quick)")
    args = parser.parse_args()
    repeat = args.repeat or (1 if args.quick else 3)
    from sciml.distributed import dask_client

    _warm()
    print(f"{'s':>5} {'n':>4} {'serial s/sample':>16} {'2 workers':>10} {'ratio':>6} {'2 warm':>8} {'ratio':>6} "
          f"{'bare pool':>10} {'ratio':>6}  identical")
    with tempfile.TemporaryDirectory() as tmp, ProcessPoolExecutor(2, mp_context=get_context("spawn")) as pool:
        tmp = Path(tmp)
        list(pool.map(_warm_pool, range(2)))
        for s in args.sizes:
            serial = min(timed_generate(tmp / "serial.h5", s, args.n) for _ in range(repeat))
            cold = min(timed_generate(tmp / "cold.h5", s, args.n, workers=2) for _ in range(repeat))
            with dask_client(workers=2) as client:
                client.run(_warm)
                warm = min(timed_generate(tmp / "warm.h5", s, args.n, scheduler=client.scheduler.address)
                           for _ in range(repeat))
            bare = min(timed_pool(pool, s, args.n) for _ in range(repeat))
            same = same_file(tmp / "serial.h5", tmp / "cold.h5") and same_file(tmp / "serial.h5", tmp / "warm.h5")
            n = args.n
            print(f"{s:>5} {n:>4} {serial / n:>16.4f} {cold / n:>10.4f} {cold / serial:>6.2f} "
                  f"{warm / n:>8.4f} {warm / serial:>6.2f} {bare / n:>10.4f} {bare / serial:>6.2f}  "
                  f"{'yes' if same else 'NO'}", flush=True)


def _warm_pool(_: int) -> None:
    time.sleep(0.2)  # both processes get one
    _warm()


if __name__ == "__main__":
    main()
