"""``sciml train``: fit a model (or a preset) to a dataset."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from ._common import parse_assignments


def train(
    ctx: typer.Context,
    model: Annotated[Optional[str], typer.Argument(help="Model or preset name (see `sciml models`).")] = None,
    data: Annotated[Optional[Path], typer.Option(help="Training dataset (.h5).")] = None,
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Run directory to create.")] = None,
    config: Annotated[Optional[Path], typer.Option(help="YAML file of training options; flags override it.")] = None,
    resume: Annotated[Optional[Path], typer.Option(help="Continue the interrupted run in this directory.")] = None,
    test_data: Annotated[Optional[Path], typer.Option(help="Test dataset, evaluated every epoch for the loss curve.")] = None,
    epochs: Annotated[Optional[int], typer.Option(help="Number of epochs.")] = None,
    batch_size: Annotated[Optional[int], typer.Option(help="Batch size.")] = None,
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
    param: Annotated[Optional[list[str]], typer.Option("--param", "-p", help="dcdm: generator parameter KEY=VALUE.")] = None,
    steps: Annotated[Optional[int], typer.Option(help="dcdm/cgs: optimiser steps.")] = None,
    task: Annotated[Optional[str], typer.Option(help="precond: train a grid operator as a preconditioner; cgs: porenet or mdp.")] = None,
    points: Annotated[Optional[float], typer.Option(help="coral: fraction of each sample's grid points to train on (e.g. 0.2).")] = None,
    nproc: Annotated[int, typer.Option(help="Train data-parallel (DDP) on N processes of this machine through torchrun; "
                                            "--batch-size stays the global batch.")] = 1,
) -> None:
    """Train with the relative L2 loss, fitted normalisers, Adam and a scheduler; writes a run directory.

    `--task precond` trains a grid operator (fno, mgno, unet, ...) as the preconditioner of a Krylov
    solver on the matrices of a Darcy/ConDiff dataset: `sciml train fno --task precond --data darcy.h5
    --out runs/p`, then `sciml solve darcy -s 130 --method hints:runs/p,fcg:runs/p,pcg-amg`.
    Learned solvers train on generated problems instead of a dataset:
    `sciml train dcdm --pde poisson3d -s 32 --out runs/dcdm` and `sciml train cgs --task porenet --out runs/cgs`.

    `--nproc N` (or `torchrun --nproc_per_node N -m sciml train ...`) trains data-parallel: each
    process takes a share of every global batch of --batch-size samples, so the result does not
    depend on N; only rank 0 writes the run directory.
    """
    from .. import training
    from ..config import load_yaml
    from ..errors import ConfigError, SciMLError

    ddp = training.ddp
    if nproc != 1:
        _check_nproc(nproc, model=model, task=task, device=device)
        debug = bool(ctx.find_root().params.get("debug"))
        args = _relaunch_args(model, debug=debug, data=data, out=out, config=config, resume=resume, test_data=test_data,
                              epochs=epochs, batch_size=batch_size, lr=lr, n_train=n_train, device=device, seed=seed,
                              set_=set_, option=option, progress=progress,
                              rest={"--pde": pde, "--resolution": resolution, "--param": param, "--steps": steps,
                                    "--points": points})
        raise typer.Exit(ddp.launch(args, nproc))
    if ddp.env_world_size() > 1 and (task is not None or (model == "coral" and resume is None) or model in LEARNED_SOLVERS):
        what = f"--task {task}" if task is not None else model
        raise ConfigError(f"{what} does not train data-parallel (WORLD_SIZE={ddp.env_world_size()}); "
                          "run it as one process, without torchrun")
    if task == "precond":
        return _train_preconditioner(model, data=data, out=out, config=config, epochs=epochs, batch_size=batch_size,
                                     lr=lr, n_train=n_train, device=device, seed=seed, set_=set_, option=option,
                                     progress=progress, rest={"--resume": resume, "--test-data": test_data, "--pde": pde,
                                                              "--resolution": resolution, "--param": param, "--steps": steps})
    if model == "coral" and resume is None:
        return _train_coral(data=data, out=out, config=config, batch_size=batch_size, n_train=n_train, device=device,
                            seed=seed, set_=set_, option=option, progress=progress, points=points, epochs=epochs,
                            rest={"--test-data": test_data, "--pde": pde, "--resolution": resolution, "--param": param,
                                  "--steps": steps, "--task": task, "--lr": lr})
    if points is not None:
        raise ConfigError("--points is an option of coral (training on a random fraction of the grid points)")
    if model in LEARNED_SOLVERS:
        return _train_learned_solver(model, out=out, config=config, seed=seed, batch_size=batch_size, lr=lr,
                                     device=device, set_=set_, option=option, progress=progress, pde=pde,
                                     resolution=resolution, param=param, steps=steps, task=task)
    for flag, value in (("--pde", pde), ("--resolution", resolution), ("--param", param), ("--steps", steps), ("--task", task)):
        if value:
            raise ConfigError(f"{flag} is an option of the learned solvers ({', '.join(LEARNED_SOLVERS)}); operators train on --data")
    options = load_yaml(config) if config else {}
    flags = {"epochs": epochs, "batch_size": batch_size, "lr": lr, "n_train": n_train, "device": device, "seed": seed}
    options.update({k: v for k, v in flags.items() if v is not None})
    options.update(parse_assignments(option, "--option"))
    model_cfg = parse_assignments(set_, "--set")
    if model_cfg:
        options["model_config"] = {**options.get("model_config", {}), **model_cfg}
    if not progress:
        options["progress"] = False
    try:
        result = _train_operator(model, data=data, out=out, resume=resume, test_data=test_data, options=options)
    except SciMLError as exc:
        # under torchrun every rank raises (see ddp.World.agree) and rank 0 reports it; the others
        # stay silent unless the error is theirs alone
        if ddp.env_rank() != 0 and not isinstance(exc, ddp.RankLocalError):
            raise typer.Exit(1) from None
        raise
    if ddp.env_rank() != 0:
        return
    print(f"run {result['run_dir']}: {result['epochs']} epochs, final train loss {result['train_loss']:.4g}"
          + (f", test rel. L2 {result['test_loss']:.4g}" if result.get("test_loss") is not None else ""))


LEARNED_SOLVERS = ("dcdm", "cgs")


def _train_operator(model, *, data, out, resume, test_data, options: dict) -> dict:
    from .. import training
    from ..errors import ConfigError

    if resume is not None:
        return training.resume(resume, data=data, test_data=test_data, **options)
    model = model or options.pop("model", None)
    if model is None:
        raise ConfigError("name a model or preset (see `sciml models`), e.g. `sciml train fno --data train.h5 --out runs/x`")
    options.pop("model", None)
    if data is None:
        data = options.pop("data", None)
        if data is None:
            raise ConfigError("--data is required: the training dataset (.h5)")
    options.pop("data", None)
    if out is None:
        raise ConfigError("--out is required: the run directory to create, e.g. --out runs/x")
    return training.train(model, data=data, out=out, test_data=test_data, **options)


def _check_nproc(nproc: int, *, model, task, device) -> None:
    """Refuse ``--nproc`` values and combinations that cannot train data-parallel."""
    import torch

    from ..errors import ConfigError
    from ..training import ddp

    if nproc < 1:
        raise ConfigError(f"--nproc must be a number of processes >= 1, got {nproc}")
    if ddp.env_world_size() > 1:
        raise ConfigError(f"--nproc {nproc} inside a torchrun launch (WORLD_SIZE={ddp.env_world_size()}); "
                          "drop --nproc, torchrun already started the processes")
    if task is not None or model == "coral" or model in LEARNED_SOLVERS:
        what = f"--task {task}" if task is not None else model
        raise ConfigError(f"--nproc {nproc}: {what} does not train data-parallel; data-parallel training is for "
                          "operators trained on --data (fno, deeponet, ...), drop --nproc")
    if device == "cuda" or (device in (None, "auto") and torch.cuda.is_available()):
        gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if nproc > gpus:
            raise ConfigError(f"--nproc {nproc} needs one GPU per process but {gpus} GPU(s) are visible; "
                              f"use --nproc {max(gpus, 1)} or --device cpu")


def _relaunch_args(model, *, debug: bool, data, out, config, resume, test_data, epochs, batch_size, lr, n_train, device, seed,
                   set_, option, progress, rest: dict) -> list[str]:
    """The `sciml train` command line, without --nproc, that each torchrun process runs."""
    from ..errors import ConfigError

    for flag, value in rest.items():
        if value:
            raise ConfigError(f"{flag} does not apply to data-parallel training of an operator on --data; drop it or --nproc")
    args = ["--debug"] if debug else []
    args.append("train")
    if model:
        args.append(model)
    flags = {"--data": data, "--out": out, "--config": config, "--resume": resume, "--test-data": test_data,
             "--epochs": epochs, "--batch-size": batch_size, "--lr": lr, "--n-train": n_train, "--device": device,
             "--seed": seed}
    for flag, value in flags.items():
        if value is not None:
            args += [flag, repr(value) if isinstance(value, float) else str(value)]
    for item in set_ or []:
        args += ["--set", item]
    for item in option or []:
        args += ["--option", item]
    if not progress:
        args.append("--no-progress")
    return args


def _file_options(config, data, out, set_, option, flags: dict, data_help: str, out_example: str):
    """Options of a dataset-trained command: the YAML ``config`` under the flags and ``--option``s.

    Returns ``(options, data, model named in the YAML, model config from the YAML and --set)``;
    ``--data`` and ``--out`` are required.
    """
    from ..config import load_yaml
    from ..errors import ConfigError

    options = load_yaml(config) if config else {}
    options.pop("task", None)
    named = options.pop("model", None)
    data = data or options.get("data")
    options.pop("data", None)
    if data is None:
        raise ConfigError(f"--data is required: {data_help}")
    if out is None:
        raise ConfigError(f"--out is required: the run directory to create, e.g. --out {out_example}")
    model_cfg = {**options.pop("model_config", {}), **parse_assignments(set_, "--set")}
    options.update({k: v for k, v in flags.items() if v is not None})
    options.update(parse_assignments(option, "--option"))
    return options, data, named, model_cfg


def _train_coral(*, data, out, config, batch_size, n_train, device, seed, set_, option, progress, points, epochs,
                 rest) -> None:
    """``sciml train coral``: both CORAL stages (neural fields, then processor) in one command."""
    from ..errors import ConfigError
    from ..training.coral import train_coral

    for flag, value in rest.items():
        if value:
            hint = " (use --option lr_inr=... --option lr_processor=...)" if flag == "--lr" else ""
            raise ConfigError(f"{flag} is not an option of coral{hint}")
    if epochs is not None:
        raise ConfigError("coral trains in two stages: set --option inr_epochs=N --option processor_epochs=M instead of --epochs")
    flags = {"batch_size": batch_size, "n_train": n_train, "device": device, "seed": seed, "points": points}
    options, data, _, model_cfg = _file_options(config, data, out, set_, option, flags, "the training dataset (.h5)",
                                                "runs/coral")
    if model_cfg:
        options["model_config"] = model_cfg
    r = train_coral(data, out, progress=progress, **options)
    print(f"run {r['run_dir']}: coral, {r['inr_epochs']} + {r['processor_epochs']} epochs on {r['points']} points per "
          f"sample, {r['parameters']} parameters, field loss {r['inr_loss'] if r['inr_loss'] is None else format(r['inr_loss'], '.4g')}, "
          f"processor loss {r['processor_loss'] if r['processor_loss'] is None else format(r['processor_loss'], '.4g')}; "
          f"score it with `sciml evaluate {r['run_dir']} --data test.h5 --points 0.2`")


def _train_preconditioner(model, *, data, out, config, epochs, batch_size, lr, n_train, device, seed, set_, option,
                          progress, rest) -> None:
    """``sciml train MODEL --task precond``: a grid operator as a Krylov preconditioner."""
    from ..errors import ConfigError
    from ..learned.neural_precond import train_preconditioner

    for flag, value in rest.items():
        if value:
            raise ConfigError(f"{flag} is not an option of --task precond; it trains on the matrices of --data")
    flags = {"epochs": epochs, "batch_size": batch_size, "lr": lr, "n_train": n_train, "device": device, "seed": seed}
    options, data, named, net_cfg = _file_options(
        config, data, out, set_, option, flags,
        "a Darcy or ConDiff dataset (.h5) whose matrices the preconditioner learns", "runs/precond")
    model = model or named
    if model is None or model in LEARNED_SOLVERS:
        raise ConfigError("name the grid operator to train as a preconditioner, e.g. `sciml train fno --task precond --data darcy.h5 --out runs/p`")
    result = train_preconditioner(model, data, out, model_config=net_cfg, progress=progress, **options)
    val = f" (validation {result['val_loss']:.4g})" if result.get("val_loss") is not None else ""
    print(f"run {result['run_dir']}: {result['model']} preconditioner, {result['epochs']} epochs, "
          f"{result['parameters']} parameters, energy loss {result['train_loss']:.4g}{val}; use it with "
          f"`sciml solve --data FILE --method hints:{result['run_dir']},fcg:{result['run_dir']},pcg-amg`")


def _train_learned_solver(model, *, out, config, seed, batch_size, lr, device, set_, option, progress, pde,
                          resolution, param, steps, task) -> None:
    """``sciml train dcdm|cgs``: the learned iterative solvers, trained on generated problems."""
    from ..config import load_yaml
    from ..errors import ConfigError

    if out is None:
        raise ConfigError(f"--out is required: the run directory to create, e.g. --out runs/{model}")
    options = load_yaml(config) if config else {}
    net_cfg = {**options.pop("model_config", {}), **parse_assignments(set_, "--set")}
    flags = {"seed": seed, "batch_size": batch_size, "lr": lr, "device": device, "steps": steps}
    if model == "dcdm":
        if task:
            raise ConfigError("--task is an option of cgs; dcdm takes --pde")
        flags.update({"pde": pde, "resolution": resolution})
        if param:
            flags["params"] = {**options.get("params", {}), **parse_assignments(param, "--param")}
        options.update({k: v for k, v in flags.items() if v is not None})
        options.update(parse_assignments(option, "--option"))
        from ..learned.dcdm import train_dcdm

        result = train_dcdm(out, config=net_cfg, progress=progress, **options)
        print(f"run {result['run_dir']}: {result['steps']} steps, {result['parameters']} parameters, "
              f"final loss {result['train_loss']:.4g} (validation {result['val_loss']:.4g}); "
              f"use it with `sciml solve ... --method dcdm:{result['run_dir']}`")
        return
    if pde or resolution or param:
        raise ConfigError("--pde, --resolution and --param are options of dcdm; cgs takes --task porenet|mdp")
    if device:
        raise ConfigError("cgs trains on the CPU (its graphs are small); drop --device")
    from ..learned.cgs import train_cgs

    kwargs = {"updates": steps, "batch_graphs": batch_size, "lr": lr, "seed": seed}
    options.update({k: v for k, v in kwargs.items() if v is not None})
    options.update(parse_assignments(option, "--option"))
    task = task or options.pop("task", None)
    if task is None:
        raise ConfigError("--task is required for cgs: porenet (pore-network pressure) or mdp (graph value iteration)")
    result = train_cgs(task, out, progress=progress, model=net_cfg or None, **options)
    print(f"run {result['run_dir']}: cgs {result['task']}, {result['updates']} updates, {result['parameters']} parameters, "
          f"final loss {result['final_loss']:.4g}, {result['mean_forward_iterations']:.1f} fixed-point iterations; "
          f"score it with `sciml evaluate {result['run_dir']}`")


def register(app: typer.Typer) -> None:
    app.command("train", no_args_is_help=True)(train)
