"""What the V-cycle's recursion costs the neural multigrid: its cycle against the same cycle with
an exact solve below the finest level (two-grid) or below the second (three-grid), and with the
coarse levels' smoothing repeated.

Why: the 2-stage neural multigrid (``sciml.learned.nmg``) takes 5-6 PCG iterations where the 0.6x
target of issue 19 asks for 4-5 (``benchmarks/precond.py``). ``interpolation_bound.py`` bounds
what the two-grid cycle's coarse space allows; this script measures how far the V-cycle is from
its two-grid cycle, i.e. how much a perfect treatment of the coarse levels (any learned coarse
correction, a K- or W-cycle) could give at most. The exact coarse solve is PCG with the classical
cycle of that level's Galerkin matrix to 1e-11. ``coarse x k``: sweeps and learned steps run
``k`` times on every level but the finest (``NeuralMultigrid(coarse_repeats=k)``, still SPD).

    python benchmarks/nmg_recursion.py --quick        # trains a tiny run at 32^2; seconds
    python benchmarks/nmg_recursion.py                 # the runs of precond.py's full protocol, ~3 min

Per family, the run ``RUNS/<family>-<variant>-*`` (``benchmarks/precond.py --methods nmg2``;
``--variant nmg3`` for the 3-stage one). Cycle
factor: energy-norm reduction per cycle on a random error (12 cycles); iterations: PCG to 1e-8 on
the seed-1 system, the one ``benchmarks/precond.py`` solves.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from precond import FAMILIES, TOL  # noqa: E402  (benchmarks/precond.py)
from solvers import add_row, markdown_report, write_report  # noqa: E402

from sciml import datasets  # noqa: E402
from sciml.learned import nmg  # noqa: E402
from sciml.solvers import multigrid as mgm  # noqa: E402

#: (label, level solved exactly (None: the V-cycle down to the dense coarsest solve), coarse repeats)
VARIANTS = [("V-cycle", None, 1), ("coarse x2", None, 2), ("coarse x3", None, 3),
            ("three-grid (exact below level 2)", 2, 1), ("two-grid (exact below level 1)", 1, 1)]


class ExactBelow(nmg.NeuralMultigrid):
    """The neural cycle with the correction equation of level ``exact`` solved to 1e-11."""

    def __init__(self, mg: mgm.Multigrid, net: nmg.SmootherNet, exact: int):
        super().__init__(mg, net)
        self.exact = exact
        self.inner = mgm.Multigrid(mg.levels[exact].S)

    def _cycle(self, l: int, f: torch.Tensor) -> torch.Tensor:
        if l == self.exact:
            out = self.inner.solve(f, tol=1e-11, maxiter=200)
            assert bool(out.converged.all()), "the exact coarse solve did not converge"
            return out.x
        return super()._cycle(l, f)


def cost(cycle: nmg.NeuralMultigrid, exact: int | None) -> str:
    """One cycle's cost next to the classical V-cycle's (not counted for the exact solves)."""
    if exact is not None:
        return "-"
    c = cycle.cost()
    return f"{c['neural']:.1f} ({c['classical']:.1f})"


def tiny_run(tmp: Path) -> Path:
    """A 2-stage network trained 40 steps on 12 Darcy fields at 32^2 (the --quick run)."""
    data = tmp / "darcy-32.h5"
    datasets.generate("darcy", n=12, resolution=34, seed=0, out=data, progress=False)
    out = tmp / "darcy-nmg2-quick"
    nmg.train_nmg(data, out, config={"stages": 2}, progress=False, steps=40, batch_size=4)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a tiny run trained here, 32^2 and 64^2 (seconds)")
    parser.add_argument("--runs", type=Path, default=Path("benchmarks/results/precond-full2/runs"))
    parser.add_argument("--families", default=",".join(FAMILIES))
    parser.add_argument("--sizes", default="64,128,256,512,1024")
    parser.add_argument("--variant", default="nmg2", help="precond.py's variant whose runs to take (nmg2; nmg3: 3 stages)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/nmg-recursion.md"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    families = ["darcy"] if args.quick else [f.strip() for f in args.families.split(",") if f.strip()]
    unknown = [f for f in families if f not in FAMILIES]
    if unknown:
        parser.error(f"unknown family {unknown}; choose from {list(FAMILIES)}")
    sizes = [32, 64] if args.quick else [int(s) for s in args.sizes.split(",")]
    tmp = tempfile.TemporaryDirectory()
    runs = {"darcy": tiny_run(Path(tmp.name))} if args.quick else {}
    for family in families:
        if family not in runs:
            found = sorted(r for r in args.runs.glob(f"{family}-{args.variant}-*") if (r / "run.json").exists())
            if not found:
                parser.error(f"no trained run {args.runs}/{family}-{args.variant}-*; run benchmarks/precond.py "
                             f"--families {family} --methods {args.variant} first, or pass --runs")
            runs[family] = found[0]
    lines = markdown_report(
        "The neural multigrid's V-cycle against its two- and three-grid cycles",
        f"seed-1 system of each family (unseen in training), PCG to {TOL:g}; factor: energy-norm reduction per cycle "
        "(random error, 12 cycles); exact solves: PCG with the classical cycle of that level's Galerkin matrix to "
        "1e-11; 'coarse x k': the smoothing of every level but the finest run k times",
        ["family", "n", "run", "cycle", "cycle factor", "PCG iterations", "PCG-MG iterations",
         "cost (finest-grid stencil applications; PCG-MG's V-cycle)", "seconds"])
    for family in families:
        spec, net = FAMILIES[family], nmg.load_nmg(runs[family])[0]
        for n in sizes:
            A, b, info = datasets.system(spec["pde"], resolution=n + spec["offset"], seed=1, **spec["params"])
            assert tuple(info["shape"]) == (n, n)
            with torch.no_grad():
                mg = mgm.Multigrid(mgm.stencils([A], (n, n)))
                rhs = torch.from_numpy(b).reshape(1, n, n)
                classical = int(mg.solve(rhs, tol=TOL).iterations[0])
                for label, exact, repeats in VARIANTS:
                    if exact is not None and exact >= len(mg.levels) - 1:
                        continue  # that level is already the dense coarsest solve
                    t0 = time.perf_counter()
                    cycle = (ExactBelow(mg, net, exact) if exact is not None
                             else nmg.NeuralMultigrid(mg, net, coarse_repeats=repeats))
                    factor = float(nmg.convergence_factor(cycle, cycles=12)[0])
                    out, at = cycle.solve(rhs, tol=TOL)
                    assert bool(out.converged.all()) and at is None, f"{family} {n}^2 {label}: fell back or failed"
                    add_row(lines, [family, n, Path(runs[family]).name, label, f"{factor:.4f}",
                                    int(out.iterations[0]), classical, cost(cycle, exact), f"{time.perf_counter() - t0:.1f}"])
    write_report(args.out, lines)
    tmp.cleanup()


if __name__ == "__main__":
    main()
