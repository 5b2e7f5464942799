"""Generation speed: samples/s of ``sciml.datasets.generate`` against the bare solve, and 1 -> 2 workers.

For each case the script generates ``n`` samples into a temporary file (serially, then with
2 Dask workers), and times the bare solve of the very same samples: the sparse linear solve
(``sciml.solvers.solve`` with the method the generator picks, assembly excluded) for the
stationary PDEs, the time integration for Burgers and wave. It prints samples/s, seconds per
sample, the ratio generation / bare solve (TARGETS.md goal: <= 1.1) and the ratio of the
2-worker wall time to the serial one (goal: <= 0.6, ideal 0.5; it includes the cluster start).

    python benchmarks/generation.py --quick      # small sizes, 4 samples each
    python benchmarks/generation.py              # Darcy 421, ConDiff 128, Burgers 8192, wave 128; 16 samples
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time
from pathlib import Path

import numpy as np

from sciml import datasets
from sciml.datasets.generators import LinearGenerator, create
from sciml.solvers import linear

FULL = [("darcy", 421, {}), ("condiff", 128, {}), ("burgers", 8192, {}), ("wave", 128, {"mode": "variable"})]
QUICK = [("darcy", 211, {}), ("condiff", 64, {}), ("burgers", 2048, {}), ("wave", 64, {"mode": "variable"})]


def bare_solve(gen, seed: int, i: int) -> float:
    """Seconds of the solve alone for sample ``i`` (inputs drawn and systems assembled first)."""
    inputs = gen.draw_inputs(np.random.default_rng([seed, i]))
    if isinstance(gen, LinearGenerator):
        A, b = gen.assemble(inputs)
        method = gen.method(A)
        t0 = time.perf_counter()
        linear.solve(A, b, method, tol=gen.config.tol)
        return time.perf_counter() - t0
    t0 = time.perf_counter()
    gen.solve(inputs)
    return time.perf_counter() - t0


def timed_generate(name: str, s: int, n: int, params: dict, out: Path, workers: int) -> float:
    out.unlink(missing_ok=True)
    t0 = time.perf_counter()
    datasets.generate(name, n=n, resolution=s, seed=0, out=out, progress=False, workers=workers, **params)
    return time.perf_counter() - t0


def bench(name: str, s: int, params: dict, n: int, folder: Path, scaling_s: float) -> dict:
    gen = create(name, resolution=s, **params)
    gen.sample(0, n)  # warm-up: one-time imports and caches are not per-sample costs
    serial = timed_generate(name, s, n, params, folder / f"{name}{s}.h5", workers=1)
    bare = sum(bare_solve(gen, 0, i) for i in range(n)) / n
    # the worker comparison gets enough samples for ~scaling_s seconds of serial work, so that the
    # cluster's fixed start-up cost (~1 s) weighs as it would in a real run
    m = max(n, math.ceil(scaling_s * n / serial))
    serial_m = serial if m == n else timed_generate(name, s, m, params, folder / f"{name}{s}_m.h5", workers=1)
    parallel = timed_generate(name, s, m, params, folder / f"{name}{s}_w2.h5", workers=2)
    return {"case": f"{name} {s}", "samples_per_s": n / serial, "generate_s": serial / n, "bare_s": bare,
            "ratio": serial / n / bare, "workers2": parallel / serial_m, "m": m}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, 4 samples each")
    parser.add_argument("-n", type=int, default=None, help="samples per case")
    parser.add_argument("--scaling-seconds", type=float, default=None,
                        help="serial work per case in the 1 -> 2 worker comparison (default 10, quick 3)")
    args = parser.parse_args()
    cases = QUICK if args.quick else FULL
    n = args.n or (4 if args.quick else 16)
    scaling = args.scaling_seconds or (3.0 if args.quick else 10.0)
    print(f"{'case':>14} {'samples/s':>10} {'gen s/sample':>13} {'bare solve':>11} {'ratio':>6} "
          f"{'2 workers / 1':>14} {'(samples)':>9}")
    with tempfile.TemporaryDirectory() as tmp:
        for name, s, params in cases:
            r = bench(name, s, params, n, Path(tmp), scaling)
            print(f"{r['case']:>14} {r['samples_per_s']:>10.2f} {r['generate_s']:>13.4f} {r['bare_s']:>11.4f} "
                  f"{r['ratio']:>6.2f} {r['workers2']:>14.2f} {r['m']:>9}", flush=True)


if __name__ == "__main__":
    main()
