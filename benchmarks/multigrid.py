"""Structured black-box multigrid PCG (``pcg-mg``) against pyamg Ruge-Stuben PCG on the same matrices.

Relative residual 1e-8, setup + solve wall time, in one process, one problem at a time:

  poisson    2-D Poisson (``laplacian``), n^2 unknowns
  darcy      FNO Darcy (``darcy`` generator, a in {3, 12}), n^2 unknowns
  condiff    ConDiff, cubic covariance, variance 2.0 (contrast k_max / k_min ~1e5), n^2 unknowns;
             also pcg-mg with bilinear interpolation, to show what operator-dependent
             interpolation buys at coefficient jumps
  obstacles  3-D Poisson with random box/ball obstacles (``poisson3d``), n^3 unknowns

Methods: ``pcg-mg`` (this project's torch multigrid on the CPU, and on the GPU when torch sees
one: the GPU figures are reported, not required), ``pcg-amg`` (pyamg RS hierarchy with its
compiled Gauss-Seidel V-cycle on the CPU; on a GPU also the same hierarchy's cycle in torch).
Targets (TARGETS.md, issue 18): iterations <= 12 on Poisson and Darcy at every size and <= 20 on
ConDiff variance 2.0, flat within 2 iterations from 128^2 to 2048^2; 3-D obstacles <= 15; CPU
setup + solve <= 1.0x pyamg at 1024^2 and 128^3.

    python benchmarks/multigrid.py --quick          # 64^2..256^2 and 32^3: under a minute on 2 cores
    python benchmarks/multigrid.py                  # 64^2..2048^2 and 64^3, 128^3 (about 10 min on 2 cores)
    python benchmarks/multigrid.py --crossover      # where `solver: auto` switches to pcg-mg (generators' sizes)
    sciml solve condiff -s 1024 -p variance=2.0 --method pcg-mg,pcg-amg    # one row, from the CLI

Writes ``multigrid.md`` (table, targets, machine) and ``multigrid.json`` into ``--out``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from solvers import machine_notes  # noqa: E402  (benchmarks/solvers.py)

from sciml import datasets, solvers  # noqa: E402
from sciml.solvers import multigrid  # noqa: E402

TOL = 1e-8
PROBLEMS = {
    "poisson": {"label": "Poisson", "dim": 2, "full": [64, 128, 256, 512, 1024, 2048], "quick": [64, 128, 256]},
    "darcy": {"label": "Darcy", "dim": 2, "full": [64, 128, 256, 512, 1024, 2048], "quick": [64, 128, 256]},
    "condiff": {"label": "ConDiff var 2.0", "dim": 2, "full": [64, 128, 256, 512, 1024, 2048], "quick": [64, 128, 256]},
    "obstacles": {"label": "3-D obstacles", "dim": 3, "full": [64, 128], "quick": [32]},
}


def system(problem: str, n: int):
    """Matrix and right-hand side with ``n`` unknowns per side."""
    if problem == "poisson":
        A = solvers.laplacian(n, 2)
        return A, np.random.default_rng(n).standard_normal(A.shape[0])
    if problem == "darcy":
        A, b, _ = datasets.system("darcy", resolution=n + 2)
        return A, b
    if problem == "condiff":
        A, b, _ = datasets.system("condiff", resolution=n, variance=2.0)
        return A, b
    A, b, _ = datasets.system("poisson3d", resolution=n)
    return A, b


def run(A, b, method: str, device: str | None, **cycle) -> dict:
    if method == "pcg-mg" and cycle:
        r = multigrid.solve(A, b, TOL, 200, None, device=device, **cycle)
    else:
        r = solvers.solve(A, b, method=method, tol=TOL, device=device)
    return {"iterations": r.iterations, "converged": r.converged, "residual": r.residual,
            "setup_s": r.setup_time, "solve_s": r.solve_time, "total_s": r.total_time}


def bench(problems: list[str], protocol: str, gpu: bool, sizes: list[int] | None = None,
          host_max: int | None = None) -> list[dict]:
    """Rows of every (problem, size, method). ``sizes`` overrides the protocol's sizes of the 2-D
    problems; ``host_max`` skips the host solvers (CPU pcg-mg, pyamg, and pyamg's hierarchy on the
    GPU, whose setup runs on the host) above that size, so a GPU run can go to 2048^2 quickly."""
    rows = []
    for problem in problems:
        spec = PROBLEMS[problem]
        for n in (sizes if sizes and spec["dim"] == 2 else spec[protocol]):
            A, b = system(problem, n)
            host = host_max is None or n <= host_max
            variants = [("pcg-mg", "cpu", {}), ("pcg-amg", None, {})] if host else []
            if problem == "condiff" and host:
                variants.append(("pcg-mg", "cpu", {"interpolation": "bilinear"}))
            if gpu:
                variants += [("pcg-mg", "cuda", {})] + ([("pcg-amg", "cuda", {})] if host else [])
            for method, device, cycle in variants:
                # the GPU's first solve of a size pays its allocations and kernel selection: best of 3 there
                repeats = 3 if A.shape[0] <= 300_000 or device == "cuda" else 1
                best = min((run(A, b, method, device, **cycle) for _ in range(repeats)), key=lambda r: r["total_s"])
                label = method + ("-bilinear" if cycle else "") + ("" if device in (None, "cpu") else f" ({device})")
                row = {"problem": problem, "n": n, "unknowns": A.shape[0], "method": label, "device": device or "cpu", **best}
                rows.append(row)
                print(f"{spec['label']:>16} {n:>5}^{spec['dim']}  {label:<20} it {row['iterations']:>3}  "
                      f"setup {row['setup_s']:7.3f} s  solve {row['solve_s']:7.3f} s  total {row['total_s']:7.3f} s  "
                      f"res {row['residual']:.1e}", flush=True)
    return rows


CROSSOVER = {"darcy": [65, 97, 129, 161, 193, 257, 385], "poisson3d": [16, 32, 48, 56, 64, 80]}


def crossover(out: Path) -> None:
    """Where ``auto`` should switch to ``pcg-mg``: per-sample setup + solve of direct, pcg-amg and
    pcg-mg (tol 1e-10, the generators' default) with 1 torch thread (a Dask worker) and with all
    cores (an in-process run), median of 3 samples."""
    lines = ["# Crossover of the generators' solvers (tol 1e-10, median of 3 samples, setup + solve)", "",
             "| pde | resolution | unknowns | torch threads | direct s | pcg-jacobi s | pcg-amg s | pcg-mg s | fastest |",
             "|---|---|---|---|---|---|---|---|---|"]
    cores = torch.get_num_threads()
    for pde, sizes in CROSSOVER.items():
        for s in sizes:
            systems = [datasets.system(pde, resolution=s, index=i)[:2] for i in range(3)]
            for threads in sorted({1, cores}):
                torch.set_num_threads(threads)
                times = {}
                for method in ("direct", "pcg-jacobi", "pcg-amg", "pcg-mg"):
                    if (method == "direct" and systems[0][0].shape[0] > (200_000 if pde == "darcy" else 30_000)) or \
                            (method == "pcg-jacobi" and pde == "darcy"):  # Jacobi: only poisson3d's auto uses it
                        times[method] = float("nan")
                        continue
                    times[method] = float(np.median([solvers.solve(A, b, method=method, tol=1e-10).total_time
                                                     for A, b in systems]))
                best = min((t, m) for m, t in times.items() if t == t)[1]
                lines.append(f"| {pde} | {s} | {systems[0][0].shape[0]} | {threads} | {times['direct']:.4f} | "
                             f"{times['pcg-jacobi']:.4f} | {times['pcg-amg']:.4f} | {times['pcg-mg']:.4f} | {best} |")
                print(lines[-1], flush=True)
    torch.set_num_threads(cores)
    lines += ["", "## Machine", "", *(f"- {m}" for m in machine_notes()), ""]
    out.mkdir(parents=True, exist_ok=True)
    (out / "crossover.md").write_text("\n".join(lines))
    print(f"wrote {out / 'crossover.md'}")


def check_targets(rows: list[dict]) -> list[str]:
    lines = []

    def pick(problem, method):
        return {r["n"]: r for r in rows if r["problem"] == problem and r["method"] == method}

    for problem, cap in (("poisson", 12), ("darcy", 12), ("condiff", 20), ("obstacles", 15)):
        mg = pick(problem, "pcg-mg")
        if not mg and not pick(problem, "pcg-mg (cuda)"):
            continue
        its = {n: r["iterations"] for n, r in mg.items()} or {n: r["iterations"] for n, r in pick(problem, "pcg-mg (cuda)").items()}
        mg = mg or pick(problem, "pcg-mg (cuda)")
        flat = [v for n, v in its.items() if n >= 128]
        ok = max(its.values()) <= cap and all(r["converged"] for r in mg.values())
        spread = max(flat) - min(flat) if flat else 0
        lines.append(f"- {PROBLEMS[problem]['label']}: pcg-mg iterations {its} (cap {cap}: {'met' if ok else 'MISSED'}"
                     + (f"; spread from 128 up {spread}: {'flat' if spread <= 2 else 'NOT flat'}" if problem != "obstacles" else "")
                     + ")")
        amg = pick(problem, "pcg-amg")
        for n in sorted(set(mg) & set(amg)):
            if (problem != "obstacles" and n >= 1024) or (problem == "obstacles" and n >= 128) or n == max(mg):
                ratio = mg[n]["total_s"] / amg[n]["total_s"]
                lines.append(f"  - {n}^{PROBLEMS[problem]['dim']}: setup + solve pcg-mg {mg[n]['total_s']:.2f} s vs pyamg RS "
                             f"{amg[n]['total_s']:.2f} s ({amg[n]['iterations']} it): ratio {ratio:.2f} (target <= 1.0)")
        gpu = pick(problem, "pcg-mg (cuda)")
        if gpu:
            amg_gpu = pick(problem, "pcg-amg (cuda)")
            parts = []
            for n in sorted(gpu):
                r = gpu[n]
                part = (f"{n}^{PROBLEMS[problem]['dim']}: {r['iterations']} it, setup {r['setup_s'] * 1e3:.1f} ms, "
                        f"solve {r['solve_s'] * 1e3:.1f} ms")
                if n in amg_gpu:
                    part += f" (pyamg's hierarchy cycled on the GPU: solve {amg_gpu[n]['solve_s'] * 1e3:.1f} ms, {amg_gpu[n]['iterations']} it)"
                parts.append(part)
            lines.append(f"  - GPU pcg-mg: " + "; ".join(parts))
            if problem == "poisson" and 1024 in gpu:
                t = gpu[1024]["solve_s"] * 1e3
                lines.append(f"  - GPU solve at 1024^2 Poisson: {t:.1f} ms (goal <= 30 ms: {'met' if t <= 30 else 'NOT met'})")
    return lines


def write(rows: list[dict], out: Path, protocol: str, targets: list[str]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "multigrid.json").write_text(json.dumps({"protocol": protocol, "tol": TOL, "rows": rows,
                                                   "machine": machine_notes()}, indent=1))
    lines = [f"# Structured multigrid PCG vs pyamg RS PCG ({protocol} protocol), tol {TOL:g}", "",
             "| problem | n | unknowns | method | iterations | setup s | solve s | total s | residual |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {PROBLEMS[r['problem']]['label']} | {r['n']} | {r['unknowns']} | {r['method']} | {r['iterations']} | "
                     f"{r['setup_s']:.3f} | {r['solve_s']:.3f} | {r['total_s']:.3f} | {r['residual']:.1e} |")
    lines += ["", "## Targets", "", *targets, "", "## Machine", "", *(f"- {m}" for m in machine_notes()), ""]
    (out / "multigrid.md").write_text("\n".join(lines))
    print(f"wrote {out / 'multigrid.md'}")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="CI-sized grids (64^2..256^2, 32^3)")
    parser.add_argument("--problems", default=",".join(PROBLEMS), help="comma-separated subset of " + ", ".join(PROBLEMS))
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/multigrid"))
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: all cores)")
    parser.add_argument("--crossover", action="store_true", help="only measure where solver auto should pick pcg-mg")
    parser.add_argument("--sizes", default=None, help="override the 2-D sizes, e.g. 512,1024,2048")
    parser.add_argument("--host-max", type=int, default=None,
                        help="run the host solvers (CPU pcg-mg, pyamg) only up to this size (GPU runs)")
    args = parser.parse_args(argv)
    if args.crossover:
        return crossover(args.out)
    if args.threads:
        torch.set_num_threads(args.threads)
    problems = [p.strip() for p in args.problems.split(",") if p.strip()]
    unknown = [p for p in problems if p not in PROBLEMS]
    if unknown:
        parser.error(f"unknown problem(s) {unknown}; choose from {list(PROBLEMS)}")
    protocol = "quick" if args.quick else "full"
    gpu = torch.cuda.is_available()
    t0 = time.perf_counter()
    sizes = [int(n) for n in args.sizes.split(",")] if args.sizes else None
    rows = bench(problems, protocol, gpu, sizes, args.host_max)
    targets = check_targets(rows)
    print("\n".join(targets))
    write(rows, args.out, protocol, targets)
    print(f"{time.perf_counter() - t0:.0f} s in all")


if __name__ == "__main__":
    main()
