"""``sciml plot``: pictures of a dataset's samples or a run's loss curve."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer


def plot(
    path: Annotated[Path, typer.Argument(help="A dataset file (.h5) or a run directory.")],
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="PNG to write (default next to the input).")] = None,
    n: Annotated[int, typer.Option(help="Number of samples to show.")] = 3,
    slice_: Annotated[Optional[str], typer.Option("--slice", help="3-D dataset: the plane to draw, AXIS=VALUE with "
                                                  "VALUE a coordinate (the nearest grid point), e.g. --slice z=0.5; "
                                                  "default the middle of the last axis. Titles name the plane.")] = None,
) -> None:
    """Dataset: input and output fields of the first samples (3-D: one plane, named in the titles).
    Run: the loss curves."""
    from .. import evaluation as plots
    from ..errors import ConfigError

    if path.is_dir():
        if slice_ is not None:
            raise ConfigError("--slice picks a plane of a 3-D dataset; a run directory is drawn as its loss curves")
        out = out or path / "loss.png"
        plots.plot_loss(path, out)
    else:
        out = out or path.with_suffix(".png")
        plots.plot_dataset(path, out, n=n, cut=slice_)
    print(f"wrote {out}")


def register(app: typer.Typer) -> None:
    app.command("plot", no_args_is_help=True)(plot)
