"""Darcy generation speed: samples/s of ``sciml.datasets.generate`` vs the bare linear solve.

For each resolution the script generates ``n`` samples into a temporary file, then times
the bare solve of the very same systems (assembled beforehand, ``sciml.solvers.solve`` with
the method ``auto`` picks) and the other steps, and prints the ratio
generation / bare solve per sample (TARGETS.md goal: <= 1.1).

    python benchmarks/generation.py --quick      # s = 85, 211; 4 samples each
    python benchmarks/generation.py              # s = 85, 211, 421; 16 samples each
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from sciml import datasets
from sciml.datasets.generators import create
from sciml.solvers import linear


def bench(resolution: int, n: int, folder: Path) -> dict[str, float]:
    gen = create("darcy", resolution=resolution)
    gen.sample(0, n)  # warm-up: one-time imports (pyamg, h5netcdf) are not per-sample costs
    t0 = time.perf_counter()
    datasets.generate("darcy", n=n, resolution=resolution, seed=0, out=folder / f"darcy{resolution}.h5", progress=False)
    per_sample = (time.perf_counter() - t0) / n
    draw = assemble = bare = 0.0
    for i in range(n):
        t0 = time.perf_counter()
        inputs = gen.draw_inputs(np.random.default_rng([0, i]))
        t1 = time.perf_counter()
        A, b = gen.assemble(inputs)
        t2 = time.perf_counter()
        result = linear.solve(A, b, gen.method(A), tol=gen.config.tol)
        bare += time.perf_counter() - t2
        draw, assemble = draw + t1 - t0, assemble + t2 - t1
    return {"s": resolution, "method": result.method, "generate_s": per_sample, "bare_solve_s": bare / n,
            "draw_s": draw / n, "assemble_s": assemble / n, "ratio": per_sample / (bare / n)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="s = 85 and 211 with 4 samples each")
    parser.add_argument("-n", type=int, default=None, help="samples per resolution")
    args = parser.parse_args()
    sizes = (85, 211) if args.quick else (85, 211, 421)
    n = args.n or (4 if args.quick else 16)
    print(f"{'s':>5} {'method':>8} {'samples/s':>10} {'gen s/sample':>13} {'bare solve':>11} "
          f"{'GRF draw':>9} {'assembly':>9} {'ratio':>6}")
    with tempfile.TemporaryDirectory() as tmp:
        for s in sizes:
            r = bench(s, n, Path(tmp))
            print(f"{r['s']:>5} {r['method']:>8} {1 / r['generate_s']:>10.2f} {r['generate_s']:>13.4f} "
                  f"{r['bare_solve_s']:>11.4f} {r['draw_s']:>9.4f} {r['assemble_s']:>9.4f} {r['ratio']:>6.2f}",
                  flush=True)


if __name__ == "__main__":
    main()
