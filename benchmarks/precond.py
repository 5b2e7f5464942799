"""Neural preconditioners against classical ones: iterations and wall time to a relative residual of 1e-8.

Methods: CG, PCG-Jacobi, PCG-IC(0) (the incomplete factorisation row: for SPD matrices the
symmetric IC(0), see ``sciml.solvers.incomplete``), PCG-AMG (classical Ruge-Stuben, pyamg) and
the three methods with a trained operator (``sciml.learned.neural_precond``):

  fcg     flexible CG(10) with z = net(r)
  fgmres  flexible GMRES(30) with z = net(r)
  hints   flexible CG with the hybrid preconditioner: 2 forward Gauss-Seidel sweeps, the network on
          the remaining residual (energy line search), 2 backward sweeps
  nmg     plain CG with the neural multigrid (``sciml.learned.nmg``): PCG-MG's hierarchy and
          Gauss-Seidel sweeps with a learned smoother on every level (its own small network,
          trained on the same 64^2 fields, ``sciml train nmg``)
  nmg2    the same with two learned stages per smoothing side (``--set stages=2``)
  nmgi    nmg2 with a learned interpolation on every level, trained jointly with the smoother
          (``--set stages=2 --set interpolation=learned``): the hierarchy's Galerkin operators
          are built with the network's interpolation
  nmg2ft128  nmg2 fine-tuned for 100 more steps on 100 fields at 128^2 (``--option init=RUN``),
          whose deeper hierarchies it then sees (the issue allows training sizes <= 128^2)
  nmg2pcg the same network as nmg2 trained with the PCG loss (``--option loss=pcg``): the energy
          error left after 6 PCG steps with the cycle as preconditioner, instead of the stationary
          cycle's convergence factor
  nmg2c3  nmg2 with the coarse levels' smoothing run 3 times per cycle, in training and solving
          (``--set coarse_repeats=3``; ``benchmarks/nmg_recursion.py``)
  nmg3    three learned stages per smoothing side (``--set stages=3``): a stronger smoother, for
          the families whose two-grid cycle with nmg2's smoother misses the target
  nmg3k5  nmg3 with 5x5 learned stencils (``--set stages=3 --set kernel=5``, 2.2x nmg3's cost per
          cycle): on ConDiff variance 2.0 5/6/6/5/5 iterations against nmg3's 5/6/6/6/5
          (``benchmarks/measured/cpu-2026-12-05/nmg3k5-condiff-high.md``)
  nmg3c3  nmg3 with the coarse levels' smoothing x3 (sweeps included: judged against the
          classical cycle with the same sweeps, ``Multigrid(coarse_repeats=3)``)
  nmg3l3  nmg3 with only the coarse levels' learned steps x3 (``--set repeat_sweeps=false``):
          the classical sweeps of V(1,1), so judged against plain PCG-MG
  nmg3l3i nmg3l3 with the learned interpolation of nmgi (``--set interpolation=learned``): the
          coarse-space error that limits nmg3l3 at contrast 1e5 is the interpolation's
  nmg5l3i nmg3l3i with five learned stages per side (``--set stages=5``)

The neural multigrid's targets (shared/TARGETS.md, issue 19) are judged against PCG-MG with the
same hierarchy and the same classical sweeps (for a variant with ``coarse_repeats=k``, the
classical cycle whose coarser levels also sweep k times: ``Multigrid(coarse_repeats=k)``):
iterations <= 0.6x at every size 64^2..1024^2, growth <= 1.15x per
doubling from 128^2, no fallback; the table also gives the cost of one preconditioner application
in finest-grid stencil applications (``nmg.cycle_cost``) and the wall time against PCG-MG and
PCG-AMG (pyamg, CPU). The "smoothing limit" table beside it gives PCG's iterations with the
classical V(nu,nu) cycle, nu = 1, 2, 4, 8, on the same hierarchy and the cycles' convergence
factors: what more classical smoothing alone buys (``benchmarks/interpolation_bound.py`` asks
what a better interpolation could). PCG-MG, PCG-AMG and NMG run at every size of ``mg_sizes`` (to 1024^2); the
other methods at ``sizes``.

Families (one network each, trained on 64^2 unknowns, applied unchanged to unseen systems of
seed 1 at 64^2 ... 512^2):

  darcy         FNO Darcy coefficients (two values 3/12), node grid with n + 2 points per axis
  condiff-low   ConDiff cubic covariance, variance 0.1 (contrast k_max/k_min in [5, 15])
  condiff-high  ConDiff cubic covariance, variance 2.0 (contrast in [8e4, 1e5])

Full protocol: MgNO (levels 5, 24 channels, 4 layers), 100 training coefficient fields x 8
residual-like right-hand sides, 20 epochs; sizes 64, 128, 256, 512 (the multigrid methods also
1024); NMG 400 steps on the same fields. ``--quick``: 24 fields, 4 epochs (NMG 60 steps), sizes 64 and 128 (a smoke test of the whole pipeline in a few minutes on 2 cores; its
networks are under-trained). Trained runs are cached in ``OUT/runs/<family>-<model>-<n>x<epochs>``.

The target (shared/TARGETS.md): fewer iterations than PCG-IC(0) at every size, and a wall time
within 2x of PCG-AMG on a GPU. PCG-MG (the structured multigrid, ``sciml.solvers.multigrid``)
runs on the networks' device, so the learned methods also meet a classical solver on the same
hardware (GPU vs GPU, CPU vs CPU); PCG-AMG stays pyamg on the CPU. When torch sees a GPU the whole neural solve runs there
(``neural_solve(backend="auto")``): float64 Krylov vectors and a sparse CSR matrix on the device,
red-black Gauss-Seidel sweeps for hints, and the network replayed as a CUDA graph captured once
per grid (its capture counts in the setup time of the first solve at each size). On a CPU the
iteration runs on numpy vectors (pyamg's lexicographic Gauss-Seidel).

    python benchmarks/precond.py --quick [--out DIR] [--families darcy] [--model mgno] [--methods ...]
    python benchmarks/precond.py          # full protocol

CLI equivalent of one family:

    sciml generate darcy -s 66 --n 100 --out darcy66.h5
    sciml train mgno --task precond --data darcy66.h5 --epochs 20 --out runs/precond
    sciml train nmg --data darcy66.h5 --steps 400 --out runs/nmg
    sciml solve darcy -s 258 --seed 1 --method cg,pcg-ic,pcg-amg,pcg-mg,hints:runs/precond,fcg:runs/precond,nmg:runs/nmg --tol 1e-8
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from solvers import machine_notes  # noqa: E402  (benchmarks/solvers.py)

from sciml import datasets, solvers  # noqa: E402
from sciml.learned import nmg  # noqa: E402
from sciml.learned.neural_precond import train_preconditioner  # noqa: E402
from sciml.solvers import multigrid as mgm  # noqa: E402

TOL = 1e-8
CLASSICAL = ["cg", "pcg-jacobi", "pcg-ic", "pcg-amg", "pcg-mg"]
#: classical methods run on the device the networks run on (the GPU when torch sees one), so a
#: learned solver is compared with the structured multigrid on the same hardware
SAME_DEVICE = ("pcg-mg",)
NET_DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
#: the neural multigrid variants: their network config (``NMGConfig``: learned stages per
#: smoothing side, learned interpolation)
NMG_STAGES = {"nmg": {"stages": 1}, "nmg2": {"stages": 2}, "nmgi": {"stages": 2, "interpolation": "learned"},
              "nmg2ft128": {"stages": 2, "finetune": {"from": "nmg2", "size": 128, "steps": 100, "lr": 1e-3}},
              "nmg2pcg": {"stages": 2, "train": {"loss": "pcg"}},
              "nmg2c3": {"stages": 2, "coarse_repeats": 3}, "nmg3": {"stages": 3},
              "nmg3k5": {"stages": 3, "kernel": 5}, "nmg3c3": {"stages": 3, "coarse_repeats": 3},
              "nmg3c3pcg": {"stages": 3, "coarse_repeats": 3,
                            "finetune": {"from": "nmg3c3", "size": 64, "steps": 150, "lr": 1e-3,
                                         "train": {"loss": "pcg", "cycles": 4}}},
              "nmg3c3ft128": {"stages": 3, "coarse_repeats": 3,
                              "finetune": {"from": "nmg3c3", "size": 128, "steps": 100, "lr": 1e-3}},
              "nmg3c3d4": {"stages": 3, "coarse_repeats": 3, "width": 16, "layers": 4},
              "nmg3l3": {"stages": 3, "coarse_repeats": 3, "repeat_sweeps": False},
              "nmg3l3i": {"stages": 3, "coarse_repeats": 3, "repeat_sweeps": False, "interpolation": "learned"},
              "nmg5l3i": {"stages": 5, "coarse_repeats": 3, "repeat_sweeps": False, "interpolation": "learned"}}
#: methods run at every size of the protocol's mg_sizes (the rest at sizes): the multigrids and every NMG variant
MG_METHODS = ("pcg-amg", "pcg-mg", *NMG_STAGES)
NETWORK = ["fcg", "fgmres", "hints"]  # the methods that use the trained grid operator
NEURAL = NETWORK + list(NMG_STAGES)
LABELS = {"cg": "CG", "pcg-jacobi": "PCG-Jacobi", "pcg-ic": "PCG-IC(0)", "pcg-amg": "PCG-AMG", "pcg-mg": "PCG-MG",
          "fcg": "FCG+net", "fgmres": "FGMRES+net", "hints": "HINTS (GS+net)",
          "nmg": "NMG (PCG)", "nmg2": "NMG, 2 stages",
          "nmgi": "NMG, 2 stages + learned P", "nmg2ft128": "NMG, 2 stages, tuned at 128^2",
          "nmg2pcg": "NMG, 2 stages, PCG loss", "nmg2c3": "NMG, 2 stages, coarse smoothing x3",
          "nmg3": "NMG, 3 stages", "nmg3k5": "NMG, 3 stages, 5x5 stencils",
          "nmg3c3": "NMG, 3 stages, coarse smoothing x3",
          "nmg3c3pcg": "NMG, 3 stages, coarse x3, tuned for PCG",
          "nmg3c3ft128": "NMG, 3 stages, coarse x3, tuned at 128^2",
          "nmg3c3d4": "NMG, 3 stages, coarse x3, 4-layer network",
          "nmg3l3": "NMG, 3 stages, coarse learned steps x3",
          "nmg3l3i": "NMG, 3 stages, coarse learned steps x3, learned P",
          "nmg5l3i": "NMG, 5 stages, coarse learned steps x3, learned P"}
FAMILIES = {
    "darcy": {"pde": "darcy", "params": {}, "offset": 2},
    "condiff-low": {"pde": "condiff", "params": {"variance": 0.1}, "offset": 0},
    "condiff-high": {"pde": "condiff", "params": {"variance": 2.0}, "offset": 0},
}
PROTOCOLS = {
    "full": {"sizes": [64, 128, 256, 512], "mg_sizes": [64, 128, 256, 512, 1024], "n_train": 100, "epochs": 20,
             "nmg_steps": 400},
    "quick": {"sizes": [64, 128], "mg_sizes": [64, 128], "n_train": 24, "epochs": 4, "nmg_steps": 60},
}
MODEL_CONFIG = {"mgno": {}, "fno": {}, "unet": {}}


def training_data(family: str, protocol: dict, out: Path, size: int = 64) -> Path:
    spec, n = FAMILIES[family], protocol["n_train"]
    data = out / "data" / f"{family}-{size}-{n}.h5"
    if not data.exists():
        print(f"{family}: generating {n} training fields at {size}^2 unknowns ...", flush=True)
        datasets.generate(spec["pde"], n=n, resolution=size + spec["offset"], seed=0, out=data, progress=False,
                          **spec["params"])
    return data


def finished_run(run_dir: Path, key: str, total: int) -> dict | None:
    """The metadata of the cached run ``run_dir`` if its training finished (``meta[key] >= total``).

    Training writes the run at every checkpoint, so a run stopped part-way (a killed job, a
    spent time budget) also has a ``run.json``: it is removed here and trained again, never
    measured as if it were the finished network."""
    path = run_dir / "run.json"
    if not path.exists():
        return None
    meta = json.loads(path.read_text())
    if (meta.get(key) or 0) >= total:
        return meta
    print(f"{run_dir}: an unfinished run ({key} {meta.get(key)} of {total}); training it again", flush=True)
    shutil.rmtree(run_dir)
    return None


def train_nmg_run(family: str, protocol: dict, out: Path, device: str, variant: str = "nmg") -> dict:
    steps, config = protocol["nmg_steps"], NMG_STAGES[variant]
    run_dir = out / "runs" / f"{family}-{variant}-{protocol['n_train']}x{steps}"
    tune = config.get("finetune")
    meta = finished_run(run_dir, "step", max(1, tune["steps"] * steps // 400) if tune else steps)
    if meta is not None:
        print(f"{family}: reusing {run_dir}", flush=True)
        return {"run_dir": str(run_dir), "val_factor": meta.get("val_factor"), "seconds": meta.get("seconds"),
                "classical_factor": meta.get("classical_factor"), "parameters": meta.get("parameters"), "reused": True}
    if "finetune" in config:  # start from another variant's run, go on on larger fields
        tune = config["finetune"]
        base = train_nmg_run(family, protocol, out, device, tune["from"])
        data = training_data(family, protocol, out, tune["size"])
        print(f"{family}: fine-tuning {base['run_dir']} on {tune['size']}^2 fields ...", flush=True)
        r = nmg.train_nmg(data, run_dir, progress=False, steps=max(1, tune["steps"] * steps // 400), lr=tune["lr"],
                          init=base["run_dir"], device=device, **tune.get("train", {}))
    else:
        data = training_data(family, protocol, out)
        print(f"{family}: training the neural multigrid smoother ({config}, {steps} steps) ...", flush=True)
        net_config = {k: v for k, v in config.items() if k != "train"}
        r = nmg.train_nmg(data, run_dir, config=net_config, progress=False, steps=steps, device=device,
                          **config.get("train", {}))
    print(f"{family}: trained in {r['seconds']:.0f} s, cycle factor {r['val_factor']:.3f} held out "
          f"(classical {r['classical_factor']:.3f})", flush=True)
    return {"run_dir": r["run_dir"], "val_factor": r["val_factor"], "seconds": r["seconds"],
            "classical_factor": r["classical_factor"], "parameters": r["parameters"], "reused": False}


def train_run(family: str, model: str, protocol: dict, out: Path, device: str) -> dict:
    n, epochs = protocol["n_train"], protocol["epochs"]
    run_dir = out / "runs" / f"{family}-{model}-{n}x{epochs}"
    meta = finished_run(run_dir, "epoch", epochs)
    if meta is not None:
        print(f"{family}: reusing {run_dir}", flush=True)
        return {"run_dir": str(run_dir), "val_loss": meta.get("val_loss"), "seconds": meta.get("seconds"),
                "parameters": meta.get("parameters"), "model": model, "reused": True}
    data = training_data(family, protocol, out)
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
            "notes": list(r.notes),
            "fell_back": any(k in n for n in r.notes for k in ("continued with", "classical V-cycle finished",
                                                               "classical V-cycle ran instead"))}


def cycle_costs(A, run_dir: str) -> dict:
    """One preconditioner application in finest-grid stencil applications: the classical V-cycle's
    and the neural one's (:func:`sciml.learned.nmg.cycle_cost`)."""
    S = mgm.stencils([A])
    net = nmg.load_nmg(run_dir)[0]
    with torch.no_grad():
        learned = nmg.hierarchy(S, net)[0]  # a learned interpolation has more weights to apply
    c = net.config
    return {"classical": nmg.cycle_cost(mgm.Multigrid(S))["classical"],
            "same_sweeps": nmg.cycle_cost(mgm.Multigrid(S, coarse_repeats=same_sweeps_repeats(asdict(c))))["classical"],
            "neural": nmg.cycle_cost(learned, c.kernel ** c.dim, c.stages, c.coarse_repeats, c.repeat_sweeps)["neural"]}


def same_sweeps_repeats(config: dict) -> int:
    """How often the classical cycle with a neural variant's classical sweeps repeats its coarse
    levels' sweeps (``config``: the variant's ``NMGConfig`` fields): ``coarse_repeats`` when the
    variant repeats its sweeps, else 1 (plain V(1,1))."""
    return config.get("coarse_repeats", 1) if config.get("repeat_sweeps", True) else 1


def same_sweeps(A, b, n: int, k: int, repeat: int) -> dict:
    """PCG with the classical cycle that sweeps as often as a neural variant with
    ``coarse_repeats=k`` (``Multigrid(coarse_repeats=k)``: 1 sweep per side on the finest level, k on
    every coarser one): the reference of that variant's 0.6x target, which asks for the same
    number of classical smoothing sweeps."""
    best = min((mgm.solve(A, b, TOL, 200, None, device=NET_DEVICE, shape=(n, n), coarse_repeats=k)
                for _ in range(repeat)), key=lambda r: r.total_time)
    return {"coarse_repeats": k, "iterations": best.iterations, "converged": best.converged, "total_s": best.total_time}


#: classical sweeps per side of the "smoothing limit" rows: PCG with V(nu, nu) on the same hierarchy
LIMIT_SWEEPS = (2, 4, 8)


def smoothing_limit(A, b, n: int) -> dict:
    """What more classical smoothing alone buys: PCG iterations with the classical V(nu, nu)
    cycle on the same hierarchy (nu = 2, 4, 8 sweeps per side), and the energy-norm convergence
    factors of V(1, 1) and V(8, 8) (:func:`sciml.learned.nmg.convergence_factor`). If 8x the
    sweeps does not reach the 0.6x iteration target, the error left is what the coarse space
    (the interpolation) misses, which more smoothing removes only slowly."""
    b = torch.from_numpy(np.asarray(b, dtype=np.float64)).reshape(1, n, n).to(NET_DEVICE)
    its, factors = {}, {}
    for nu in (1,) + LIMIT_SWEEPS:
        mg = mgm.Multigrid(mgm.stencils([A], (n, n), NET_DEVICE), presmooth=nu)
        if nu > 1:
            its[str(nu)] = int(mg.solve(b, TOL, 200).iterations[0])
        if nu in (1, LIMIT_SWEEPS[-1]):
            factors[str(nu)] = float(nmg.convergence_factor(mg, cycles=16)[0])
    return {"iterations": its, "factors": factors}


def bench_family(family: str, protocol: dict, args, out: Path) -> tuple[list[dict], dict]:
    spec = FAMILIES[family]
    methods = [m for m in CLASSICAL + NEURAL if m in args.methods]
    run = train_run(family, args.model, protocol, out, args.device) if set(NETWORK) & set(methods) else {}
    runs = {"network": run, **{v: train_nmg_run(family, protocol, out, args.device, v) if v in methods else {}
                               for v in NMG_STAGES}}

    def method_name(m: str) -> str:
        return m if m in CLASSICAL else f"nmg:{runs[m]['run_dir']}" if m in NMG_STAGES else f"{m}:{run['run_dir']}"

    # warm-up: imports, the network's load and torch's first calls stay out of the table
    A, b, _ = datasets.system(spec["pde"], resolution=16 + spec["offset"], seed=1, **spec["params"])
    for m in methods:
        solvers.solve(A, b, method=method_name(m), tol=TOL, maxiter=3, device=NET_DEVICE if m in SAME_DEVICE else None)
    rows = []
    for n in sorted(set(protocol["sizes"]) | set(protocol["mg_sizes"])):
        A, b, info = datasets.system(spec["pde"], resolution=n + spec["offset"], seed=1, **spec["params"])
        assert tuple(info["shape"]) == (n, n)
        for m in methods:
            if n not in (protocol["mg_sizes"] if m in MG_METHODS else protocol["sizes"]):
                continue
            # best of --repeat solves: on a GPU the first solve of a size pays allocations, the
            # network's CUDA-graph capture and kernel selection
            best = min((solve_row(A, b, method_name(m)) for _ in range(args.repeat)), key=lambda r: r["total_s"])
            row = {"family": family, "n": n, "unknowns": n * n, "method": m, "repeats": args.repeat, **best}
            if m in NMG_STAGES:
                row["cost"] = cycle_costs(A, runs[m]["run_dir"])
                k = same_sweeps_repeats(NMG_STAGES[m])
                if k > 1:  # the fair reference: the classical cycle with the variant's classical sweeps
                    row["same_sweeps"] = same_sweeps(A, b, n, k, args.repeat)
                if not any(r["n"] == n and "limit" in r for r in rows):
                    row["limit"] = smoothing_limit(A, b, n)
                with torch.no_grad():
                    net = nmg.load_nmg(runs[m]["run_dir"])[0].to(NET_DEVICE)
                    cycle = nmg.NeuralMultigrid(nmg.hierarchy(mgm.stencils([A], (n, n), NET_DEVICE), net)[0], net)
                    row["factor"] = float(nmg.convergence_factor(cycle, cycles=16)[0])
            rows.append(row)
            print(f"{family} {n}^2 {LABELS[m]:>15}: {row['iterations']:6d} it {row['total_s']:8.3f} s"
                  f"{'' if row['converged'] else '  NOT CONVERGED'}{'  (fell back)' if row['fell_back'] else ''}", flush=True)
    return rows, runs


def nmg_verdicts(get: dict, sizes: list[int], key: str = "nmg") -> list[str]:
    """The neural multigrid variant ``key`` against PCG-MG (same hierarchy and sweeps) and PCG-AMG."""
    sizes = [n for n in sizes if (n, key) in get and (n, "pcg-mg") in get]
    if not sizes:
        return []
    name = LABELS[key]
    its = [get[(n, key)]["iterations"] for n in sizes]
    same = [get[(n, key)].get("same_sweeps") for n in sizes]
    if all(same):  # coarse_repeats > 1: the reference sweeps as often as the variant
        reference = f"PCG-MG with the same sweeps (coarse levels x{same[0]['coarse_repeats']})"
        mg_its = [r["iterations"] for r in same]
    else:
        reference, mg_its = "PCG-MG", [get[(n, "pcg-mg")]["iterations"] for n in sizes]
    ratios = [a / b for a, b in zip(its, mg_its)]
    big = [i for i, n in enumerate(sizes) if n >= 128]
    growth = [its[j] / its[i] for i, j in zip(big[:-1], big[1:])]
    fell = [n for n in sizes if get[(n, key)]["fell_back"] or not get[(n, key)]["converged"]]
    cost = get[(sizes[-1], key)]["cost"]
    lines = [f"- {name}: iterations {' / '.join(map(str, its))} vs {reference} {' / '.join(map(str, mg_its))} at "
             f"{' / '.join(f'{n}^2' for n in sizes)}: ratio {', '.join(f'{r:.2f}' for r in ratios)} "
             f"(target <= 0.6 at every size: {'met' if max(ratios) <= 0.6 else 'NOT met'})",
             f"- {name}: iteration growth per doubling from 128^2: {', '.join(f'{g:.2f}' for g in growth) or '-'} "
             f"(target <= 1.15: {'met' if growth and max(growth) <= 1.15 else ('NOT met' if growth else 'n/a')}); "
             f"fallback taken: {', '.join(f'{n}^2' for n in fell) if fell else 'never'}",
             f"- {name}: one application at {sizes[-1]}^2, in finest-grid stencil applications {cost['neural']:.1f}, "
             f"classical V-cycle {cost['classical']:.1f} ({cost['neural'] / cost['classical']:.2f}x per application, "
             f"{cost['neural'] * its[-1] / (cost['classical'] * get[(sizes[-1], 'pcg-mg')]['iterations']):.2f}x per solve"
             + (f"; the classical cycle with the same sweeps {cost['same_sweeps']:.1f}" if all(same) else "") + ")",
             f"- {name}: wall time / PCG-MG ({NET_DEVICE}): "
             + ", ".join(f"{get[(n, key)]['total_s'] / get[(n, 'pcg-mg')]['total_s']:.2f}x" for n in sizes)
             + (("; / PCG-AMG (pyamg, CPU): " + ", ".join(f"{get[(n, key)]['total_s'] / get[(n, 'pcg-amg')]['total_s']:.2f}x"
                                                          for n in sizes if (n, "pcg-amg") in get))
                if any((n, "pcg-amg") in get for n in sizes) else "")]
    return lines


def limit_table(get: dict, sizes: list[int]) -> list[str]:
    """PCG with more classical sweeps against the neural variants, and what the 0.6x target allows."""
    limits = {n: next((r["limit"] for (m, r) in ((m, get.get((n, m))) for m in NMG_STAGES) if r and "limit" in r), None)
              for n in sizes}
    sizes = [n for n in sizes if limits[n] is not None and (n, "pcg-mg") in get]
    if not sizes:
        return []
    variants = [m for m in NMG_STAGES if all((n, m) in get for n in sizes)]
    # the same-sweeps references of the variants with coarse_repeats > 1: V(1,1) with the coarse levels' sweeps x k
    same = {}
    for m in variants:
        for n in sizes:
            if "same_sweeps" in get[(n, m)]:
                same.setdefault(get[(n, m)]["same_sweeps"]["coarse_repeats"], {})[n] = get[(n, m)]["same_sweeps"]["iterations"]
    ks = sorted(k for k in same if all(n in same[k] for n in sizes))
    lines = ["", "The smoothing limit: PCG iterations with the classical V(nu,nu) cycle on the same hierarchy (nu "
             "Gauss-Seidel sweeps per side) against the neural cycles (1 sweep per side and the learned steps), the "
             "iterations the 0.6x target allows, and energy-norm cycle convergence factors (16 cycles from a random "
             "error). When 8x the sweeps does not reach the target, the error left is what the coarse space (the "
             "interpolation) misses, and more smoothing removes it only slowly."
             + (" `V(1,1) coarse xk`: the classical cycle with the sweeps of the neural variants with "
                "`coarse_repeats=k` (k sweeps per side on every level but the finest), their target's reference."
                if ks else ""), "",
             "| unknowns | " + " | ".join(f"V({nu},{nu})" for nu in (1,) + LIMIT_SWEEPS)
             + "".join(f" | V(1,1) coarse x{k}" for k in ks)
             + "".join(f" | {LABELS[m]}" for m in variants)
             + " | target (0.6x V(1,1))" + "".join(f" | target (0.6x V(1,1) coarse x{k})" for k in ks)
             + " | factor V(1,1) | factor V(8,8)" + "".join(f" | factor {LABELS[m]}" for m in variants)
             + " |", "|---|" + "---|" * (len(LIMIT_SWEEPS) + 4 + 2 * len(variants) + 2 * len(ks))]
    for n in sizes:
        lim, classical = limits[n], get[(n, "pcg-mg")]["iterations"]
        f = lim["factors"]
        lines.append(f"| {n}^2 | {classical} | " + " | ".join(str(lim["iterations"][str(nu)]) for nu in LIMIT_SWEEPS)
                     + "".join(f" | {same[k][n]}" for k in ks)
                     + "".join(f" | {get[(n, m)]['iterations']}" for m in variants)
                     + f" | <= {int(0.6 * classical + 1e-9)}" + "".join(f" | <= {int(0.6 * same[k][n] + 1e-9)}" for k in ks)
                     + f" | {f['1']:.3f} | {f[str(LIMIT_SWEEPS[-1])]:.3f}"
                     + "".join(f" | {get[(n, m)]['factor']:.3f}" for m in variants) + " |")
    return lines


def verdicts(rows: list[dict], family: str) -> list[str]:
    sizes = sorted({r["n"] for r in rows if r["family"] == family})
    get = {(r["n"], r["method"]): r for r in rows if r["family"] == family}
    lines = []
    present = {m for (_, m) in get}
    for m in [m for m in NETWORK if m in present and "pcg-ic" in present and "pcg-amg" in present and "pcg-mg" in present]:
        ms = [n for n in sizes if all((n, k) in get for k in (m, "pcg-ic", "pcg-amg", "pcg-mg"))]
        fewer = all(get[(n, m)]["converged"] and get[(n, m)]["iterations"] < get[(n, "pcg-ic")]["iterations"] for n in ms)
        ratio = ", ".join(f"{get[(n, m)]['total_s'] / get[(n, 'pcg-amg')]['total_s']:.1f}x" for n in ms)
        its = " / ".join(str(get[(n, m)]["iterations"]) for n in ms)
        fell = [n for n in ms if get[(n, m)]["fell_back"]]
        lines.append(f"- {LABELS[m]}: iterations {its} at {' / '.join(f'{n}^2' for n in ms)} "
                     f"(PCG-IC(0): {' / '.join(str(get[(n, 'pcg-ic')]['iterations']) for n in ms)}); "
                     f"fewer than PCG-IC(0) at every size: {'yes' if fewer else 'NO'}"
                     + (f" (counting the AMG iterations after the network stopped helping at "
                        f"{', '.join(f'{n}^2' for n in fell)})" if fell else " (the network alone)")
                     + f"; wall time / PCG-AMG (CPU): {ratio}; wall time / PCG-MG (both on {NET_DEVICE}): "
                     + ", ".join(f"{get[(n, m)]['total_s'] / get[(n, 'pcg-mg')]['total_s']:.1f}x" for n in ms))
    return lines + [line for m in NMG_STAGES for line in nmg_verdicts(get, sizes, m)] + limit_table(get, sizes)


def write_outputs(rows, runs, out: Path, protocol_name: str, notes: list[str], wall: float) -> str:
    lines = [f"# Neural preconditioners vs classical ({protocol_name} protocol), tolerance {TOL:g}", ""]
    lines += [f"- {n}" for n in notes]
    lines += [f"- total benchmark wall time {wall:.0f} s", ""]
    for family, fam_runs in runs.items():
        run = fam_runs["network"]
        present = {r["method"] for r in rows if r["family"] == family}
        methods = [m for m in CLASSICAL + NEURAL if m in present]
        lines += [f"## {family}", ""]
        if run:
            lines += [f"Network: {run['model']} trained at 64^2 ({run['parameters']} parameters, validation energy loss "
                      f"{run['val_loss']:.3g}, {run['seconds']:.0f} s{', reused' if run['reused'] else ''}).", ""]
        for v in NMG_STAGES:
            nmg_run = fam_runs.get(v)
            if nmg_run:
                tune = NMG_STAGES[v].get("finetune")
                lines += [f"{LABELS[v]} smoother network ({NMG_STAGES[v]['stages']} learned stage(s) per side"
                          f"{', learned interpolation' if NMG_STAGES[v].get('interpolation') else ''}) trained at 64^2"
                          + (f" and fine-tuned at {tune['size']}^2 " if tune else " ")
                          + f"({nmg_run['parameters']} parameters, held-out cycle convergence factor "
                          f"{nmg_run['val_factor']:.3f} vs classical {nmg_run['classical_factor']:.3f}, "
                          f"{nmg_run['seconds']:.0f} s{', reused' if nmg_run['reused'] else ''}).", ""]
        lines += ["| unknowns | " + " | ".join(LABELS[m] for m in methods) + " |", "|---|" + "---|" * len(methods)]
        for n in sorted({r["n"] for r in rows if r["family"] == family}):
            cells = []
            for m in methods:
                r = next((r for r in rows if r["family"] == family and r["n"] == n and r["method"] == m), None)
                cells.append("-" if r is None else f"{r['iterations']} it, {r['total_s']:.3g} s"
                             + ("" if r["converged"] else " (not conv.)") + (" *" if r["fell_back"] else ""))
            lines.append(f"| {n}^2 | " + " | ".join(cells) + " |")
        lines += ["", *verdicts(rows, family), ""]
    lines += ["`*`: the network stopped helping and the solve finished with the classical fallback (AMG for the "
              "flexible methods, the classical V-cycle for NMG; see precond.json notes). `-`: not run at that size.", ""]
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
            if not pts:
                continue
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
    parser.add_argument("--mg-sizes", default=None, help="override the sizes of PCG-AMG, PCG-MG and NMG")
    parser.add_argument("--methods", default=",".join(CLASSICAL + NEURAL),
                        help="methods to run (default all): " + ",".join(CLASSICAL + NEURAL))
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--repeat", type=int, default=1, help="best of this many solves per method and size (GPU: 2)")
    parser.add_argument("--train-only", action="store_true",
                        help="train (or find) each family's network and stop; a later run measures with them")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    protocol_name = "quick" if args.quick else "full"
    protocol = dict(PROTOCOLS[protocol_name])
    if args.sizes:
        protocol["sizes"] = [int(s) for s in args.sizes.split(",")]
    if args.mg_sizes:
        protocol["mg_sizes"] = [int(s) for s in args.mg_sizes.split(",")]
    args.methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    if set(args.methods) - set(CLASSICAL + NEURAL):
        parser.error(f"unknown method {sorted(set(args.methods) - set(CLASSICAL + NEURAL))}; choose from {CLASSICAL + NEURAL}")
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
            if set(NETWORK) & set(args.methods):
                print(f"{family}: network in {train_run(family, args.model, protocol, args.out, args.device)['run_dir']}")
            for v in NMG_STAGES:
                if v in args.methods:
                    print(f"{family}: {v} in {train_nmg_run(family, protocol, args.out, args.device, v)['run_dir']}")
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
