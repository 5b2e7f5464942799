"""Classical and learned (DCDM) linear solvers: iterations and wall time to a relative residual of 1e-6.

Methods: CG, PCG-Jacobi, PCG-IC(0) (the incomplete-Cholesky/ILU row of the issue), PCG-AMG
(classical Ruge-Stuben, ``sciml.solvers.solve``) and DCDM (Kaneda et al. 2023,
``sciml.learned.dcdm``). Families (full protocol):

  poisson2d    2-D Poisson (``poisson``) at 64^2, 128^2, 256^2; DCDM trained at 32^2, 1500 steps
  obstacles3d  3-D Poisson with random box/ball obstacles (``poisson3d``) at 32^3, 64^3;
               DCDM trained at 16^3 on 8 geometries, 1000 steps
  condiff      ConDiff diffusion at high contrast (cubic covariance, variance 2.0: the recipe's
               contrast window k_max/k_min in [8e4, 1e5]) at 64^2, 128^2 (the paper's grids);
               DCDM trained at 32^2 on 8 coefficient fields, 1500 steps

Each DCDM network is trained at half the family's smallest benchmark resolution on samples of
seed 0 and applied, unchanged, to unseen systems (seed 1: new obstacles, new coefficients) at
that and larger sizes: it is fully convolutional, so "trained at one resolution, applied at
twice (and four times) that resolution". DCDM's claim under test: its iteration count stays
nearly flat when the grid doubles, unlike CG's; its wall time is set against PCG-AMG.
``--quick`` shrinks sizes and training steps so the whole table runs in a few minutes on a
2-core CPU: 2-D Poisson 32^2-128^2 (trained at 32^2, 1000 steps), obstacles 16^3, 32^3 (trained
at 8^3, 300 steps), ConDiff 32^2, 64^2 (trained at 32^2, 400 steps). Its DCDM networks are
under-trained: read its iteration counts as a smoke test.

Trained networks are cached in ``OUT/runs/<family>-s<res>-<steps>steps`` and reused on a re-run
(delete the folder to retrain). Writes ``solvers.md`` (table + notes on the machine),
``solvers.csv`` and ``iterations.png`` (iterations against unknowns, log-log).

    python benchmarks/solvers.py --quick [--out DIR] [--families poisson2d,condiff] [--device cpu|cuda|auto]
    python benchmarks/solvers.py          # full protocol (estimated 20-30 min on a 2-core CPU, mostly 3-D training)

The CLI equivalent of one family:

    sciml train dcdm --pde poisson3d -s 16 --steps 1000 --out runs/dcdm3d
    sciml solve poisson3d -s 64 --method cg,pcg-ic,pcg-amg,dcdm:runs/dcdm3d --tol 1e-6
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

from sciml import datasets, solvers
from sciml.learned.dcdm import train_dcdm
from sciml.solvers.linear import is_symmetric

TOL = 1e-6
METHODS = ["cg", "pcg-jacobi", "pcg-ic", "pcg-amg", "pcg-mg", "dcdm"]
LABELS = {"cg": "CG", "pcg-jacobi": "PCG-Jacobi", "pcg-ic": "PCG-IC(0)", "pcg-amg": "PCG-AMG", "pcg-mg": "PCG-MG",
          "dcdm": "DCDM"}
#: methods that run on the device DCDM's network runs on (the GPU when there is one): the
#: structured multigrid is the classical method a learned solver is compared with on that device
SAME_DEVICE = ("pcg-mg",)

# family: PDE, generator parameters, DCDM iteration cap, and per protocol the benchmark sizes and
# the training (resolution, steps, systems). Full and quick run the same code with these numbers.
FAMILIES = {
    "poisson2d": {
        "label": "2-D Poisson", "pde": "poisson", "params": {}, "dcdm_maxiter": 500,
        "full": {"sizes": [64, 128, 256], "train": (32, 1500, 1)},
        "quick": {"sizes": [32, 64, 128], "train": (32, 1000, 1)},
    },
    "obstacles3d": {
        "label": "3-D Poisson with obstacles", "pde": "poisson3d", "params": {}, "dcdm_maxiter": 200,
        "full": {"sizes": [32, 64], "train": (16, 1000, 8)},
        "quick": {"sizes": [16, 32], "train": (8, 300, 4)},
    },
    "condiff": {
        "label": "ConDiff, contrast 8e4-1e5", "pde": "condiff",
        "params": {"covariance": "cubic", "variance": 2.0}, "dcdm_maxiter": 500,
        "full": {"sizes": [64, 128], "train": (32, 1500, 8)},
        "quick": {"sizes": [32, 64], "train": (32, 400, 4)},
    },
}

STYLES = {"cg": "-", "pcg-jacobi": "--", "pcg-ic": "-", "pcg-amg": "-", "pcg-mg": "-", "dcdm": "-"}  # CG = Jacobi on Poisson
COLUMNS = ["family", "n", "unknowns", "method", "iterations", "converged", "residual", "setup_s", "solve_s",
           "total_s", "cpu_s", "repeats"]


# ------------------------------------------------------------------------------------ machine


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_notes() -> list[str]:
    import pyamg
    import scipy

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    load = " / ".join(f"{x:.2f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "n/a"
    return [
        f"CPU: {cpu_model()}, {os.cpu_count()} logical cores; GPU: {gpu}",
        f"torch {torch.__version__} with {torch.get_num_threads()} thread(s) (`--threads`); sparse BLAS "
        f"single-threaded in every solve (`sciml.solvers.linear.single_threaded_blas`); numpy {np.__version__}, "
        f"scipy {scipy.__version__}, pyamg {pyamg.__version__}; Python {platform.python_version()}, {platform.platform()}",
        f"load average (1/5/15 min) at the start: {load}",
    ]


def markdown_report(title: str, protocol: str, header: list[str]) -> list[str]:
    """The opening lines of a one-table benchmark report: title, machine notes, protocol, table head."""
    return [f"# {title}", "", *[f"- {note}" for note in machine_notes()], f"- {protocol}", "",
            "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]


def add_row(lines: list[str], cells: list) -> None:
    """Append a table row to ``lines`` and print it (progress while the benchmark runs)."""
    row = "| " + " | ".join(str(c) for c in cells) + " |"
    lines.append(row)
    print(row, flush=True)


def write_report(path: Path, lines: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    print(f"wrote {path}")


# ------------------------------------------------------------------------------------ DCDM runs


def net_device() -> str:
    """The torch device of ``dcdm:RUN``'s network, where the structured multigrid runs too."""
    return "cuda" if torch.cuda.is_available() else "cpu"


def solve_device() -> str:
    """Where ``dcdm:RUN`` evaluates the network: the GPU when torch sees one (``solve_with_run``)."""
    return f"the GPU ({torch.cuda.get_device_name(0)})" if torch.cuda.is_available() else "the CPU"


def train_device(name: str) -> str:
    return ("cuda" if torch.cuda.is_available() else "cpu") if name == "auto" else name


def dcdm_run(family: str, spec: dict, train: tuple[int, int, int], out: Path, device: str) -> dict:
    """The family's trained network (trained now, or reused from ``out/runs``): run dir, steps, seconds."""
    res, steps, n_systems = train
    run_dir = out / "runs" / f"{family}-s{res}-{steps}steps"
    meta_path = run_dir / "run.json"
    if meta_path.exists():
        meta = json.loads(meta_path.read_text())
        print(f"{family}: reusing the DCDM network in {run_dir}", flush=True)
        return {"run_dir": str(run_dir), "train_res": res, "steps": meta["steps"], "n_systems": n_systems,
                "seconds": meta["seconds"], "val_loss": meta["val_loss"], "parameters": meta["parameters"],
                "device": meta.get("train_device", meta["train"].get("device", "?")), "reused": True}
    print(f"{family}: training DCDM at {res} per axis, {steps} steps on {n_systems} system(s) ...", flush=True)
    dev = train_device(device)
    r = train_dcdm(run_dir, None, progress=False, pde=spec["pde"], resolution=res, params=spec["params"],
                   n_systems=n_systems, seed=0, steps=steps, device=dev)
    meta = json.loads(meta_path.read_text())
    meta["train_device"] = dev  # record the device actually used (the run stores the option)
    meta_path.write_text(json.dumps(meta, indent=2) + "\n")
    print(f"{family}: trained in {r['seconds']:.1f} s (validation loss {r['val_loss']:.3g})", flush=True)
    return {"run_dir": r["run_dir"], "train_res": res, "steps": r["steps"], "n_systems": n_systems,
            "seconds": r["seconds"], "val_loss": r["val_loss"], "parameters": r["parameters"], "device": dev,
            "reused": False}


# ------------------------------------------------------------------------------------ solves


def timed_solve(A, b, method: str, maxiter: int | None, repeats: int, budget_s: float, device: str | None = None) -> dict:
    """Solve ``repeats`` times (fewer once ``budget_s`` is spent); median times, last result's counts.

    ``cpu_s`` is the process's CPU time over the same solve (all threads): well below ``total_s``
    means the solve waited for a core (the machine was busy), not that it computed longer.
    """
    times = []
    for _ in range(repeats):
        c0 = time.process_time()
        r = solvers.solve(A, b, method=method, tol=TOL, maxiter=maxiter, device=device)
        times.append((r.setup_time, r.solve_time, r.total_time, time.process_time() - c0))
        if sum(t[2] for t in times) > budget_s:
            break
    setup, solve, total, cpu = sorted(times, key=lambda t: t[2])[(len(times) - 1) // 2]  # the (lower) median
    return {"iterations": r.iterations, "converged": r.converged, "residual": r.residual,
            "setup_s": setup, "solve_s": solve, "total_s": total, "cpu_s": cpu, "repeats": len(times)}


def warm_up(spec: dict, n: int, runs: dict[str, str]) -> None:
    """One throw-away solve per method on a small system: imports, the network's load (cached
    by ``sciml.learned.dcdm``) and torch's first-call costs stay out of the table."""
    A, b, _ = datasets.system(spec["pde"], resolution=n, seed=1, index=0, **spec["params"])
    for m in METHODS:
        solvers.solve(A, b, method=runs.get(m, m), tol=TOL, maxiter=2, device=net_device() if m in SAME_DEVICE else None)


def bench_family(family: str, protocol: str, args) -> tuple[list[dict], dict]:
    spec = FAMILIES[family]
    p = spec[protocol]
    run = dcdm_run(family, spec, p["train"], args.out, args.device)
    methods = {"dcdm": f"dcdm:{run['run_dir']}"}
    warm_up(spec, p["train"][0], methods)
    rows = []
    for n in p["sizes"]:
        A, b, info = datasets.system(spec["pde"], resolution=n, seed=1, index=0, **spec["params"])
        if not is_symmetric(A):
            sys.exit(f"error: {family} at {n} is not symmetric; DCDM and CG need an SPD matrix")
        for m in METHODS:
            maxiter = spec["dcdm_maxiter"] if m == "dcdm" else None
            t0 = time.perf_counter()
            r = timed_solve(A, b, methods.get(m, m), maxiter, args.repeats, args.budget,
                            device=net_device() if m in SAME_DEVICE else None)
            row = {"family": family, "n": n, "unknowns": int(A.shape[0]), "method": m, **r}
            if "contrast" in info["inputs"]:
                row["contrast"] = float(info["inputs"]["contrast"])
            rows.append(row)
            print(f"{family:12s} {n:4d} {LABELS[m]:10s} {r['iterations']:5d} it "
                  f"{'ok ' if r['converged'] else 'NOT'} res {r['residual']:.1e}  total {r['total_s']:.3f} s "
                  f"({r['repeats']}x, {time.perf_counter() - t0:.1f} s)", flush=True)
    return rows, run


# ------------------------------------------------------------------------------------ output


def fmt(key: str, v) -> str:
    if v is None:
        return "-"
    if key == "method":
        return LABELS[v]
    if key == "converged":
        return "yes" if v else "**no**"
    if key == "residual":
        return f"{v:.1e}"
    if key.endswith("_s") and v is not None:
        return f"{v:.3f}" if v < 100 else f"{v:.0f}"
    return str(v)


def summary(rows: list[dict], family: str, run: dict) -> list[str]:
    """Iteration ratios when the grid doubles, and DCDM / PCG-AMG wall time, for one family."""
    sizes = sorted({r["n"] for r in rows if r["family"] == family})
    get = {(r["n"], r["method"]): r for r in rows if r["family"] == family}
    label = FAMILIES[family]["label"]
    lines = [f"**{label}** (`{family}`): DCDM trained at {run['train_res']} per axis, {run['steps']} steps on "
             f"{run['n_systems']} system(s) of seed 0, {run['seconds']:.0f} s on {run['device']}"
             f"{' (reused run)' if run['reused'] else ''}, {run['parameters']:,} parameters, validation loss "
             f"{run['val_loss']:.3g}; tested on seed 1, network evaluated on {solve_device()}."]
    contrast = [f"{r['n']}: {r['contrast']:.2g}" for r in rows
                if r["family"] == family and r["method"] == METHODS[0] and "contrast" in r]
    if contrast:
        lines.append("- coefficient contrast k_max / k_min of the test systems: " + ", ".join(contrast))
    for a, c in zip(sizes, sizes[1:]):
        parts = []
        for m in METHODS:
            ra, rc = get.get((a, m)), get.get((c, m))
            if ra and rc and ra["iterations"]:
                flag = "" if ra["converged"] and rc["converged"] else " (not converged)"
                parts.append(f"{LABELS[m]} {rc['iterations'] / ra['iterations']:.2f}{flag}")
        lines.append(f"- iterations ratio when the grid doubles {a} -> {c}: " + ", ".join(parts))
    ratios = []
    for n in sizes:
        d, amg = get.get((n, "dcdm")), get.get((n, "pcg-amg"))
        if d and amg:
            ratios.append(f"{n}: {d['total_s'] / amg['total_s']:.1f}x" + ("" if d["converged"] else " (DCDM not converged)"))
    lines.append("- DCDM total time / PCG-AMG total time: " + ", ".join(ratios))
    same = [f"{n}: {get[(n, 'dcdm')]['total_s'] / get[(n, 'pcg-mg')]['total_s']:.1f}x" for n in sizes
            if (n, "dcdm") in get and (n, "pcg-mg") in get]
    lines.append(f"- DCDM total time / PCG-MG total time, both on {solve_device()}: " + ", ".join(same))
    failed = [str(n) for n in sizes if (n, "dcdm") in get and not get[(n, "dcdm")]["converged"]]
    if failed:
        lines.append(f"- DCDM did not reach {TOL:g} at {', '.join(failed)} (final residuals "
                     + ", ".join(f"{get[(int(n), 'dcdm')]['residual']:.2g}" for n in failed) + ").")
    if run["val_loss"] > 0.5:
        lines.append(f"- DCDM's training did not learn: validation loss {run['val_loss']:.3g}, where 1 means the "
                     "line search along the network's direction removes nothing of a unit residual. The network "
                     "sees the residual and the fluid mask only, not the coefficient k; a convolutional network "
                     "without k cannot represent the spatially varying inverse of a high-contrast operator.")
    return lines


def write_outputs(rows: list[dict], runs: dict, out: Path, protocol: str, notes: list[str], wall: float) -> str:
    keys = COLUMNS + ["contrast"]
    with open(out / "solvers.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    table = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    table += ["| " + " | ".join(fmt(k, r.get(k)) for k in COLUMNS) + " |" for r in rows]
    lines = [f"# Linear solvers to relative residual {TOL:g} ({protocol} protocol)", "", *table, ""]
    for family, run in runs.items():
        lines += summary(rows, family, run) + [""]
    load = " / ".join(f"{x:.2f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "n/a"
    lines += ["## Notes", "", *(f"- {x}" for x in notes),
              f"- load average at the end: {load}; whole run (training included) {wall:.0f} s",
              "- times are wall seconds, the median of up to `--repeats` solves (fewer when one cell has spent "
              "`--budget` seconds); `setup_s` is the preconditioner's set-up (IC factorisation, AMG hierarchy) and, "
              "for DCDM, building the network's input mask and direction map (the weights are loaded once, "
              "before the table, and cached); `total_s` = setup + solve; `cpu_s` the process's CPU seconds over that solve (when it is well below "
              "`total_s`, the solve waited for a busy core). One right-hand side per system "
              "(sample 0 of seed 1). The machine is shared with other work: timings are noisy, ratios below "
              "~1.5x are within the noise.",
              f"- DCDM's network ran on {solve_device()} in the solves: `sciml.learned.dcdm.solve_with_run` puts it "
              "on the GPU whenever torch sees one, whatever `--device` says (`--device` only picks where it trains). "
              "The iteration's vectors stay in float64 on the CPU, so a GPU solve copies the residual to the device "
              "and the direction back once per iteration. Each DCDM iteration costs one network evaluation, one "
              "sparse mat-vec and two A-orthogonalisations. PCG-MG (the structured multigrid in torch) runs on "
              f"the same device as DCDM's network ({net_device()}), so DCDM / PCG-MG is the same-hardware "
              "comparison; the other classical methods run on the CPU (scipy/pyamg). On a CPU, 3-D "
              "convolutions dominate DCDM's time.",
              f"- DCDM iterations are capped at {FAMILIES['poisson2d']['dcdm_maxiter']} in 2-D and "
              f"{FAMILIES['obstacles3d']['dcdm_maxiter']} in 3-D (one 3-D network evaluation took 0.07-0.14 s at 32^3 "
              "and 0.7 s at 64^3 on the 2-core development CPU, one thread); the classical methods at 10 n (CG, Jacobi, IC) and 500 (AMG).",
              "- CG stands for the unpreconditioned method; PCG-IC(0) is a zero-fill incomplete Cholesky "
              "(`sciml.solvers.incomplete.ichol0`), the SPD form of ILU(0); PCG-AMG is pyamg's Ruge-Stuben "
              "hierarchy, one V-cycle per iteration with forward/backward Gauss-Seidel.",
              ]
    if protocol == "quick":
        lines.append("- quick protocol: small grids and under-trained DCDM networks (300-1000 steps instead of "
                     "1000-1500). The quick 3-D network trains at 8^3, a grid the network pools only once, so "
                     "its shared coarse levels (used from 16^3 up) keep their initial weights. The quick table "
                     "checks the pipeline; the full protocol is the measurement.")
    text = "\n".join(lines) + "\n"
    (out / "solvers.md").write_text(text)
    plot(rows, out / "iterations.png", protocol)
    return text


def plot(rows: list[dict], path: Path, protocol: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    families = list(dict.fromkeys(r["family"] for r in rows))
    fig, axes = plt.subplots(1, len(families), figsize=(4.6 * len(families), 4), squeeze=False)
    for ax, family in zip(axes[0], families):
        for m in METHODS:
            pts = sorted((r["unknowns"], r["iterations"], r["converged"]) for r in rows
                         if r["family"] == family and r["method"] == m)
            if not pts:
                continue
            x, y, ok = zip(*pts)
            line, = ax.loglog(x, y, STYLES[m], label=LABELS[m], lw=2.2 if m == "dcdm" else 1.3)
            ax.scatter([a for a, c in zip(x, ok) if c], [b for b, c in zip(y, ok) if c], color=line.get_color(), s=22)
            ax.scatter([a for a, c in zip(x, ok) if not c], [b for b, c in zip(y, ok) if not c],
                       facecolors="none", edgecolors=line.get_color(), s=40)
        ax.set_title(FAMILIES[family]["label"], fontsize=10)
        ax.set_xlabel("unknowns")
        ax.grid(True, which="both", alpha=0.3)
    axes[0][0].set_ylabel(f"iterations to {TOL:g} (hollow: not converged)")
    axes[0][-1].legend(fontsize=8)
    fig.suptitle(f"Solver iterations ({protocol} protocol)", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# ------------------------------------------------------------------------------------ main


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="CPU-sized run (minutes)")
    ap.add_argument("--out", type=Path, default=None,
                    help="output folder (default benchmarks/results/solvers/{quick,full})")
    ap.add_argument("--families", default=",".join(FAMILIES), help="comma-separated subset of " + ", ".join(FAMILIES))
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="where DCDM trains")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (training and the DCDM network)")
    ap.add_argument("--repeats", type=int, default=3, help="solves per cell; the median time is reported")
    ap.add_argument("--budget", type=float, default=10.0, help="stop repeating a cell after this many seconds")
    ap.add_argument("--train-only", action="store_true",
                    help="train (or find) each family's DCDM network and stop; a later run measures with them")
    args = ap.parse_args()
    protocol = "quick" if args.quick else "full"
    args.out = args.out or Path("benchmarks/results/solvers") / protocol
    args.out.mkdir(parents=True, exist_ok=True)
    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("error: --device cuda but torch sees no CUDA GPU; use --device cpu")
    torch.set_num_threads(max(1, args.threads))
    families = args.families.split(",")
    for f in families:
        if f not in FAMILIES:
            sys.exit(f"error: unknown family {f!r}; valid families are: {', '.join(FAMILIES)}")

    t0 = time.perf_counter()
    notes = machine_notes()
    rows, runs = [], {}
    if args.train_only:
        for family in families:
            spec = FAMILIES[family]
            run = dcdm_run(family, spec, spec[protocol]["train"], args.out, args.device)
            print(f"{family}: network in {run['run_dir']}", flush=True)
        return
    for family in families:
        r, run = bench_family(family, protocol, args)
        rows += r
        runs[family] = run
        write_outputs(rows, runs, args.out, protocol, notes, time.perf_counter() - t0)  # partial results survive
    text = write_outputs(rows, runs, args.out, protocol, notes, time.perf_counter() - t0)
    print()
    print(text)
    print(f"wrote {args.out / 'solvers.md'}, {args.out / 'solvers.csv'} and {args.out / 'iterations.png'} "
          f"in {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
