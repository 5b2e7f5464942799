"""Training: the loop, losses, normalisers, safe checkpoints and resume.

``train(model_or_kind, data=..., out=..., **options)`` is the one entry point for every kind of
training (operators, CORAL, and the learned solvers that :mod:`sciml.learned` registers; see
:mod:`sciml.training.api`); it writes a run directory (see :mod:`sciml.runs`). ``load_run(run_dir)``
rebuilds an operator from it and ``predict(model, normaliser, x)`` applies it to raw inputs.
"""

from .checkpoint import RunInfo, load_run
from .data import DatasetSignature, GridData, load_grid_data
from .losses import relative_l2
from .normalisers import DataNormaliser, GlobalGaussian, Normaliser, UnitGaussian
from .options import TrainOptions
from .api import Trainer, data_parallel_check, register_trainer, summary_line, train, trainer_for, trainers
from .trainer import predict, resume

__all__ = [
    "DataNormaliser",
    "data_parallel_check",
    "DatasetSignature",
    "GlobalGaussian",
    "GridData",
    "Normaliser",
    "RunInfo",
    "TrainOptions",
    "Trainer",
    "UnitGaussian",
    "load_grid_data",
    "load_run",
    "predict",
    "register_trainer",
    "relative_l2",
    "resume",
    "summary_line",
    "train",
    "trainer_for",
    "trainers",
]
