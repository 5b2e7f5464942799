"""``sciml evaluate``: errors of a trained model and its speed against the classical solver."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer


def evaluate(
    run: Annotated[Path, typer.Argument(help="Run directory written by `sciml train`.")],
    data: Annotated[list[Path], typer.Option(help="Test dataset(s); repeat for several resolutions.")],
    out: Annotated[Optional[Path], typer.Option(help="JSON file for the results (default RUN/eval.json).")] = None,
    solver_samples: Annotated[int, typer.Option(help="Samples re-solved to time the classical solver.")] = 10,
) -> None:
    """Relative L2 error (mean, std, max), inference and classical-solver time per sample, speed-up."""
    from .. import evaluation
    from ._common import table

    result = evaluation.evaluate(run, data=data, out=out, n_solver_samples=solver_samples)
    rows = []
    for r in result["datasets"]:
        if "error" in r:
            rows.append([Path(r["path"]).name, "-", "not evaluated (see below)", *[None] * 6])
            continue
        rows.append([
            Path(r["path"]).name, r["resolution"], r["n"], r["rel_l2_mean"], r["rel_l2_std"], r["rel_l2_max"],
            r["model_s_per_sample"], r["solver_s_per_sample"], r["speedup"],
        ])
    table(["dataset", "grid", "n", "rel L2 mean", "std", "max", "model s/sample", "solver s/sample", "speed-up"], rows,
          title=f"evaluation of {run}")
    for r in result["datasets"]:
        if "error" in r:
            print(f"{Path(r['path']).name} not evaluated: {r['error']}")
    print(f"wrote {result['out']}")


def register(app: typer.Typer) -> None:
    app.command("evaluate", no_args_is_help=True)(evaluate)
