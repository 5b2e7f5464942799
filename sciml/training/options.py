"""Training options: one frozen dataclass, built from a YAML config merged under keyword options.

Defaults follow the FNO Darcy protocol (Li et al. 2021, ``fourier_2d.py``): Adam, lr 1e-3,
weight decay 1e-4, StepLR(100, 0.5), batch 20, relative L2 loss, pointwise Gaussian
normalisation of inputs and outputs fitted on the training set.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal, Optional, Union

from ..config import from_dict, to_dict
from ..errors import ConfigError
from .tracking import parse_loggers

# Options that may differ when a run is resumed (they do not change the numbers).
RUNTIME_KEYS = ("epochs", "device", "num_threads", "progress", "checkpoint_every", "figures", "workers", "cache_gb",
                "compile", "logger", "tracking_uri", "experiment")


@dataclass(frozen=True)
class TrainOptions:
    """Options of :func:`sciml.training.train`.

    epochs: total number of epochs (a resumed run continues up to it).
    batch_size, lr, weight_decay: minibatch size, learning rate, L2 weight decay. ``batch_size`` is
        the global batch: under torchrun (DDP) the ranks split each batch between them, so the
        numbers do not depend on the process count (see :mod:`sciml.training.ddp`).
    optimizer: ``adam`` (coupled weight decay, as FNO) or ``adamw``.
    scheduler: ``step`` (StepLR(step_size, gamma), stepped once per epoch), ``cosine``
        (cosine annealing to 0 over ``epochs``), ``onecycle`` (OneCycleLR stepped per epoch,
        peak ``lr``, start ``lr/2``, end ``lr/200``, 20% warm-up: MgNO's Darcy schedule) or ``none``.
    loss: ``rel_l2`` (mean per-sample relative L2), ``h1`` (relative H1, MgNO's Darcy loss) or
        ``mse``, on decoded outputs.
    normalise: ``pointwise`` | ``global`` | ``none`` (applied to inputs and outputs).
    n_train: use the first ``n_train`` samples of the training file (all when None).
    val_fraction: hold out this fraction of the training samples (the last ones) for validation.
    seed: seeds the model initialisation and the epoch shuffles.
    device: ``auto`` (CUDA when available), ``cpu`` or ``cuda``.
    model, model_config: registry name or preset, and config keys on top of it; channel counts
        and point-operator sizes are filled in from the data when not given.
    num_threads: torch CPU threads during training (unchanged when None).
    progress: show a progress bar on stderr.
    checkpoint_every: save the model and training state every this many epochs (and at the end).
    figures: draw the loss curve into the run directory at the end.
    cache_gb: hold the training (and test) samples in memory when their float32 tensors take at most
        this many GiB, else stream them from the file batch by batch (default: a quarter of the
        machine's memory, shared by its data-parallel processes). The result is the same either way.
    workers: loader processes reading batches ahead when streaming (default: a quarter of the CPUs, at
        most 4, and none on a machine of 2 CPUs or fewer; 0 reads in the training process).
    precision: ``fp32``, or ``bf16``/``fp16`` autocast for the model's forward pass (spectral
        transforms and the loss stay in float32; fp16 scales the loss on CUDA).
    compile: ``torch.compile`` the model (a clear error where it cannot).
    logger: experiment trackers, ``tensorboard`` and/or ``mlflow`` (a list or a comma list; none by
        default): per-epoch metrics, the config, final numbers and figures (:mod:`sciml.training.tracking`).
    tracking_uri, experiment: the MLflow store and experiment (default: ``MLFLOW_TRACKING_URI``, else
        the local file store ``RUN/mlruns``; ``MLFLOW_EXPERIMENT_NAME``, else ``sciml``).
    """

    epochs: int = 100
    batch_size: int = 20
    lr: float = 1e-3
    weight_decay: float = 1e-4
    optimizer: Literal["adam", "adamw"] = "adam"
    scheduler: Literal["step", "cosine", "onecycle", "none"] = "step"
    step_size: int = 100
    gamma: float = 0.5
    loss: Literal["rel_l2", "h1", "mse"] = "rel_l2"
    normalise: Literal["pointwise", "global", "none"] = "pointwise"
    n_train: Optional[int] = None
    val_fraction: float = 0.0
    seed: int = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"
    model: str = "fno"
    model_config: dict = field(default_factory=dict)
    num_threads: Optional[int] = None
    progress: bool = True
    checkpoint_every: int = 1
    figures: bool = True
    cache_gb: Optional[float] = None
    workers: Optional[int] = None
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    compile: bool = False
    logger: Union[tuple[str, ...], str] = ()
    tracking_uri: Optional[str] = None
    experiment: Optional[str] = None

    def __post_init__(self) -> None:
        def need(ok: bool, what: str, value: Any) -> None:
            if not ok:
                raise ConfigError(f"training option {what}, got {value!r}")

        need(isinstance(self.epochs, int) and self.epochs >= 1, "'epochs' must be an integer >= 1", self.epochs)
        need(isinstance(self.batch_size, int) and self.batch_size >= 1, "'batch_size' must be an integer >= 1", self.batch_size)
        need(self.lr > 0, "'lr' must be > 0", self.lr)
        need(self.weight_decay >= 0, "'weight_decay' must be >= 0", self.weight_decay)
        need(self.optimizer in ("adam", "adamw"), "'optimizer' must be one of ['adam', 'adamw']", self.optimizer)
        need(self.scheduler in ("step", "cosine", "onecycle", "none"),
             "'scheduler' must be one of ['step', 'cosine', 'onecycle', 'none']", self.scheduler)
        need(self.step_size >= 1, "'step_size' must be >= 1", self.step_size)
        need(self.gamma > 0, "'gamma' must be > 0", self.gamma)
        need(self.loss in ("rel_l2", "h1", "mse"), "'loss' must be one of ['rel_l2', 'h1', 'mse']", self.loss)
        need(self.normalise in ("pointwise", "global", "none"), "'normalise' must be one of ['pointwise', 'global', 'none']", self.normalise)
        need(self.n_train is None or self.n_train >= 2, "'n_train' must be >= 2 (or null for all samples)", self.n_train)
        need(0.0 <= self.val_fraction < 1.0, "'val_fraction' must be in [0, 1)", self.val_fraction)
        need(self.device in ("auto", "cpu", "cuda"), "'device' must be one of ['auto', 'cpu', 'cuda']", self.device)
        need(isinstance(self.model, str) and bool(self.model), "'model' must be a model or preset name", self.model)
        need(isinstance(self.model_config, dict), "'model_config' must be a mapping", self.model_config)
        need(self.num_threads is None or self.num_threads >= 1, "'num_threads' must be >= 1 (or null)", self.num_threads)
        need(self.checkpoint_every >= 1, "'checkpoint_every' must be >= 1", self.checkpoint_every)
        need(self.cache_gb is None or self.cache_gb >= 0, "'cache_gb' must be >= 0 (or null for automatic)", self.cache_gb)
        need(self.workers is None or (isinstance(self.workers, int) and self.workers >= 0),
             "'workers' must be an integer >= 0 (or null for automatic)", self.workers)
        need(self.precision in ("fp32", "bf16", "fp16"), "'precision' must be one of ['fp32', 'bf16', 'fp16']", self.precision)
        object.__setattr__(self, "logger", parse_loggers(self.logger))  # "tensorboard,mlflow" -> a tuple of known names

    def replace(self, **changes: Any) -> "TrainOptions":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        return to_dict(self)


def resolve_options(config: dict | None, options: dict) -> TrainOptions:
    """``options`` (keyword arguments) override ``config`` (e.g. a YAML mapping); unknown keys fail."""
    merged = {**dict(config or {}), **{k: v for k, v in options.items()}}
    return from_dict(TrainOptions, merged, where="training options")
