"""Training: the loop, losses, normalisers, safe checkpoints and resume.

``train(model_or_name, data=..., out=..., **options)`` writes a run directory (see
:mod:`sciml.training.checkpoint`); ``load_run(run_dir)`` rebuilds the model from it and
``predict(model, normaliser, x)`` applies it to raw inputs.
"""

from .checkpoint import RunInfo, load_run
from .data import DatasetSignature, GridData, load_grid_data
from .losses import relative_l2
from .normalisers import DataNormaliser, GlobalGaussian, Normaliser, UnitGaussian
from .options import TrainOptions
from .trainer import predict, resume, train

__all__ = [
    "DataNormaliser",
    "DatasetSignature",
    "GlobalGaussian",
    "GridData",
    "Normaliser",
    "RunInfo",
    "TrainOptions",
    "UnitGaussian",
    "load_grid_data",
    "load_run",
    "predict",
    "relative_l2",
    "resume",
    "train",
]
