"""``sciml generate``: make a PDE dataset with a classical solver."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from ._common import CLUSTER_CONFIG_HELP, CLUSTER_HELP, WORKERS_HELP, cluster_section, parse_assignments


def generate(
    pde: Annotated[str, typer.Argument(help="Generator name (see `sciml generate --list`): darcy, poisson, ...")] = "",
    n: Annotated[int, typer.Option("--n", help="Number of samples.")] = 100,
    resolution: Annotated[int, typer.Option("--resolution", "-s", help="Grid points per dimension of the solve.")] = 64,
    seed: Annotated[int, typer.Option(help="Random seed; sample i uses default_rng([seed, i]).")] = 0,
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Output file (.h5).")] = None,
    subsample: Annotated[int, typer.Option(help="Store every r-th grid point (421 -> 211/141/106/85 for r=2/3/4/5).")] = 1,
    param: Annotated[Optional[list[str]], typer.Option("--param", "-p", help="Generator parameter KEY=VALUE (repeatable), e.g. -p low=4.")] = None,
    config: Annotated[Optional[Path], typer.Option(help="YAML file of generator parameters; -p overrides it.")] = None,
    dtype: Annotated[str, typer.Option(help="Storage dtype: float32 or float64.")] = "float32",
    overwrite: Annotated[bool, typer.Option(help="Replace an existing output file (and discard an unfinished OUT.partial).")] = False,
    resume: Annotated[bool, typer.Option(help="Continue an interrupted generation from OUT.partial (same settings).")] = False,
    cluster: Annotated[Optional[str], typer.Option("--cluster", help=CLUSTER_HELP)] = None,
    workers: Annotated[Optional[int], typer.Option("--workers", "-w", help=WORKERS_HELP)] = None,
    cluster_config: Annotated[Optional[Path], typer.Option("--cluster-config", help=CLUSTER_CONFIG_HELP)] = None,
    scheduler: Annotated[Optional[str], typer.Option(help="Same as --cluster ADDRESS: solve on the workers of a running Dask scheduler, e.g. tcp://10.0.0.1:8786.")] = None,
    device: Annotated[Optional[str], typer.Option(help="Solve batches of samples with multigrid-PCG (pcg-mg) on this torch device: cpu, cuda or auto. Inputs stay bitwise those of a run without it. Linear generators only.")] = None,
    batch: Annotated[Optional[int], typer.Option(help="Samples per batched solve with --device (default: about 1M unknowns per batch on a CPU, 16M on a GPU).")] = None,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
    list_: Annotated[bool, typer.Option("--list", help="List the generators and exit.")] = False,
) -> None:
    """Generate a dataset: inputs drawn at random, outputs from a classical solver."""
    from .. import datasets
    from ..config import load_yaml
    from ..errors import ConfigError, DataError

    if list_ or not pde:
        print("generators: " + ", ".join(datasets.available()))
        if not list_:
            raise ConfigError("name a generator, e.g. `sciml generate darcy --n 8 --resolution 32 --out d.h5`")
        return
    if out is None:
        raise ConfigError("--out is required: the dataset file to write, e.g. --out train.h5")
    partial = out.with_name(out.name + ".partial")
    if dtype not in ("float32", "float64"):
        raise ConfigError(f"--dtype must be float32 or float64, got {dtype!r}")
    params = load_yaml(config) if config else {}
    params.update(parse_assignments(param, "--param"))
    if out.exists() and not overwrite:
        if resume and not partial.exists():   # a requeued job whose generation had finished: not an error
            differs = _settings_differ(out, pde, n, seed, dtype, resolution, subsample, params)
            if differs:
                raise DataError(f"{out} is a finished generation with other settings ({differs}); choose another "
                                "--out or pass --overwrite")
            print(f"{out} is complete: all {n} samples of this generation are done, nothing to resume")
            print(datasets.format_summary(datasets.summary(out)))
            return
        raise DataError(f"{out} exists; choose another --out or pass --overwrite")
    from .. import runtime
    from ..errors import PREEMPTED_EXIT

    try:
        with runtime.job_signals("raise"):  # SIGTERM/SIGUSR1 stop it as Ctrl-C does: finished samples are kept
            path = datasets.generate(
                pde, n=n, resolution=resolution, seed=seed, out=out, subsample=subsample, progress=progress,
                dtype=dtype, resume=resume, workers=workers, scheduler=scheduler, cluster=cluster,
                cluster_settings=cluster_section(cluster_config), overwrite=overwrite, device=device, batch=batch,
                **params,
            )
    except KeyboardInterrupt as exc:  # the library's message says how many samples are safe
        signalled = getattr(exc, "signal", None)
        if signalled:  # a batch system's signal: exit as a preempted job, with how to continue
            sys.stderr.write(f"stopped by {signalled}; {exc}\n")
            raise typer.Exit(PREEMPTED_EXIT) from None
        sys.stderr.write(f"{exc or 'interrupted'}\n")
        raise typer.Exit(130) from None
    print(f"wrote {path}")
    print(datasets.format_summary(datasets.summary(path)))


def _settings_differ(out: Path, pde: str, n: int, seed: int, dtype: str, resolution: int, subsample: int,
                     params: dict) -> str:
    """How the finished file ``out`` differs from what these settings would generate ("" if not):
    generator, sample count, seed, storage dtype and the full generator config."""
    import json

    from .. import datasets
    from ..config import to_dict
    from ..datasets.format import attrs_json

    gen = datasets.create(pde, resolution=resolution, subsample=subsample, **params)
    want = {"pde": pde, "n": n, "seed": seed, "dtype": dtype, **json.loads(json.dumps(to_dict(gen.config)))}
    ds = datasets.open(out, check_finite=False)
    try:
        have = {"pde": str(ds.attrs["pde"]), "n": int(ds.sizes["sample"]), "seed": int(ds.attrs["seed"]),
                "dtype": str(ds[gen.outputs[0]].dtype), **attrs_json(ds, "params")}
    finally:
        ds.close()
    keys = ["pde"] if have["pde"] != pde else list(want | have)   # another generator: its config keys differ anyway
    return "; ".join(f"{k} {have.get(k)!r} there, {want.get(k)!r} now" for k in keys if have.get(k) != want.get(k))


def register(app: typer.Typer) -> None:
    app.command("generate", no_args_is_help=True)(generate)
