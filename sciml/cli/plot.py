"""``sciml plot``: pictures of a dataset's samples or a run's loss curve."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer


def plot(
    path: Annotated[Path, typer.Argument(help="A dataset file (.h5) or a run directory.")],
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="PNG to write (default next to the input).")] = None,
    n: Annotated[int, typer.Option(help="Number of samples to show.")] = 3,
) -> None:
    """Dataset: input and output fields of the first samples. Run: the loss curves."""
    from .. import evaluation as plots

    if path.is_dir():
        out = out or path / "loss.png"
        plots.plot_loss(path, out)
    else:
        out = out or path.with_suffix(".png")
        plots.plot_dataset(path, out, n=n)
    print(f"wrote {out}")


def register(app: typer.Typer) -> None:
    app.command("plot", no_args_is_help=True)(plot)
