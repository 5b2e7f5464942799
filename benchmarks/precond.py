"""Neural preconditioners against classical ones: iterations and wall time to a relative residual of 1e-8.

Methods: CG, PCG-Jacobi, PCG-IC(0) (the incomplete factorisation row: for SPD matrices the
symmetric IC(0), see ``sciml.solvers.incomplete``), PCG-AMG (classical Ruge-Stuben, pyamg) and
the three methods with a trained operator (``sciml.learned.neural_precond``):

  fcg     flexible CG(10) with z = net(r)
  fgmres  flexible GMRES(30) with z = net(r)
  hints   flexible CG with the hybrid preconditioner: 2 forward Gauss-Seidel sweeps, the network on
          the remaining residual (energy line search), 2 backward sweeps

Families (one network each, trained on 64^2 unknowns, applied unchanged to unseen systems of
seed 1 at 64^2 ... 512^2):

  darcy         FNO Darcy coefficients (two values 3/12), node grid with n + 2 points per axis
  condiff-low   ConDiff cubic covariance, variance 0.1 (contrast k_max/k_min in [5, 15])
  condiff-high  ConDiff cubic covariance, variance 2.0 (contrast in [8e4, 1e5])

Full protocol: MgNO (levels 5, 24 channels, 4 layers), 100 training coefficient fields x 8
residual-like right-hand sides, 20 epochs; sizes 64, 128, 256, 512. ``--quick``: 24 fields,
4 epochs, sizes 64 and 128 (a smoke test of the whole pipeline in a few minutes on 2 cores; its
networks are under-trained). Trained runs are cached in ``OUT/runs/<family>-<model>-<n>x<epochs>``.

The target (shared/TARGETS.md): fewer iterations than PCG-IC(0) at every size, and a wall time
within 2x of PCG-AMG on a GPU. PCG-MG (the structured multigrid, ``sciml.solvers.multigrid``)
runs on the networks' device, so the learned methods also meet a classical solver on the same
hardware (GPU vs GPU, CPU vs CPU); PCG-AMG stays pyamg on the CPU. When torch sees a GPU the whole neural solve runs there
(``neural_solve(backend="auto")``): float64 Krylov vectors and a sparse CSR matrix on the device,
red-black Gauss-Seidel sweeps for hints, and the network replayed as a CUDA graph captured once
per grid (its capture counts in the setup time of the first solve at each size). On a CPU the
iteration runs on numpy vectors (pyamg's lexicographic Gauss-Seidel).

    python benchmarks/precond.py --quick [--out DIR] [--families darcy] [--model mgno]
    python benchmarks/precond.py          # full protocol

CLI equivalent of one family:

    sciml generate darcy -s 66 --n 100 --out darcy66.h5
    sciml train mgno --task precond --data darcy66.h5 --epochs 20 --out runs/precond
    sciml solve darcy -s 258 --seed 1 --method cg,pcg-ic,pcg-amg,hints:runs/precond,fcg:runs/precond --tol 1e-8
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
from sciml.learned.neural_precond import train_preconditioner  # noqa: E402

TOL = 1e-8
CLASSICAL = ["cg", "pcg-jacobi", "pcg-ic", "pcg-amg", "pcg-mg"]
#: classical methods run on the device the networks run on (the GPU when torch sees one), so a
#: learned solver is compared with the structured multigrid on the same hardware
SAME_DEVICE = ("pcg-mg",)
NET_DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
NEURAL = ["fcg", "fgmres", "hints"]
LABELS = {"cg": "CG", "pcg-jacobi": "PCG-Jacobi", "pcg-ic": "PCG-IC(0)", "pcg-amg": "PCG-AMG", "pcg-mg": "PCG-MG",
          "fcg": "FCG+net", "fgmres": "FGMRES+net", "hints": "HINTS (GS+net)"}
FAMILIES = {
    "darcy": {"pde": "darcy", "params": {}, "offset": 2},
    "condiff-low": {"pde": "condiff", "params": {"variance": 0.1}, "offset": 0},
    "condiff-high": {"pde": "condiff", "params": {"variance": 2.0}, "offset": 0},
}
PROTOCOLS = {
    "full": {"sizes": [64, 128, 256, 512], "n_train": 100, "epochs": 20},
    "quick": {"sizes": [64, 128], "n_train": 24, "epochs": 4},
}
MODEL_CONFIG = {"mgno": {}, "fno": {}, "unet": {}}


def train_run(family: str, model: str, protocol: dict, out: Path, device: str) -> dict:
    spec = FAMILIES[family]
    n, epochs = protocol["n_train"], protocol["epochs"]
    run_dir = out / "runs" / f"{family}-{model}-{n}x{epochs}"
    meta_path = run_dir / "run.json"
    if meta_path.exists():
        meta = json.loads(meta_path.read_text())
        print(f"{family}: reusing {run_dir}", flush=True)
        return {"run_dir": str(run_dir), "val_loss": meta.get("val_loss"), "seconds": meta.get("seconds"),
                "parameters": meta.get("parameters"), "model": model, "reused": True}
    data = out / "data" / f"{family}-64.h5"
    if not data.exists():
        print(f"{family}: generating {n} training fields at 64^2 unknowns ...", flush=True)
        datasets.generate(spec["pde"], n=n, resolution=64 + spec["offset"], seed=0, out=data, progress=False,
                          **spec["params"])
    print(f"{family}: training {model} as a preconditioner ({n} fields x 8 right-hand sides, {epochs} epochs) ...",
          flush=True)
    r = train_preconditioner(model, data, run_dir, model_config=MODEL_CONFIG.get(model, {}), progress=False,
                             epochs=epochs, device=device)
    print(f"{family}: trained in {r['seconds']:.0f} s, energy loss {r['train_loss']:.3g} "
          f"(validation {r['val_loss']:.3g})", flush=True)
    return {"run_dir": r["run_dir"], "val_loss": r["val_loss"], "seconds": r["seconds"],
            "parameters": r["parameters"], "model": model, "reused": False}


def solve_row(A, b, method: str) -> dict:
    c0 = time.process_time()
    r = solvers.solve(A, b, method=method, tol=TOL, maxiter=20000, device=NET_DEVICE if method in SAME_DEVICE else None)
    return {"iterations": r.iterations, "converged": r.converged, "residual": r.residual, "setup_s": r.setup_time,
            "solve_s": r.solve_time, "total_s": r.total_time, "cpu_s": time.process_time() - c0,
            "notes": list(r.notes), "fell_back": any("continued with" in n for n in r.notes)}


def bench_family(family: str, protocol: dict, args, out: Path) -> tuple[list[dict], dict]:
    spec = FAMILIES[family]
    run = train_run(family, args.model, protocol, out, args.device)
    # warm-up: imports, the network's load and torch's first calls stay out of the table
    A, b, _ = datasets.system(spec["pde"], resolution=16 + spec["offset"], seed=1, **spec["params"])
    for m in CLASSICAL + [f"{k}:{run['run_dir']}" for k in NEURAL]:
        solvers.solve(A, b, method=m, tol=TOL, maxiter=3, device=NET_DEVICE if m in SAME_DEVICE else None)
    rows = []
    for n in protocol["sizes"]:
        A, b, info = datasets.system(spec["pde"], resolution=n + spec["offset"], seed=1, **spec["params"])
        assert tuple(info["shape"]) == (n, n)
        for m in CLASSICAL + NEURAL:
            method = m if m in CLASSICAL else f"{m}:{run['run_dir']}"
            row = {"family": family, "n": n, "unknowns": n * n, "method": m, **solve_row(A, b, method)}
            rows.append(row)
            print(f"{family} {n}^2 {LABELS[m]:>15}: {row['iterations']:6d} it {row['total_s']:8.3f} s"
                  f"{'' if row['converged'] else '  NOT CONVERGED'}{'  (fell back)' if row['fell_back'] else ''}", flush=True)
    return rows, run


def verdicts(rows: list[dict], family: str) -> list[str]:
    sizes = sorted({r["n"] for r in rows if r["family"] == family})
    get = {(r["n"], r["method"]): r for r in rows if r["family"] == family}
    lines = []
    for m in NEURAL:
        fewer = all(get[(n, m)]["converged"] and get[(n, m)]["iterations"] < get[(n, "pcg-ic")]["iterations"] for n in sizes)
        ratio = ", ".join(f"{get[(n, m)]['total_s'] / get[(n, 'pcg-amg')]['total_s']:.1f}x" for n in sizes)
        its = " / ".join(str(get[(n, m)]["iterations"]) for n in sizes)
        fell = [n for n in sizes if get[(n, m)]["fell_back"]]
        lines.append(f"- {LABELS[m]}: iterations {its} at {' / '.join(f'{n}^2' for n in sizes)} "
                     f"(PCG-IC(0): {' / '.join(str(get[(n, 'pcg-ic')]['iterations']) for n in sizes)}); "
                     f"fewer than PCG-IC(0) at every size: {'yes' if fewer else 'NO'}"
                     + (f" (counting the AMG iterations after the network stopped helping at "
                        f"{', '.join(f'{n}^2' for n in fell)})" if fell else " (the network alone)")
                     + f"; wall time / PCG-AMG (CPU): {ratio}; wall time / PCG-MG (both on {NET_DEVICE}): "
                     + ", ".join(f"{get[(n, m)]['total_s'] / get[(n, 'pcg-mg')]['total_s']:.1f}x" for n in sizes))
    return lines


def write_outputs(rows, runs, out: Path, protocol_name: str, notes: list[str], wall: float) -> str:
    methods = CLASSICAL + NEURAL
    lines = [f"# Neural preconditioners vs classical ({protocol_name} protocol), tolerance {TOL:g}", ""]
    lines += [f"- {n}" for n in notes]
    lines += [f"- total benchmark wall time {wall:.0f} s", ""]
    for family, run in runs.items():
        lines += [f"## {family}", "",
                  f"Network: {run['model']} trained at 64^2 ({run['parameters']} parameters, validation energy loss "
                  f"{run['val_loss']:.3g}, {run['seconds']:.0f} s{', reused' if run['reused'] else ''}).", "",
                  "| unknowns | " + " | ".join(LABELS[m] for m in methods) + " |",
                  "|---|" + "---|" * len(methods)]
        for n in sorted({r["n"] for r in rows if r["family"] == family}):
            cells = []
            for m in methods:
                r = next(r for r in rows if r["family"] == family and r["n"] == n and r["method"] == m)
                cells.append(f"{r['iterations']} it, {r['total_s']:.3g} s" + ("" if r["converged"] else " (not conv.)")
                             + (" *" if r["fell_back"] else ""))
            lines.append(f"| {n}^2 | " + " | ".join(cells) + " |")
        lines += ["", *verdicts(rows, family), ""]
    lines += ["`*`: the network stopped helping and the solve finished with the AMG fallback (see precond.json notes).", ""]
    text = "\n".join(lines)
    (out / "precond.md").write_text(text)
    (out / "precond.json").write_text(json.dumps({"rows": rows, "runs": runs, "notes": notes}, indent=2))
    plot(rows, out / "iterations.png")
    return text


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    families = list(dict.fromkeys(r["family"] for r in rows))
    fig, axes = plt.subplots(1, len(families), figsize=(4.5 * len(families), 3.8), squeeze=False)
    for ax, family in zip(axes[0], families):
        for m in CLASSICAL + NEURAL:
            pts = sorted((r["unknowns"], r["iterations"]) for r in rows if r["family"] == family and r["method"] == m)
            ax.loglog(*zip(*pts), marker="o", ls="--" if m in CLASSICAL else "-", label=LABELS[m])
        ax.set_title(family)
        ax.set_xlabel("unknowns")
        ax.set_ylabel(f"iterations to {TOL:g}")
        ax.grid(True, which="both", alpha=0.3)
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes and short training (a few minutes on a CPU)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/precond"))
    parser.add_argument("--families", default=",".join(FAMILIES))
    parser.add_argument("--model", default="mgno", help="grid operator trained as the preconditioner (mgno, fno, unet)")
    parser.add_argument("--sizes", default=None, help="override the sizes, e.g. 64,128,256")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--train-only", action="store_true",
                        help="train (or find) each family's network and stop; a later run measures with them")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    protocol_name = "quick" if args.quick else "full"
    protocol = dict(PROTOCOLS[protocol_name])
    if args.sizes:
        protocol["sizes"] = [int(s) for s in args.sizes.split(",")]
    families = [f.strip() for f in args.families.split(",") if f.strip()]
    unknown = [f for f in families if f not in FAMILIES]
    if unknown:
        parser.error(f"unknown family {unknown}; choose from {list(FAMILIES)}")
    args.out.mkdir(parents=True, exist_ok=True)
    notes = machine_notes()
    t0 = time.perf_counter()
    rows, runs = [], {}
    if args.train_only:
        for family in families:
            run = train_run(family, args.model, protocol, args.out, args.device)
            print(f"{family}: network in {run['run_dir']}", flush=True)
        return
    for family in families:
        fam_rows, run = bench_family(family, protocol, args, args.out)
        rows += fam_rows
        runs[family] = run
        write_outputs(rows, runs, args.out, protocol_name, notes, time.perf_counter() - t0)
    print(write_outputs(rows, runs, args.out, protocol_name, notes, time.perf_counter() - t0))
    print(f"wrote {args.out / 'precond.md'}, precond.json, iterations.png")


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
