"""Evaluation: metrics, model-vs-classical-solver comparison, resolution transfer, figures, reports."""

from .evaluate import evaluate
from .metrics import relative_l2, summarise
from ..plots import plot_loss, plot_samples
from .plots import plot_dataset
from .report import write_report

__all__ = ["evaluate", "plot_dataset", "plot_loss", "plot_samples", "relative_l2", "summarise", "write_report"]
