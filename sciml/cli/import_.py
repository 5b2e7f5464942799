"""``sciml import``: convert an FNO .mat, PDEBench, ConDiff, neuraloperator .pt or The Well file into a sciml dataset."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer


def import_(
    fmt: Annotated[str, typer.Argument(metavar="FORMAT", help="Source format: fno-mat, pdebench, condiff, neuralop or the-well.")] = "",
    file: Annotated[Optional[Path], typer.Argument(metavar="FILE", help="The file to convert.")] = None,
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Output dataset file (.h5).")] = None,
    n: Annotated[Optional[int], typer.Option("--n", help="Import only the first N samples.")] = None,
    key_in: Annotated[Optional[str], typer.Option("--key-in", help="fno-mat, neuralop: key of the input array (default coeff or a; neuralop: x).")] = None,
    key_out: Annotated[Optional[str], typer.Option("--key-out", help="fno-mat, neuralop: key of the output array (default sol or u; neuralop: y).")] = None,
    pde: Annotated[Optional[str], typer.Option("--pde", help="fno-mat, pdebench, neuralop, the-well: the pde name to record (default from the file).")] = None,
    subsample: Annotated[Optional[int], typer.Option("--subsample", help="fno-mat, pdebench: keep every r-th grid point (421 -> 85 for r=5).")] = None,
    time_axis: Annotated[Optional[str], typer.Option("--time-axis", help="neuralop: where an array's time axis is, after the samples: first, last or none (default: from the shapes).")] = None,
    fields: Annotated[Optional[str], typer.Option("--fields", help="the-well: fields to import, comma-separated (default all).")] = None,
    time: Annotated[Optional[str], typer.Option("--time", help="the-well: window of frames START:STOP (default all); the first is the input.")] = None,
    dtype: Annotated[Optional[str], typer.Option("--dtype", help="float32 or float64 (default: the source's precision).")] = None,
    allow_nonfinite: Annotated[bool, typer.Option("--allow-nonfinite", help="Import samples that hold NaN or Inf.")] = False,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing output file.")] = False,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
    list_: Annotated[bool, typer.Option("--list", help="List the formats and exit.")] = False,
) -> None:
    """Convert a dataset file of another project into the sciml format (axes in sciml order)."""
    from ..datasets import importers
    from ..errors import ConfigError

    if list_ or not fmt:
        print("formats: " + ", ".join(importers.available()))
        if not list_:
            raise ConfigError("name a format, e.g. `sciml import fno-mat piececonst_r421_N1024_smooth1.mat --out d.h5`")
        return
    if file is None:
        raise ConfigError(f"name the file to convert, e.g. `sciml import {fmt} FILE --out data.h5`")
    if out is None:
        raise ConfigError("--out is required: the dataset file to write, e.g. --out train.h5")
    path = importers.convert(
        fmt, file, out, n=n, dtype=dtype, allow_nonfinite=allow_nonfinite, overwrite=overwrite,
        progress=progress, key_in=key_in, key_out=key_out, pde=pde, subsample=subsample,
        time_axis=time_axis, fields=fields, time=time,
    )
    print(f"wrote {path} (see `sciml info {path}`)")


def register(app: typer.Typer) -> None:
    app.command("import", no_args_is_help=True)(import_)
