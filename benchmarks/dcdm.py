"""DCDM with and without the coefficient features: iterations to a relative residual of 1e-6.

Two families, several networks each, trained on this script's settings (seed 0, systems
0..n_systems-1, Adam with lr 3e-3 cosine-annealed, batch 10, for ``steps`` or ``--train-seconds``,
whichever ends first) and applied unchanged to unseen systems (seeds 100, 101, ...):

  condiff    ConDiff, cubic covariance, variance 2.0 (contrast k_max / k_min in [8e4, 1e5]);
             full: trained at 64^2, applied at 64^2 (3 samples) and 128^2 (2);
             quick: trained at 24^2 for 300 steps, applied at 24^2 and 32^2
  obstacles  3-D Poisson with random box/ball obstacles (``poisson3d``, default 2 boxes + 2 balls);
             full: trained at 32^3 on 32 geometries, applied at 32^3 (2 samples), 64^3, 128^3;
             quick: trained at 8^3 for 200 steps, applied at 8^3, 16^3

Networks (:mod:`sciml.learned.dcdm`; ``VARIANTS``): ``dcdm`` is the default for new runs (the
residual plus the matrix's scaled stencil D^-1/2 A D^-1/2 per point, the network working on the
scaled system), ``dcdm-plain`` the residual (and fluid mask) only, as before issue 19; the
``-n128`` variants see 128 coefficient fields instead of 4, ``-w32`` has 32 channels, ``-lf10``
draws its training vectors with the low-spectrum weight on the lowest 10 % (not 55 %), and
``-unroll4`` / ``-unroll8`` fine-tune ``dcdm`` (then ``-unroll4``) on 16 fields with the loss taken
after 4 (8) conjugate-direction steps instead of one (``unroll``; on this CPU, 330 s / 480 s),
``-unroll8-128`` fine-tunes ``-unroll8`` on 8 fields at 128^2 (400 s), ``-unroll8-128slow`` on 16
fields at a 5x lower learning rate (2e-4, 900 s). On obstacles, ``dcdm-plain-16`` is the
residual-only network trained on this CPU at 16^3 (150 s) and ``dcdm-plain-16-32`` that one
fine-tuned at 32^3 (lr 1e-3, 300 s): a network trained on sizes up to 32^3; ``-16-32u2`` fine-tunes
it at 32^3 with the loss after 2 steps instead (lr 3e-4, 400 s).

Each network is measured three ways: its own iteration with the paper's two previous directions
(``/m2``) and with all of them (``/all``, the default of new runs), without any hand-over, and the
``dcdm:RUN`` solve method (``+ho``: all directions, handing over to deflated PCG-IC(0) when the last 10
directions removed less energy-norm error than one Jacobi steepest-descent step would,
``sciml.learned.dcdm.stalled``; the cell gives the hand-over iteration). Classical
references on the same matrices and right-hand sides: CG, Jacobi-PCG and PCG-IC(0).
``+mg`` is the ``dcdm-mg:RUN`` solve method (:mod:`sciml.learned.dcdm_mg`): the same network as the
finest level's smoother inside ``pcg-mg``'s hierarchy (Gauss-Seidel, an exact local solve next to
the boundary and in unresolved gaps, a line-searched network step, a coarse correction by 2 CG
iterations on level 1, a network step, the local solve, Gauss-Seidel), in the DCDM iteration with
all directions and the same hand-over. Its references: ``pcg-mg`` (CG with the V(1,1)-cycle) and
``mg-cycle``, the same cycle as ``+mg`` without the network steps, in the same DCDM iteration.
Iteration counts are the measure; wall times are not reported (the benchmark shares its cores).
Targets (issue 19, item 4): ConDiff: DCDM below PCG-IC(0) at 64^2 and 128^2; obstacles: DCDM
iterations at 64^3 and 128^3 at most 1.5x those at 32^3.

    python benchmarks/dcdm.py --quick                       # a few minutes on one core (networks under-trained)
    python benchmarks/dcdm.py --parallel --train-seconds 220  # full protocol as measured (one process per network)
    python benchmarks/dcdm.py --families obstacles --variants dcdm-plain-16,dcdm-plain-16-32,dcdm-plain-16-32u2 \
        --skip-m2 --threads 2                               # the CPU-trained 3-D networks (~25 min on 2 cores)

Trained runs are cached in ``--runs`` (``<family>-<variant>-s<res>``) and reused when present.
CLI equivalent of one network and one solve:

    sciml train dcdm --pde condiff -s 64 -p variance=2.0 --steps 100000 --lr 3e-3 \
        --option n_systems=4 --option max_seconds=220 --out runs/dcdm-cd
    sciml solve condiff -s 128 -p variance=2.0 --seed 100 --method cg,pcg-ic,dcdm:runs/dcdm-cd --tol 1e-6
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from solvers import machine_notes  # noqa: E402  (benchmarks/solvers.py)

from sciml import datasets, runtime, solvers  # noqa: E402
from sciml.learned.dcdm import Direction, dcdm_solve, load_dcdm, solve_with_fallback, train_dcdm  # noqa: E402
from sciml.learned.dcdm_mg import CycleDirection  # noqa: E402

TOL = 1e-6
PLAIN = {"features": False, "jacobi": False}
#: name -> (network config, training overrides)
VARIANTS = {
    "condiff": {"dcdm": ({}, {}), "dcdm-plain": (PLAIN, {}), "dcdm-n128": ({}, {"n_systems": 128, "val_vectors": 4}),
                "dcdm-n128-w32": ({"width": 32}, {"n_systems": 128, "val_vectors": 4}),
                "dcdm-n128-lf10": ({}, {"n_systems": 128, "val_vectors": 4, "low_fraction": 0.1}),
                # ``dcdm`` fine-tuned on the residual after 4 steps (all directions kept), on 16 fields
                "dcdm-unroll4": ({}, {"unroll": 4, "init": "dcdm", "n_systems": 16, "val_vectors": 4, "lr": 1e-3,
                                      "max_seconds": 330}),
                # and that one fine-tuned further on the residual after 8 steps
                "dcdm-unroll8": ({}, {"unroll": 8, "init": "dcdm-unroll4", "n_systems": 16, "val_vectors": 4, "lr": 1e-3,
                                      "max_seconds": 480}),
                # and that one fine-tuned on 8 fields at 128^2 (8 steps)
                "dcdm-unroll8-128": ({}, {"unroll": 8, "init": "dcdm-unroll8", "resolution": 128, "n_systems": 8,
                                          "val_vectors": 4, "lr": 1e-3, "max_seconds": 400}),
                # the same at a 5x lower rate, on 16 fields and for longer (the 1e-3 fine-tune lost ground at 128^2)
                "dcdm-unroll8-128slow": ({}, {"unroll": 8, "init": "dcdm-unroll8", "resolution": 128, "n_systems": 16,
                                              "val_vectors": 4, "lr": 2e-4, "max_seconds": 900})},
    "obstacles": {"dcdm": ({}, {"val_vectors": 4}), "dcdm-plain": (PLAIN, {"val_vectors": 4}),
                  # the residual-only network trained on this CPU at 16^3 (150 s), then fine-tuned at 32^3 (300 s)
                  "dcdm-plain-16": (PLAIN, {"resolution": 16, "val_vectors": 4, "max_seconds": 150}),
                  "dcdm-plain-16-32": (PLAIN, {"init": "dcdm-plain-16", "val_vectors": 4, "lr": 1e-3, "max_seconds": 300}),
                  # the same fine-tune with the loss after 2 steps at a lower rate (3e-4, 400 s)
                  "dcdm-plain-16-32u2": (PLAIN, {"init": "dcdm-plain-16", "unroll": 2, "val_vectors": 4, "lr": 3e-4,
                                                 "max_seconds": 400})},
}
FAMILIES = {
    "condiff": {"label": "ConDiff var 2.0", "pde": "condiff", "params": {"variance": 2.0}, "dim": 2, "maxiter": 1000,
                "full": {"train": {"resolution": 64, "steps": 100_000, "n_systems": 4, "lr": 3e-3}, "sizes": {64: 3, 128: 2}},
                "quick": {"train": {"resolution": 24, "steps": 300, "n_systems": 4, "lr": 3e-3}, "sizes": {24: 1, 32: 1}}},
    "obstacles": {"label": "3-D obstacles", "pde": "poisson3d", "params": {}, "dim": 3, "maxiter": 300,
                  "full": {"train": {"resolution": 32, "steps": 100_000, "n_systems": 32, "lr": 3e-3},
                           "sizes": {32: 2, 64: 1, 128: 1}},
                  "quick": {"train": {"resolution": 8, "steps": 200, "n_systems": 4, "lr": 3e-3}, "sizes": {8: 2, 16: 1}}},
}
CLASSICAL = ("cg", "pcg-jacobi", "pcg-ic", "pcg-mg")
EVAL_SEED = 100


def train_spec(family: str, variant: str, protocol: str, seconds: float | None) -> tuple[dict, dict]:
    config, extra = VARIANTS[family][variant]
    train = {**FAMILIES[family][protocol]["train"], **extra}
    if protocol == "quick":
        train.pop("val_vectors", None)
        train["n_systems"] = min(train["n_systems"], 4)
        train["resolution"] = FAMILIES[family][protocol]["train"]["resolution"]
    return dict(config), {**FAMILIES[family][protocol]["train"], **({"max_seconds": seconds} if seconds else {}), **train}


def trained(family: str, variant: str, protocol: str, runs: Path, seconds: float | None, threads: int) -> dict:
    """The variant's network for ``family`` (trained now or reused): run dir and training record."""
    spec = FAMILIES[family]
    config, train = train_spec(family, variant, protocol, seconds)
    run_dir = runs / f"{family}-{variant}-s{train['resolution']}"
    if "init" in train:  # a variant fine-tuned from another one's run (named by that run's own resolution)
        train["init"] = str(runs / f"{family}-{train['init']}-s{train_spec(family, train['init'], protocol, seconds)[1]['resolution']}")
    if not (run_dir / "run.json").exists():
        torch.set_num_threads(threads)
        print(f"{family}: training {variant} at {train['resolution']} per axis ...", flush=True)
        train_dcdm(run_dir, config, progress=False, pde=spec["pde"], params=spec["params"], seed=0, log_every=100, **train)
    _, meta = load_dcdm(run_dir)
    if any(meta["train"].get(k) != v for k, v in train.items()):
        sys.exit(f"error: {run_dir} was trained with other settings than {train}; remove it or choose another --runs")
    return {"family": family, "variant": variant, "run_dir": str(run_dir), "config": config, **train,
            "steps_done": meta["steps"], "parameters": meta["parameters"], "seconds": meta["seconds"],
            "val_loss": meta["val_loss"], "batch_size": meta["train"]["batch_size"]}


def evaluate(family: str, protocol: str, nets: list[dict], max_size: int | None, skip_m2: bool = False) -> list[dict]:
    spec = FAMILIES[family]
    loaded = {n["variant"]: load_dcdm(n["run_dir"])[0] for n in nets}
    rows = []
    for size, samples in spec[protocol]["sizes"].items():
        if max_size and size > max_size:
            continue
        for k in range(samples):
            A, b, _ = datasets.system(spec["pde"], resolution=size, seed=EVAL_SEED + k, **spec["params"])
            base = {"family": family, "n": size, "unknowns": A.shape[0], "seed": EVAL_SEED + k}

            def record(method, r, handover=None):
                rows.append({**base, "method": method, "iterations": r.iterations, "converged": bool(r.converged),
                             "residual": float(r.residual), "handover": handover})
                print(f"{spec['label']:>16} {size:>4}^{spec['dim']} seed {EVAL_SEED + k}  {method:<22} it {r.iterations:>5}  "
                      f"{'converged' if r.converged else 'NOT converged'}  res {r.residual:.1e}"
                      + (f"  handed over at {handover}" if handover is not None else ""), flush=True)

            for m in CLASSICAL:
                record(m, solvers.solve(A, b, method=m, tol=TOL))
            cycle = CycleDirection(A, None, (size,) * spec["dim"])  # dcdm-mg's cycle without the network
            record("mg-cycle", dcdm_solve(A, b, cycle, tol=TOL, maxiter=spec["maxiter"], memory=None))
            for variant, net in loaded.items():
                direction = Direction.for_matrix(net, A, device=runtime.device("auto"))
                for memory, tag in ((2, "m2"), (None, "all"))[int(skip_m2):]:
                    record(f"{variant}/{tag}", dcdm_solve(A, b, direction, tol=TOL, maxiter=spec["maxiter"], memory=memory))
                r, at = solve_with_fallback(A, b, direction, tol=TOL, memory=None)
                record(f"{variant}+ho", r, at)
                cycle = CycleDirection(A, direction, direction.shape, device=direction.device)  # dcdm-mg:RUN's
                r, at = solve_with_fallback(A, b, cycle, tol=TOL, memory=None)
                record(f"{variant}+mg", r, at)
    return rows


def mean_iterations(rows: list[dict], family: str, method: str) -> dict[int, float]:
    """Mean iterations per size; ``inf`` where a sample did not converge."""
    out = {}
    for n in sorted({r["n"] for r in rows if r["family"] == family}):
        its = [r["iterations"] if r["converged"] else float("inf") for r in rows
               if r["family"] == family and r["method"] == method and r["n"] == n]
        if its:
            out[n] = float(np.mean(its))
    return out


def verdicts(rows: list[dict], protocol: str) -> list[str]:
    lines = []
    for family in ("condiff", "obstacles"):
        methods = [m for m in dict.fromkeys(r["method"] for r in rows if r["family"] == family) if m.endswith(("/all", "/m2", "+ho", "+mg")) or m == "mg-cycle"]
        ic = mean_iterations(rows, family, "pcg-ic")
        for m in methods:
            d = mean_iterations(rows, family, m)
            if family == "condiff":
                lines += [f"- ConDiff {n}^2, {m}: {d[n]:.1f} vs PCG-IC(0) {ic[n]:.1f} iterations (mean; inf: not converged): "
                          f"{'fewer (met)' if d[n] < ic[n] else 'NOT fewer (missed)'}" for n in d]
            elif d:
                ref = sorted(d)[0]
                lines += [f"- obstacles {n}^3, {m}: {d[n]:.1f} vs {d[ref]:.1f} at {ref}^3: ratio {d[n] / d[ref]:.2f} "
                          f"({'<= 1.5 (met)' if d[n] <= 1.5 * d[ref] else '> 1.5 (missed)'})" for n in d if n > ref]
    if protocol == "quick":
        lines.append("- quick protocol: small, under-trained networks; the targets are judged on the full protocol")
    return lines


def _cell(rs: list[dict]) -> str:
    return ", ".join((f"{r['iterations']}" if r["converged"] else f"{r['iterations']}* ({r['residual']:.1e})")
                     + (f" (ho {r['handover']})" if r.get("handover") is not None else "")
                     + ("†" if r.get("where") else "") for r in rs)


def write(rows: list[dict], nets: list[dict], out: Path, protocol: str, lines: list[str], seconds: float,
          machine: list[str] | None = None, stem: str | None = None) -> None:
    machine = machine or machine_notes()
    out.mkdir(parents=True, exist_ok=True)
    stem = stem or ("dcdm" if protocol == "full" else "dcdm-quick")
    (out / f"{stem}.json").write_text(json.dumps({"protocol": protocol, "tol": TOL, "networks": nets, "rows": rows,
                                                  "machine": machine, "seconds": seconds}, indent=1))
    table = [f"# DCDM with and without coefficient features ({protocol} protocol), relative residual {TOL:g}", "",
             "Iterations per unseen sample (seeds from 100), comma-separated; `*`: not converged within the cap "
             "(DCDM: " + ", ".join(f"{s['label']} {s['maxiter']}" for s in FAMILIES.values()) + "; classical: 10 n), "
             "with the relative residual it ended at; `ho k`: the solve method handed over to PCG-IC(0) at iteration k; "
             "`†`: measured elsewhere (the row's `where`).", ""]
    for fam in FAMILIES:
        frows = [r for r in rows if r["family"] == fam]
        if not frows:
            continue
        table += [f"## {FAMILIES[fam]['label']}", "", "| method | " + " | ".join(f"{n}" for n in sorted({r['n'] for r in frows})) + " |",
                  "|---|" + "---|" * len({r["n"] for r in frows})]
        for m in dict.fromkeys(r["method"] for r in frows):
            table.append(f"| {m} | " + " | ".join(_cell([r for r in frows if r["method"] == m and r["n"] == n])
                                                   for n in sorted({r['n'] for r in frows})) + " |")
        table.append("")
    table += ["## Training (seed 0, systems 0..n_systems-1)", "",
              "| family | network | config | resolution | systems | steps done | batch | lr | parameters | validation loss | seconds |",
              "|---|---|---|---|---|---|---|---|---|---|---|"]
    table += [f"| {FAMILIES[n['family']]['label']} | {n['variant']} | {n['config'] or 'default'} | {n['resolution']} | {n['n_systems']} | "
              f"{n['steps_done']} | {n['batch_size']} | {n['lr']:g} | {n['parameters']} | {n['val_loss']:.3g} | {n['seconds']:.0f} |" for n in nets]
    table += ["", "## Targets (issue 19)", "", *lines, "", "## Machine", "", *(f"- {m}" for m in machine), ""]
    (out / f"{stem}.md").write_text("\n".join(table))
    print(f"wrote {out / (stem + '.md')}")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="CI-sized: small training grids, few steps, small systems")
    parser.add_argument("--families", default=",".join(FAMILIES), help="comma-separated subset of " + ", ".join(FAMILIES))
    parser.add_argument("--variants", default=None, help="comma-separated network names (default: all of the family's)")
    parser.add_argument("--train-seconds", type=float, default=None, help="training budget per network (max_seconds)")
    parser.add_argument("--parallel", action="store_true", help="train the networks in parallel, one process each")
    parser.add_argument("--max-size", type=int, default=None, help="skip evaluation sizes above this")
    parser.add_argument("--skip-m2", action="store_true",
                        help="skip the paper's two-direction iteration (/m2: it does not converge on these families and spends its cap)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/dcdm"))
    parser.add_argument("--runs", type=Path, default=None, help="trained-run cache (default OUT/runs)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per process (1)")
    parser.add_argument("--report", type=Path, default=None, help="only rewrite the markdown of a JSON this script wrote")
    args = parser.parse_args(argv)
    if args.report:
        data = json.loads(args.report.read_text())
        return write(data["rows"], data["networks"], args.report.parent, data["protocol"], verdicts(data["rows"], data["protocol"]),
                     data["seconds"], data["machine"], args.report.stem)
    torch.set_num_threads(args.threads)
    protocol = "quick" if args.quick else "full"
    jobs = [(f, v) for f in args.families.split(",") if f in FAMILIES for v in VARIANTS[f]
            if args.variants is None or v in args.variants.split(",")]
    if not jobs:
        parser.error(f"no networks selected; families: {list(FAMILIES)}, variants: {VARIANTS}")
    t0 = time.perf_counter()
    runs = args.runs or args.out / "runs"
    todo = [(f, v, protocol, runs, args.train_seconds, args.threads) for f, v in jobs]
    first = [job for job in todo if "init" not in VARIANTS[job[0]][job[1]][1]]  # fine-tuned ones after
    if args.parallel and first:
        with ProcessPoolExecutor(len(first)) as pool:
            nets = list(pool.map(trained, *zip(*first)))
    else:
        nets = [trained(*job) for job in first]
    nets += [trained(*job) for job in todo if job not in first]
    rows = []
    for fam in dict.fromkeys(f for f, _ in jobs):
        rows += evaluate(fam, protocol, [n for n in nets if n["family"] == fam], args.max_size, args.skip_m2)
    lines = verdicts(rows, protocol)
    print("\n".join(lines))
    write(rows, nets, args.out, protocol, lines, time.perf_counter() - t0)
    print(f"{time.perf_counter() - t0:.0f} s in all")


if __name__ == "__main__":
    main()
