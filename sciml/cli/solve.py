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
    method: Annotated[str, typer.Option(help="Comma-separated methods, e.g. pcg-mg,pcg-amg,cg,direct; with a trained "
                                              "preconditioner RUN also hints:RUN, fcg:RUN, fgmres:RUN; with a DCDM run dcdm:RUN, dcdm-mg:RUN; with --problem "
                                              "gp, gp-stm, pinn. Default pcg-amg,cg (with --problem: gp).")] = None,
    tol: Annotated[float, typer.Option(help="Relative residual tolerance.")] = 1e-8,
    maxiter: Annotated[Optional[int], typer.Option(help="Iteration limit of iterative methods.")] = None,
    device: Annotated[Optional[str], typer.Option(help="Where pcg-mg and pcg-amg run their cycle: cpu, cuda or auto "
                                                       "(default cpu; pcg-amg on cpu is pyamg's own cycle).")] = None,
    param: Annotated[Optional[list[str]], typer.Option("--param", "-p", help="Generator parameter KEY=VALUE.")] = None,
    plot: Annotated[Optional[Path], typer.Option(help="Save the residual histories (mesh-free: the solutions) to this PNG.")] = None,
    problem: Annotated[Optional[str], typer.Option(help="Mesh-free test problem for --method gp,gp-stm,pinn (e.g. poisson1d-sin100; `--problem list` lists them).")] = None,
    iterations: Annotated[Optional[int], typer.Option(help="Mesh-free methods: optimiser steps (default: the paper's); "
                                                           "gp and gp-stm stop earlier once the loss has converged (--gp-tol).")] = None,
    gp_tol: Annotated[Optional[float], typer.Option(help="gp, gp-stm: stop once the loss changed by less than this "
                                                         "(relative) over the last 100 steps (default 5e-2); 0 runs "
                                                         "every step of --iterations (the paper's fixed budget).")] = None,
    n_col: Annotated[Optional[int], typer.Option(help="Mesh-free methods: collocation points per dimension (default: the paper's).")] = None,
    lr: Annotated[Optional[float], typer.Option(help="Mesh-free methods: Adam learning rate (default: the paper's, GP-HM 1e-2, PINN 1e-3).")] = None,
) -> None:
    """Print iterations, final relative residual, setup and solve time for each method.

    Mesh-free solvers work on the GP-HM test problems instead of a generator's matrix:
    `sciml solve --problem poisson1d-sin100 --method gp,gp-stm,pinn --iterations 2000`.
    """
    from .. import datasets, meshfree, solvers
    from ..errors import ConfigError
    from ._common import table

    if problem == "list":
        return _solve_meshfree(problem, [], None, None, None, None)
    method = method or ("gp" if problem is not None else "pcg-amg,cg")
    methods = [m.strip() for m in method.split(",") if m.strip()]
    free = [m for m in methods if m in meshfree.available()]
    if problem is not None or free:
        if len(free) != len(methods) or problem is None:
            raise ConfigError(f"the mesh-free methods ({', '.join(meshfree.available())}) solve a test problem: pass "
                              "--problem NAME and only those methods (see `sciml solve --problem list`)")
        if gp_tol is not None and not any(m.startswith("gp") for m in methods):
            raise ConfigError("--gp-tol is an option of the methods gp and gp-stm; PINN runs --iterations steps")
        return _solve_meshfree(problem, methods, iterations, n_col, plot, lr, gp_tol)
    if iterations is not None or n_col is not None or gp_tol is not None:
        raise ConfigError("--iterations, --n-col and --gp-tol are options of the mesh-free methods (gp, gp-stm, pinn); "
                          "use --maxiter")
    if data is not None:
        A, b, info = datasets.system_from_file(data, index)
    elif pde:
        A, b, info = datasets.system(pde, resolution=resolution, seed=seed, index=index, **parse_assignments(param, "--param"))
    else:
        raise ConfigError("name a PDE (e.g. `sciml solve darcy -s 128`) or pass --data FILE --index i")
    results = [solvers.solve(A, b, method=m, tol=tol, maxiter=maxiter, device=device) for m in methods]
    rows = [[r.method, r.converged, r.iterations, float(r.residuals[-1]) if len(r.residuals) else float("nan"),
             r.setup_time, r.solve_time, r.total_time] for r in results]
    table(["method", "converged", "iterations", "rel. residual", "setup s", "solve s", "total s"], rows,
          title=f"{A.shape[0]} unknowns, tol {tol:g}")
    for r in results:
        for note in r.notes:
            print(f"{r.method}: {note}")
    if plot is not None:
        from ..plots import plot_residuals

        plot_residuals(results, plot, title=f"{info.get('pde', pde)}: {A.shape[0]} unknowns")
        print(f"wrote {plot}")


def _solve_meshfree(name: str, methods: list[str], iterations, n_col, plot, lr, gp_tol=None) -> None:
    """GP-HM (Gaussian and Student-t spectral mixtures) and the DeepXDE PINN on a test problem."""
    from .. import meshfree
    from ._common import table

    if name == "list":
        table(["problem", "what", "collocation / dim", "paper's steps"],
              [[p.name, p.description, p.n_col, p.iterations] for p in meshfree.PROBLEMS.values()],
              title="mesh-free test problems")
        return
    problem = meshfree.get_problem(name)
    curves = [(meshfree.label(m), meshfree.solve(problem, m, iterations=iterations, n_col=n_col, lr=lr,
                                                 **({"loss_tol": gp_tol} if m.startswith("gp") else {})))
              for m in methods]
    table(["method", "steps", "rel. L2 (final)", "rel. L2 (min seen)", "seconds"],
          [[label, r.iterations, r.rel_l2, r.min_rel_l2, r.seconds] for label, r in curves],
          title=f"{problem.name}: {problem.description}")
    for label, r in curves:
        if getattr(r, "stopped", ""):
            print(f"{label}: {r.stopped} (--gp-tol 0 runs all {problem.iterations if iterations is None else iterations})")
    if plot is not None:
        from ..plots import plot_meshfree

        plot_meshfree(problem, curves, plot)
        print(f"wrote {plot}")


def register(app: typer.Typer) -> None:
    app.command("solve", no_args_is_help=True)(solve)
