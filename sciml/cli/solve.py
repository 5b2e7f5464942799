"""``sciml solve``: solve one PDE instance's linear system with one or several methods."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from ._common import parse_assignments


def solve(
    pde: Annotated[Optional[str], typer.Argument(help="Generator whose system to solve (darcy, poisson, ...).")] = None,
    resolution: Annotated[int, typer.Option("--resolution", "-s", help="Grid points per dimension.")] = 64,
    seed: Annotated[int, typer.Option(help="Seed of the random inputs.")] = 0,
    index: Annotated[int, typer.Option(help="Sample index (with --data: the stored sample).")] = 0,
    data: Annotated[Optional[Path], typer.Option(help="Take the system of a stored sample of this dataset.")] = None,
    method: Annotated[str, typer.Option(help="Comma-separated methods, e.g. pcg-amg,cg,direct; with a trained "
                                              "preconditioner RUN also hints:RUN, fcg:RUN, fgmres:RUN.")] = "pcg-amg,cg",
    tol: Annotated[float, typer.Option(help="Relative residual tolerance.")] = 1e-8,
    maxiter: Annotated[Optional[int], typer.Option(help="Iteration limit of iterative methods.")] = None,
    param: Annotated[Optional[list[str]], typer.Option("--param", "-p", help="Generator parameter KEY=VALUE.")] = None,
    plot: Annotated[Optional[Path], typer.Option(help="Save the residual histories to this PNG.")] = None,
) -> None:
    """Print iterations, final relative residual, setup and solve time for each method."""
    from .. import datasets, solvers
    from ..errors import ConfigError
    from ._common import table

    if data is not None:
        A, b, info = datasets.system_from_file(data, index)
    elif pde:
        A, b, info = datasets.system(pde, resolution=resolution, seed=seed, index=index, **parse_assignments(param, "--param"))
    else:
        raise ConfigError("name a PDE (e.g. `sciml solve darcy -s 128`) or pass --data FILE --index i")
    methods = [m.strip() for m in method.split(",") if m.strip()]
    results = [solvers.solve(A, b, method=m, tol=tol, maxiter=maxiter) for m in methods]
    rows = [[r.method, r.converged, r.iterations, float(r.residuals[-1]) if len(r.residuals) else float("nan"),
             r.setup_time, r.solve_time, r.total_time] for r in results]
    table(["method", "converged", "iterations", "rel. residual", "setup s", "solve s", "total s"], rows,
          title=f"{A.shape[0]} unknowns, tol {tol:g}")
    for r in results:
        for note in r.notes:
            print(f"{r.method}: {note}")
    if plot is not None:
        from ..evaluation.plots import plot_residuals

        plot_residuals(results, plot, title=f"{info.get('pde', pde)}: {A.shape[0]} unknowns")
        print(f"wrote {plot}")


def register(app: typer.Typer) -> None:
    app.command("solve", no_args_is_help=True)(solve)
