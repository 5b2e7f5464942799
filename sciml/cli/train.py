"""``sciml train``: fit a model, a preset or a learned solver; one call to :func:`sciml.training.train`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from ._common import parse_assignments


def train(
    ctx: typer.Context,
    model: Annotated[Optional[str], typer.Argument(help="Model or preset (see `sciml models`), or coral, dcdm, cgs.")] = None,
    data: Annotated[Optional[Path], typer.Option(help="Training dataset (.h5).")] = None,
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Run directory to create.")] = None,
    config: Annotated[Optional[Path], typer.Option(help="YAML file of training options; flags override it.")] = None,
    resume: Annotated[Optional[Path], typer.Option(help="Continue the interrupted run in this directory.")] = None,
    test_data: Annotated[Optional[Path], typer.Option(help="Test dataset, evaluated every epoch for the loss curve.")] = None,
    epochs: Annotated[Optional[int], typer.Option(help="Passes over the training data (coral: of each stage; dcdm: of "
                                                       "20,000 fresh vectors; cgs: updates).")] = None,
    batch_size: Annotated[Optional[int], typer.Option(help="Batch size (cgs: graphs per batch).")] = None,
    lr: Annotated[Optional[float], typer.Option(help="Learning rate.")] = None,
    n_train: Annotated[Optional[int], typer.Option(help="Use the first N samples of --data.")] = None,
    device: Annotated[Optional[str], typer.Option(help="auto, cpu or cuda.")] = None,
    seed: Annotated[Optional[int], typer.Option(help="Random seed.")] = None,
    set_: Annotated[
        Optional[list[str]], typer.Option("--set", help="Model config KEY=VALUE (repeatable), e.g. --set width=64 --set modes=[16,16].")
    ] = None,
    option: Annotated[Optional[list[str]], typer.Option("--option", help="Training option KEY=VALUE (repeatable).")] = None,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
    pde: Annotated[Optional[str], typer.Option(help="dcdm: the PDE whose matrices to learn (poisson, poisson3d, ...).")] = None,
    resolution: Annotated[Optional[int], typer.Option("--resolution", "-s", help="dcdm: grid points per dimension.")] = None,
    param: Annotated[Optional[list[str]], typer.Option("--param", "-p", help="dcdm: generator parameter KEY=VALUE; "
                                                                             "cgs: graph generator parameter.")] = None,
    steps: Annotated[Optional[int], typer.Option(help="dcdm/cgs: optimiser steps.")] = None,
    task: Annotated[Optional[str], typer.Option(help="precond: train a grid operator as a preconditioner; cgs: porenet or mdp.")] = None,
    points: Annotated[Optional[float], typer.Option(help="coral: fraction of each sample's grid points to train on (e.g. 0.2).")] = None,
    precision: Annotated[Optional[str], typer.Option(help="fp32 (default), bf16 or fp16: autocast the model's forward pass "
                                                          "(spectral transforms and the loss stay in float32).")] = None,
    compile_: Annotated[Optional[bool], typer.Option("--compile/--no-compile", help="torch.compile the model.")] = None,
    workers: Annotated[Optional[int], typer.Option(help="Loader processes when the data are streamed (default: a "
                                                        "quarter of the CPUs, at most 4; 0: read in this process).")] = None,
    cache_gb: Annotated[Optional[float], typer.Option(help="Hold the data in memory up to this many GiB, stream them "
                                                           "from the file beyond (default: a quarter of the memory).")] = None,
    logger: Annotated[Optional[list[str]], typer.Option(help="Experiment tracker: tensorboard or mlflow (repeatable or a "
                                                              "comma list; pip install 'sciml[tracking]'). Metrics per "
                                                              "epoch, config, final numbers, figures.")] = None,
    nproc: Annotated[int, typer.Option(help="Train data-parallel (DDP) on N processes of this machine through torchrun; "
                                            "--batch-size stays the global batch.")] = 1,
) -> None:
    """Train with the relative L2 loss, fitted normalisers, Adam and a scheduler; writes a run directory.

    `--task precond` trains a grid operator (fno, mgno, unet, ...) as the preconditioner of a Krylov
    solver on the matrices of a Darcy/ConDiff dataset: `sciml train fno --task precond --data darcy.h5
    --out runs/p`, then `sciml solve darcy -s 130 --method hints:runs/p,fcg:runs/p,pcg-amg`.
    Learned solvers train on generated problems instead of a dataset:
    `sciml train dcdm --pde poisson3d -s 32 --out runs/dcdm` and `sciml train cgs --task porenet --out runs/cgs`.
    Every flag is a training option; one that a kind does not take is an error naming the valid ones.

    `--nproc N` (or `torchrun --nproc_per_node N -m sciml train ...`) trains data-parallel: each
    process takes a share of every global batch of --batch-size samples, so the result does not
    depend on N; only rank 0 writes the run directory.
    """
    from .. import training
    from ..config import load_yaml
    from ..errors import ConfigError, SciMLError

    options = load_yaml(config) if config else {}
    flags = {"epochs": epochs, "batch_size": batch_size, "lr": lr, "n_train": n_train, "device": device, "seed": seed,
             "pde": pde, "resolution": resolution, "steps": steps, "task": task, "points": points,
             "precision": precision, "compile": compile_, "workers": workers, "cache_gb": cache_gb, "logger": logger}
    options.update({k: v for k, v in flags.items() if v is not None})
    options.update(parse_assignments(option, "--option"))
    if param:
        options["params"] = {**options.get("params", {}), **parse_assignments(param, "--param")}
    if set_:
        options["model_config"] = {**options.get("model_config", {}), **parse_assignments(set_, "--set")}
    kind = logger and training.trainer_for(model if model is not None else options.get("model"), options.get("task")).kind
    if kind and kind != "operator":
        raise ConfigError(f"--logger logs operator training (fno, unet, ... and their presets); {kind} training does "
                          "not send to TensorBoard/MLflow yet: drop --logger (the run's metrics.jsonl has its numbers)")
    ddp = training.ddp
    if nproc != 1:
        _check_nproc(nproc, device)
        training.data_parallel_check(model, options, nproc)
        raise typer.Exit(ddp.launch(_relaunch_args(ctx), nproc))
    from .. import runtime

    try:
        with runtime.job_signals("flag"):  # SIGTERM/SIGUSR1: the loop saves at the next batch and stops
            result = training.train(model, data=data, out=resume if resume is not None else out,
                                    resume=resume is not None, test_data=test_data, progress=progress, **options)
    except SciMLError as exc:
        # under torchrun every rank raises (see ddp.World.agree) and rank 0 reports it; the others
        # stay silent unless the error is theirs alone
        if ddp.env_rank() != 0 and not isinstance(exc, ddp.RankLocalError):
            raise typer.Exit(getattr(exc, "exit_code", 1)) from None
        raise
    if ddp.env_rank() == 0:
        print(training.summary_line(result))


def _check_nproc(nproc: int, device) -> None:
    """Refuse process counts that cannot train data-parallel here."""
    import torch

    from .. import runtime
    from ..errors import ConfigError
    from ..training import ddp

    if nproc < 1:
        raise ConfigError(f"--nproc must be a number of processes >= 1, got {nproc}")
    if ddp.env_world_size() > 1:
        raise ConfigError(f"--nproc {nproc} inside a torchrun launch (WORLD_SIZE={ddp.env_world_size()}); "
                          "drop --nproc, torchrun already started the processes")
    if device == "cuda" or (device in (None, "auto") and runtime.device("auto").type == "cuda"):
        gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if nproc > gpus:
            raise ConfigError(f"--nproc {nproc} needs one GPU per process but {gpus} GPU(s) are visible; "
                              f"use --nproc {max(gpus, 1)} or --device cpu")


def _relaunch_args(ctx: typer.Context) -> list[str]:
    """This `sciml train` command line without --nproc, rebuilt from the parsed parameters, for each process."""
    args = ["--debug"] if ctx.find_root().params.get("debug") else []
    args.append("train")
    for param in ctx.command.params:
        value = ctx.params.get(param.name)
        if param.name == "nproc" or value is None or value == param.default:
            continue
        if param.param_type_name == "argument":
            args.append(str(value))
        elif getattr(param, "is_flag", False):
            args.append(param.opts[0] if value else param.secondary_opts[0])
        else:
            for item in value if getattr(param, "multiple", False) else [value]:
                args += [param.opts[0], repr(item) if isinstance(item, float) else str(item)]
    return args


def register(app: typer.Typer) -> None:
    app.command("train", no_args_is_help=True)(train)
