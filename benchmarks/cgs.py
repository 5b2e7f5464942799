"""Convergent Graph Solvers (Park, Choo, Park, ICLR 2022): pore-network flow and graph value iteration.

Full run (the paper's protocol, ``CGS/configs/*/cgs.yaml`` of the authors' code): Adam 1e-3 with
cosine warm restarts (T0 = 32), a new batch of graphs every 32 updates, MSE loss;
porenet: 1000 updates of 32 networks (13-86 interior pores), 16 heads, no hidden GN layer;
mdp: 5000 updates of 64 MDPs (20-49 states, 5-9 actions), 64 heads, 3 hidden GN layers
(about 0.3 s per update on one CPU thread, so ~25-30 min). ``--quick`` keeps the models and graphs
and cuts the updates (300 and 300), a few minutes on CPU.
Both are evaluated on 100 fresh graphs (seed 12345): porenet pressure MSE / relative L2 against
the exact sparse solve and against the linear profile ``p = 1 - x``; mdp value MAPE and greedy-policy
accuracy against a constant value / the myopic argmax-reward policy. Paper numbers are not reported
(shared/reference/papers.md §9), so the baselines are the reference points.

    python benchmarks/cgs.py --quick [--out benchmarks/results/cgs] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from sciml.io import atomic_write_text
from sciml.learned.cgs import evaluate_cgs, train_cgs

FULL = {"porenet": dict(updates=1000, batch_graphs=32, heads=16, gn_layers=0),
        "mdp": dict(updates=5000, batch_graphs=64, heads=64, gn_layers=3)}
QUICK = {"porenet": dict(updates=300, batch_graphs=32, heads=16, gn_layers=0),
         "mdp": dict(updates=300, batch_graphs=64, heads=64, gn_layers=3)}


def _row(task: str, protocol: dict, summary: dict, m: dict) -> dict:
    if task == "porenet":
        metric = f"pressure MSE {m['mse']:.2e}, rel. L2 {m['rel_l2']:.4f}"
        baseline = f"p = 1 - x: MSE {m['baseline_mse']:.2e}, rel. L2 {m['baseline_rel_l2']:.4f}"
    else:
        metric = f"value MAPE {m['mape']:.2f} %, policy acc. {m['policy_accuracy']:.3f}"
        baseline = (f"constant value: MAPE {m['baseline_mape']:.2f} %; argmax-reward policy acc. "
                    f"{m['baseline_policy_accuracy']:.3f} (chance {m['chance_policy_accuracy']:.3f})")
    return dict(task=task, updates=protocol["updates"], batch_graphs=protocol["batch_graphs"], metric=metric,
                baseline=baseline, iterations=m["fixed_point_iterations"], train_s=summary["train_time_s"],
                metrics=m)


def _table(rows: list[dict], title: str) -> str:
    lines = [f"# {title}", "",
             "| task | updates x graphs | metric (100 test graphs) | baseline | fixed-point iterations | train time |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['task']} | {r['updates']} x {r['batch_graphs']} | {r['metric']} | {r['baseline']} | "
                     f"{r['iterations']:.1f} | {r['train_s']:.0f} s |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="CPU-sized run (fewer updates)")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/cgs"))
    ap.add_argument("--tasks", nargs="+", default=["porenet", "mdp"], choices=["porenet", "mdp"])
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads (default 1: on a shared, busy CPU more threads slow these small graphs down)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    protocols = QUICK if args.quick else FULL
    name = "quick" if args.quick else "full"
    out = args.out / name
    rows = []
    for task in args.tasks:
        p = protocols[task]
        run = out / "runs" / task
        summary = train_cgs(task, run, lr=1e-3, seed=args.seed, progress=True, **p)
        metrics = evaluate_cgs(run, n_graphs=100, seed=12345)
        rows.append(_row(task, p, summary, metrics))
        print(json.dumps(rows[-1], indent=2))
    table = _table(rows, f"CGS ({name} protocol, torch threads: {args.threads}, seed {args.seed})")
    atomic_write_text(out / "cgs.md", table)
    atomic_write_text(out / "results.json", json.dumps(rows, indent=2) + "\n")
    print(table)


if __name__ == "__main__":
    main()
