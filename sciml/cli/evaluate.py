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
    from ..errors import ConfigError
    from ..evaluation.evaluate import evaluate_many
    from ._common import cluster_section, table

    learned = [run for run in runs if (run / "solver.json").is_file()]
    if learned:
        if len(runs) > 1 or cluster is not None or (workers or 1) > 1:
            raise ConfigError(f"{learned[0]} is a learned solver: evaluate it on its own, without --cluster/--workers")
        return _evaluate_learned_solver(runs[0], data, graphs)
    if not data:
        raise ConfigError("--data is required: the test dataset(s) to evaluate the model on")
    if points is not None and len(runs) > 1:
        raise ConfigError("--points scores one run; evaluate the runs one at a time with --points")

    results = evaluate_many(runs, data, out=out, n_solver_samples=solver_samples, cluster=cluster, workers=workers,
                            cluster_settings=cluster_section(cluster_config), progress=progress)
    rows = []
    for result in results:
        for r in result["datasets"]:
            name = [result["run"]] if len(runs) > 1 else []
            if "error" in r:
                rows.append([*name, Path(r["path"]).name, "-", "not evaluated (see below)", *[None] * 6])
                continue
            rows.append([
                *name, Path(r["path"]).name, r["resolution"], r["n"], r["rel_l2_mean"], r["rel_l2_std"], r["rel_l2_max"],
                r["model_s_per_sample"], r["solver_s_per_sample"], r["speedup"],
            ])
    table([*(["run"] if len(runs) > 1 else []), "dataset", "grid", "n", "rel L2 mean", "std", "max", "model s/sample",
           "solver s/sample", "speed-up"], rows,
          title=f"evaluation of {runs[0]}" if len(runs) == 1 else f"evaluation of {len(runs)} runs")
    for result in results:
        for r in result["datasets"]:
            if "error" in r:
                print(f"{Path(r['path']).name} not evaluated: {r['error']}")
    run = runs[0]
    if points is not None:
        from ..training.coral import evaluate_on_points

        sampled = [evaluate_on_points(run, path, points, seed=points_seed) for path in data]
        table(["dataset", "points", "n", "rel L2 mean", "std", "max"],
              [[Path(p).name, s["points"], s["n"], s["rel_l2_mean"], s["rel_l2_std"], s["rel_l2_max"]]
               for p, s in zip(data, sampled)],
              title=f"on a random {points:g} of each sample's points (seed {points_seed}): inputs seen and outputs predicted there")
    for result in results:
        print(f"wrote {result['out']}")
    if out is not None and len(runs) > 1:
        print(f"wrote {out}")


def _evaluate_learned_solver(run: Path, data, graphs: int) -> None:
    from ..errors import ConfigError
    from ..runs import read_meta
    from ._common import table

    kind = read_meta(run)["kind"]
    if kind == "precond":
        raise ConfigError(f"{run} is a neural preconditioner: compare it with `sciml solve --data FILE "
                          f"--method pcg-ic,pcg-amg,hints:{run},fcg:{run},fgmres:{run}` (or `sciml solve darcy -s 130 ...`)")
    if kind != "cgs":
        raise ConfigError(f"{run} is a {kind} solver: compare it with `sciml solve PDE -s N --method cg,pcg-amg,{kind}:{run}`")
    if data:
        raise ConfigError("a cgs run is scored on fresh generated graphs; drop --data (use --graphs N)")
    from ..learned.cgs import evaluate_cgs

    m = evaluate_cgs(run, n_graphs=graphs)
    skip = {"task", "n_graphs", "seed"}
    table(["metric", "value"], [[k, v] for k, v in m.items() if k not in skip and not isinstance(v, (dict, list))],
          title=f"cgs {m['task']} on {m['n_graphs']} fresh graphs (seed {m['seed']})")
    print(f"wrote {run / 'evaluation.json'}")


def register(app: typer.Typer) -> None:
    app.command("evaluate", no_args_is_help=True)(evaluate)
