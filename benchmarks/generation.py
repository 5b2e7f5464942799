"""Generation speed: marginal samples/s of ``sciml.datasets.generate`` against the bare solve, and 1 -> 2 workers.

For each case the script generates ``n`` samples into a temporary file (serially, then with
2 Dask workers), and times the bare solve of the very same samples: the sparse linear solve
(``sciml.solvers.solve`` with the method the generator picks, assembly excluded) for the
stationary PDEs, the time integration for Burgers and wave. It prints samples/s, seconds per
sample, the ratio generation / bare solve (TARGETS.md goal: <= 1.1), the time spent drawing the
random inputs and assembling the system (part of the recipe, not of the tool), the tool's own
overhead beyond solve + inputs + assembly (writing, bookkeeping), and the ratio of the
2-worker wall time to the serial one (goal: <= 0.6, ideal 0.5; it includes the cluster start).

    python benchmarks/generation.py --quick      # Darcy 211, ConDiff 64, Burgers 2048, wave 64; 16 samples
    python benchmarks/generation.py              # Darcy 421, ConDiff 128, Burgers 8192, wave 128; 16 samples

For the stationary (linear) PDEs it also reports samples/s of the batched path on the CPU
(``generate(..., device="cpu")``, ``sciml generate --device cpu``): ``batch`` systems
solved at once by multigrid-PCG in torch (``pcg-mg``), inputs drawn as in the serial path.
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


def bare_solve(gen, seed: int, i: int) -> tuple[float, float]:
    """Seconds of (solve alone, drawing the inputs + assembly) for sample ``i``."""
    t0 = time.perf_counter()
    inputs = gen.draw_inputs(np.random.default_rng([seed, i]))
    if isinstance(gen, LinearGenerator):
        A, b = gen.assemble(inputs)
        method = gen.method(A)
        t1 = time.perf_counter()
        linear.solve(A, b, method, tol=gen.config.tol)
        return time.perf_counter() - t1, t1 - t0
    t1 = time.perf_counter()
    gen.solve(inputs)
    return time.perf_counter() - t1, t1 - t0


def timed_generate(name: str, s: int, n: int, params: dict, out: Path, workers: int, **options) -> float:
    out.unlink(missing_ok=True)
    t0 = time.perf_counter()
    datasets.generate(name, n=n, resolution=s, seed=0, out=out, progress=False, workers=workers, **params, **options)
    return time.perf_counter() - t0


def bench(name: str, s: int, params: dict, n: int, folder: Path, scaling_s: float, batch: int | None = None) -> dict:
    gen = create(name, resolution=s, **params)
    gen.sample(0, n)  # warm-up: one-time imports and caches are not per-sample costs
    serial = timed_generate(name, s, n, params, folder / f"{name}{s}.h5", workers=1)
    # the marginal cost of a sample, without the file's fixed cost (create, attributes, close)
    one = timed_generate(name, s, 1, params, folder / f"{name}{s}_1.h5", workers=1)
    per_sample = (serial - one) / (n - 1)
    times = np.array([bare_solve(gen, 0, i) for i in range(n)]).mean(axis=0)
    bare, inputs = float(times[0]), float(times[1])
    # the worker comparison gets enough samples for ~scaling_s seconds of serial work, so that the
    # cluster's fixed start-up cost (~1 s) weighs as it would in a real run
    m = max(n, math.ceil(scaling_s * n / serial))
    serial_m = serial if m == n else timed_generate(name, s, m, params, folder / f"{name}{s}_m.h5", workers=1)
    parallel = timed_generate(name, s, m, params, folder / f"{name}{s}_w2.h5", workers=2)
    batched = float("nan")
    if isinstance(gen, LinearGenerator):  # batched multigrid solves on the CPU (generate --device cpu)
        b_all = timed_generate(name, s, n, params, folder / f"{name}{s}_b.h5", workers=1, device="cpu", batch=batch)
        b_one = timed_generate(name, s, 1, params, folder / f"{name}{s}_b1.h5", workers=1, device="cpu", batch=batch)
        batched = (n - 1) / (b_all - b_one)
    return {"case": f"{name} {s}", "samples_per_s": 1 / per_sample, "generate_s": per_sample, "bare_s": bare,
            "ratio": per_sample / bare, "inputs_s": inputs, "fixed_s": one - per_sample,
            "overhead": per_sample / (bare + inputs) - 1, "workers2": parallel / serial_m, "m": m,
            "method": gen.method(gen.assemble(gen.draw_inputs(np.random.default_rng([0, 0]))) [0])
            if isinstance(gen, LinearGenerator) else "-", "batched_per_s": batched}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes")
    parser.add_argument("-n", type=int, default=None, help="samples per case")
    parser.add_argument("--scaling-seconds", type=float, default=None,
                        help="serial work per case in the 1 -> 2 worker comparison (default 10, quick 3)")
    parser.add_argument("--batch", type=int, default=None, help="samples per batched solve (default: generate's, ~1M unknowns)")
    parser.add_argument("--cases", default=None, help="comma-separated generators to run (default all), e.g. darcy,condiff")
    args = parser.parse_args()
    cases = QUICK if args.quick else FULL
    if args.cases:
        wanted = set(args.cases.split(","))
        cases = [c for c in cases if c[0] in wanted]
    n = max(2, args.n or 16)
    scaling = args.scaling_seconds or (3.0 if args.quick else 10.0)
    print(f"{'case':>14} {'samples/s':>10} {'gen s/sample':>13} {'bare solve':>11} {'ratio':>6} "
          f"{'inputs+assembly':>16} {'other overhead':>15} {'file fixed s':>12} {'2 workers / 1':>14} {'(samples)':>9} "
          f"{'method':>8} {'batched pcg-mg samples/s':>25}")
    with tempfile.TemporaryDirectory() as tmp:
        for name, s, params in cases:
            r = bench(name, s, params, n, Path(tmp), scaling, args.batch)
            print(f"{r['case']:>14} {r['samples_per_s']:>10.2f} {r['generate_s']:>13.4f} {r['bare_s']:>11.4f} "
                  f"{r['ratio']:>6.2f} {r['inputs_s']:>16.4f} {r['overhead']:>15.1%} {r['fixed_s']:>12.3f} {r['workers2']:>14.2f} {r['m']:>9} "
                  f"{r['method']:>8} {r['batched_per_s']:>25.2f}", flush=True)


if __name__ == "__main__":
    main()
