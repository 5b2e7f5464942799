"""``sciml sweep``: a grid of (model x dataset x seed) train + evaluate cells, on Dask."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from ._common import CLUSTER_HELP, WORKERS_HELP


def sweep(
    config: Annotated[Path, typer.Argument(help="Sweep YAML, e.g. configs/sweep_example.yaml.")],
    cluster: Annotated[Optional[str], typer.Option("--cluster", help=CLUSTER_HELP + " Overrides the config's cluster.kind.")] = None,
    workers: Annotated[Optional[int], typer.Option("--workers", "-w", help=WORKERS_HELP + " Overrides cluster.workers.")] = None,
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Override the config's output folder.")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="List the cells (finished or to run) and, for slurm/pbs, "
                                          "print the batch job script; run and submit nothing.")] = False,
    progress: Annotated[bool, typer.Option(help="Show a progress bar of finished cells.")] = True,
    logger: Annotated[Optional[list[str]], typer.Option(help="Experiment tracker of every cell: tensorboard (OUT/cells/CELL/"
                                                              "tensorboard) or mlflow (one run per cell in OUT/mlruns); "
                                                              "repeatable or a comma list; pip install 'sciml[tracking]'.")] = None,
) -> None:
    """Train and evaluate every (model, dataset, seed) cell as an independent task.

    Each finished cell is stored at once (OUT/cells/CELL/result.json); a re-run skips finished
    cells. OUT/results.csv (one row per cell), OUT/results.md (mean ± std over seeds) and
    OUT/results.png compare the models. Exit code 1 when a cell failed (the others still run).
    """
    from .. import sweep as sweeps
    from ..distributed import cluster_spec, job_script
    from ..errors import SciMLError
    from ._common import table

    if dry_run:
        plan = sweeps.load_sweep(config, out)
        where = cluster_spec(cluster, workers, settings=plan.config.cluster)
        done = [sweeps.finished(c) for c in plan.cells]
        table(["cell", "model", "dataset", "seed", "status"],
              [[c.name, c.model, c.dataset, c.seed, "finished" if d else "to run"] for c, d in zip(plan.cells, done)],
              title=f"sweep {plan.config.name} -> {plan.root}")
        print(f"{len(plan.cells) - sum(done)} of {len(plan.cells)} cells to run on {where.describe()}")
        if where.kind in ("slurm", "pbs"):
            print(f"# the {where.kind.upper()} job script of one job ({where.workers or 'one job of'} Dask workers asked; "
                  "the scheduler address is filled in at run time):")
            print(job_script(where))
        return

    from .. import runtime
    from ..errors import Preempted

    try:
        with runtime.job_signals("raise"):  # SIGTERM/SIGUSR1: stop now; finished cells are stored already
            result = sweeps.run_sweep(config, out=out, cluster=cluster, workers=workers, progress=progress, logger=logger)
    except (runtime.JobSignal, Preempted) as exc:
        name = exc.name if isinstance(exc, runtime.JobSignal) else "a job signal"
        again = f"sciml sweep {config}" + (f" --out {out}" if out is not None else "")
        raise Preempted(f"stopped by {name}; the finished cells are kept: run `{again}` again to continue") from None
    rows = [[s["dataset"], s["model"], len(s["seeds"]), s["rel_l2_mean"], s["rel_l2_std"], s["n_parameters"],
             s["train_seconds_mean"]] for s in result["summary"]]
    table(["dataset", "model", "seeds", "rel L2 mean", "std over seeds", "parameters", "train s"], rows,
          title=f"sweep {result['out']}")
    print(f"ran {result['ran']} cells on {result['where']}, skipped {result['skipped']} finished earlier")
    print(f"wrote {result['csv']}, {result['markdown']}, {result['plot']}")
    if result["failed"]:
        cell, error = result["failed"][0]
        raise SciMLError(f"{len(result['failed'])} of {result['ran']} cells failed (first: {cell}: {error}); "
                         f"see {result['markdown']}, fix the cause and re-run to retry them")


def register(app: typer.Typer) -> None:
    app.command("sweep", no_args_is_help=True)(sweep)
