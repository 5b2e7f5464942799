"""``sciml evaluate``: errors of a trained model and its speed against the classical solver."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from ._common import CLUSTER_CONFIG_HELP, CLUSTER_HELP, WORKERS_HELP


def evaluate(
    runs: Annotated[list[Path], typer.Argument(help="Run directories written by `sciml train` (one or more).", metavar="RUN...")],
    data: Annotated[Optional[list[Path]], typer.Option(help="Test dataset(s); repeat for several resolutions.")] = None,
    out: Annotated[Optional[Path], typer.Option(help="JSON file for the results (default RUN/eval.json; with several runs, "
                                                     "each run's goes there and this file gets the list).")] = None,
    solver_samples: Annotated[int, typer.Option(help="Samples re-solved to time the classical solver.")] = 10,
    graphs: Annotated[int, typer.Option(help="cgs runs: fresh test graphs.")] = 100,
    points: Annotated[Optional[float], typer.Option(help="Point operators (coral, gno): also score on a random fraction of each sample's points.")] = None,
    points_seed: Annotated[int, typer.Option(help="Seed of the --points sampling (training used 0).")] = 1,
    cluster: Annotated[Optional[str], typer.Option("--cluster", help=CLUSTER_HELP)] = None,
    workers: Annotated[Optional[int], typer.Option("--workers", "-w", help=WORKERS_HELP)] = None,
    cluster_config: Annotated[Optional[Path], typer.Option("--cluster-config", help=CLUSTER_CONFIG_HELP)] = None,
    progress: Annotated[bool, typer.Option(help="Show a progress bar of finished (run, dataset) pairs.")] = True,
) -> None:
    """Relative L2 error (mean, std, max), inference and classical-solver time per sample, speed-up.

    Several runs and datasets are evaluated pair by pair; with --workers N > 1 or --cluster each pair
    is an independent Dask task (the errors equal the serial ones; times are taken on shared workers).
    A CGS run (`sciml train cgs`) is scored on fresh graphs instead: pore-network pressure MSE
    against the exact sparse solve, or MDP value MAPE and greedy-policy accuracy.
    """
    from ..evaluation.evaluate import evaluate_many
    from ._common import cluster_section

    results = evaluate_many(runs, data, out=out, n_solver_samples=solver_samples, cluster=cluster, workers=workers,
                            cluster_settings=cluster_section(cluster_config), progress=progress, points=points,
                            points_seed=points_seed, graphs=graphs)
    scored = [r for r in results if r.get("kind") != "cgs"]
    if scored:
        _print_operators(scored, several=len(runs) > 1)
    for r in results:
        if r.get("kind") == "cgs":
            _print_cgs(r)
    for r in results:
        print(f"wrote {r['out']}")
    if out is not None and len(runs) > 1:
        print(f"wrote {out}")


def _print_operators(results: list[dict], several: bool) -> None:
    from ._common import table

    rows = []
    for result in results:
        name = [result["run"]] if several else []
        for r in result["datasets"]:
            if "error" in r:
                rows.append([*name, Path(r["path"]).name, "-", "not evaluated (see below)", *[None] * 6])
                continue
            rows.append([*name, Path(r["path"]).name, r["resolution"], r["n"], r["rel_l2_mean"], r["rel_l2_std"],
                         r["rel_l2_max"], r["model_s_per_sample"], r["solver_s_per_sample"], r["speedup"]])
    table([*(["run"] if several else []), "dataset", "grid", "n", "rel L2 mean", "std", "max", "model s/sample",
           "solver s/sample", "speed-up"], rows,
          title=f"evaluation of {results[0]['run']}" if not several else f"evaluation of {len(results)} runs")
    for result in results:
        for r in result["datasets"]:
            if "error" in r:
                print(f"{Path(r['path']).name} not evaluated: {r['error']}")
        if "points" in result:
            table(["dataset", "points", "n", "rel L2 mean", "std", "max"],
                  [[Path(s["path"]).name, s["points"], s["n"], s["rel_l2_mean"], s["rel_l2_std"], s["rel_l2_max"]]
                   for s in result["points"]],
                  title=f"on a random {result['points'][0]['fraction']:g} of each sample's points: inputs seen and "
                        "outputs predicted there")


def _print_cgs(m: dict) -> None:
    from ._common import table

    skip = {"task", "n_graphs", "seed", "kind", "run", "out"}
    table(["metric", "value"], [[k, v] for k, v in m.items() if k not in skip and not isinstance(v, (dict, list))],
          title=f"cgs {m['task']} on {m['n_graphs']} fresh graphs (seed {m['seed']})")


def register(app: typer.Typer) -> None:
    app.command("evaluate", no_args_is_help=True)(evaluate)
