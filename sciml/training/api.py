"""One training entry point for every trainable thing: :func:`train`.

Each kind of training registers a :class:`Trainer` (its options dataclass, the function that fits
it, the line that summarises a finished run): grid and point operators (``operator``, this
package), CORAL's two stages (``coral``, this package), and the learned solvers (``precond``,
``dcdm``, ``cgs``, registered by :mod:`sciml.learned`, found through the plugin entry points).

>>> from sciml import training
>>> training.train("fno", data="train.h5", out="runs/fno", epochs=50)
>>> training.train(sciml.operators.create("unet", in_channels=1, out_channels=1), data=..., out=...)
>>> training.train("mgno", task="precond", data="darcy.h5", out="runs/p")     # a preconditioner
>>> training.train("dcdm", pde="poisson3d", resolution=16, steps=1000, out="runs/d")

Options are the fields of the trainer's frozen dataclass; an unknown key is a ConfigError with
a did-you-mean. The vocabulary is shared: ``epochs`` is the number of passes over the training
data for every kind (CORAL: of each of its two stages; DCDM, which draws fresh vectors at every
step: ``epoch_vectors`` vectors, the paper's 20,000, per epoch; CGS: one update is one pass over
the graphs it holds), ``steps`` the number of optimiser steps where a kind counts them,
``batch_size``, ``lr``, ``seed``, ``device``, and ``model_config`` the architecture's keys.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Callable

from torch import nn

from .. import runs
from ..errors import CheckpointError, ConfigError, UnknownNameError
from ..registry import load_plugins
from . import coral, ddp, trainer
from .options import TrainOptions


@dataclasses.dataclass(frozen=True)
class Trainer:
    """A kind of training.

    fit: ``fit(model, data, out, options: dict, progress: bool, test_data) -> dict`` where ``model``
        is the name or built module given to :func:`train` (or None) and ``options`` the merged
        keyword options (the trainer validates them with its ``options`` dataclass).
    options: the frozen dataclass of its options (``dataclasses.fields`` lists the valid keys).
    summary: one line saying what a finished run holds and how to use it.
    needs_data: trains on a dataset file (``data=``); False for trainers of generated problems.
    data_parallel: may run under torchrun (DDP); resumable: ``resume=True`` continues a run.
    """

    kind: str
    fit: Callable[..., dict]
    options: type
    summary: Callable[[dict], str]
    needs_data: bool = True
    data_parallel: bool = False
    resumable: bool = False


_TRAINERS: dict[str, Trainer] = {}


def register_trainer(kind: str, options: type, summary: Callable[[dict], str], *, needs_data: bool = True,
                     data_parallel: bool = False, resumable: bool = False):
    """Decorator: register ``fit`` as the trainer of ``kind`` (see :class:`Trainer`)."""

    def deco(fit: Callable[..., dict]) -> Callable[..., dict]:
        _TRAINERS[kind] = Trainer(kind, fit, options, summary, needs_data, data_parallel, resumable)
        return fit

    return deco


def trainers() -> list[str]:
    """Kinds of training (``operator`` covers every model and preset of ``sciml models``)."""
    load_plugins()
    return sorted(_TRAINERS)


def trainer_for(model: str | nn.Module | None, task: str | None = None) -> Trainer:
    """The trainer of ``model`` (a kind, a model or preset name, or a built operator).

    ``task="precond"`` trains a grid operator as a Krylov preconditioner; a name that is not a
    kind of its own (``coral``, ``dcdm``, ``cgs``, ...) is an operator or preset name.
    """
    load_plugins()
    name = getattr(model, "name", None) if isinstance(model, nn.Module) else model
    if task == "precond":
        kind = "precond"
    elif name in _TRAINERS and name != "operator":
        kind = name
    else:
        kind = "operator"
    if kind not in _TRAINERS:
        raise UnknownNameError("kind of training", kind, list(_TRAINERS))
    return _TRAINERS[kind]


def train(model: str | nn.Module | None = None, *, data: str | Path | None = None, out: str | Path,
          resume: bool = False, test_data: str | Path | None = None, config: dict | None = None,
          progress: bool = True, **options: Any) -> dict:
    """Train ``model`` and write the run directory ``out``; returns a summary dict with ``kind``.

    ``model``: a model or preset name (``sciml models``), a module built by
    :func:`sciml.operators.create` (trained as given), or a kind of its own (``coral``, ``dcdm``,
    ``cgs``; ``task="precond"`` with a grid operator's name or module). ``config`` (e.g. a YAML
    mapping) is merged under ``options``. ``data``: the training dataset (``.h5``); the learned
    solvers ``dcdm`` and ``cgs`` draw their own problems instead. ``resume=True`` continues the
    run in ``out``. ``test_data`` is scored after every epoch (operators).
    """
    options = {**dict(config or {}), **options}
    progress = bool(options.pop("progress", progress))
    in_config = {key: options.pop(key, None) for key in ("data", "test_data")}  # paths a YAML config may name
    data = in_config["data"] if data is None else data
    test_data = in_config["test_data"] if test_data is None else test_data
    if out is None:
        raise ConfigError("no run directory given; pass out=PATH (--out runs/NAME), the directory to create")
    if resume:
        return _resume(model, out, data, test_data, options, progress)
    task = options.get("task")
    trainer = trainer_for(model if model is not None else options.get("model"), task)
    if task == "precond":
        options.pop("task")
    _check(trainer, data, test_data)
    result = trainer.fit(model, data, Path(out), options, progress, test_data)
    return {"kind": trainer.kind, **result}


def _check(trainer: Trainer, data, test_data) -> None:
    if ddp.env_world_size() > 1 and not trainer.data_parallel:
        raise ConfigError(f"{trainer.kind} training does not run data-parallel (WORLD_SIZE={ddp.env_world_size()}); "
                          "run it as one process, without torchrun or --nproc")
    if not trainer.needs_data and data is not None:
        raise ConfigError(f"{trainer.kind} trains on problems it generates itself; drop --data (see `sciml train --help`)")
    if test_data is not None and trainer.kind != "operator":
        raise ConfigError(f"--test-data is scored during operator training only; score a {trainer.kind} run with "
                          "`sciml evaluate` or `sciml solve` instead")


def _resume(model, out, data, test_data, options: dict, progress: bool) -> dict:
    try:
        kind = runs.kind(out)
    except CheckpointError:  # no run metadata yet: an operator run killed before its first checkpoint
        kind = "operator"
    trainer = trainer_for(kind if kind != "operator" else model)
    if not trainer.resumable:
        raise ConfigError(f"{out} is a {kind} run; its training cannot be resumed yet, train a new run with --out")
    _check(trainer, None, test_data)
    return {"kind": trainer.kind, **trainer.fit(model, data, Path(out), {**options, "resume": True}, progress, test_data)}


def summary_line(result: dict) -> str:
    """The one line that says what a finished training wrote (the CLI prints it)."""
    load_plugins()
    return _TRAINERS[result["kind"]].summary(result)


def data_parallel_check(model: str | None, options: dict, nproc: int) -> None:
    """Refuse ``--nproc`` for kinds that do not train data-parallel (before any process starts)."""
    from ..config import from_dict

    trainer = trainer_for(model if model is not None else options.get("model"), options.get("task"))
    if not trainer.data_parallel:
        raise ConfigError(f"--nproc {nproc}: {trainer.kind} training does not run data-parallel; data-parallel training "
                          "is for operators trained on --data (fno, deeponet, ...), drop --nproc")
    from_dict(trainer.options, options, f"{trainer.kind} training options")  # a bad key fails before any process starts


# ----------------------------------------------------------------------------- operators and CORAL


def _operator_summary(r: dict) -> str:
    test = f", test rel. L2 {r['test_loss']:.4g}" if r.get("test_loss") is not None else ""
    return f"run {r['run_dir']}: {r['epochs']} epochs, final train loss {r['train_loss']:.4g}{test}"


@register_trainer("operator", TrainOptions, _operator_summary, data_parallel=True, resumable=True)
def _fit_operator(model, data, out: Path, options: dict, progress: bool, test_data) -> dict:
    """Every registered model and preset: the trainer of :mod:`sciml.training.trainer`."""
    if options.pop("resume", False):
        return trainer.resume(out, data=data, test_data=test_data, progress=progress, **options)
    return trainer.train_operator(model, data=data, out=out, test_data=test_data, progress=progress, **options)


def _fmt(value) -> str:
    return "-" if value is None else format(value, ".4g")


def _coral_summary(r: dict) -> str:
    return (f"run {r['run_dir']}: coral, {r['inr_epochs']} + {r['processor_epochs']} epochs on {r['points']} points per "
            f"sample, {r['parameters']} parameters, field loss {_fmt(r['inr_loss'])}, processor loss "
            f"{_fmt(r['processor_loss'])}; score it with `sciml evaluate {r['run_dir']} --data test.h5 --points 0.2`")


@register_trainer("coral", coral.CoralTrainOptions, _coral_summary)
def _fit_coral(model, data, out: Path, options: dict, progress: bool, test_data) -> dict:
    """CORAL's two stages (:func:`sciml.training.coral.train_coral`); a built CORAL module is trained as given."""
    if data is None:
        raise ConfigError("--data is required: the training dataset (.h5), written by `sciml generate`")
    options.pop("model", None)
    return coral.train_coral(data, out, progress=progress, model=model if isinstance(model, nn.Module) else None,
                             **options)
