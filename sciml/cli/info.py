"""``sciml info``: summarise a dataset file or a training run."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def info(
    path: Annotated[Path, typer.Argument(help="A dataset file (.h5) or a run directory.")],
    strict: Annotated[bool, typer.Option("--strict", help="Refuse a dataset holding NaN or Inf (exit 1) instead of flagging it.")] = False,
) -> None:
    """Print shapes, value ranges, generator parameters and solver residuals (or a run's summary).

    NaN/Inf values in a dataset are counted and flagged with the samples that hold them;
    ``--strict`` refuses such a file with exit code 1, as training and evaluation do.
    """
    if path.is_dir():
        from ..training.summary import run_summary

        print(run_summary(path))
        return
    from .. import datasets

    print(datasets.format_summary(datasets.summary(path, strict=strict)))


def register(app: typer.Typer) -> None:
    app.command("info", no_args_is_help=True)(info)
