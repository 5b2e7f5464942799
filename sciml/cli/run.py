"""``sciml run``: a whole experiment from one YAML file (generate -> train -> evaluate -> report)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer


def run(
    config: Annotated[Path, typer.Argument(help="Experiment YAML, e.g. configs/quickstart.yaml.")],
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Override the config's output folder.")] = None,
) -> None:
    """Generate train/test data, train the model, evaluate it against the solver, write a report."""
    from .. import workflow

    result = workflow.run(config, out=out)
    print(f"test relative L2: {result['rel_l2']:.4f}  (report: {result['report']})")


def register(app: typer.Typer) -> None:
    app.command("run", no_args_is_help=True)(run)
