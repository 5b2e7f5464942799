"""Training losses on decoded outputs ``(batch, channel, *spatial)``.

The relative L2 loss is FNO's ``LpLoss``: per sample ``||p - t||_2 / ||t||_2`` over all
channels and grid points (Li et al. 2021, ``utilities3.py``), averaged over the batch.
"""

from __future__ import annotations

from typing import Callable

import torch

from ..errors import ConfigError

LOSSES = ("rel_l2", "mse")


def relative_l2(pred: torch.Tensor, true: torch.Tensor) -> torch.Tensor:
    """Per-sample relative L2 error ``||pred_i - true_i|| / ||true_i||``; shape ``(batch,)``.

    ``pred`` and ``true`` are ``(batch, ...)``; every non-batch axis is flattened.
    """
    if pred.shape != true.shape:
        raise ValueError(f"prediction shape {tuple(pred.shape)} != target shape {tuple(true.shape)}")
    b = pred.shape[0]
    diff = torch.linalg.vector_norm((pred - true).reshape(b, -1), dim=1)
    norm = torch.linalg.vector_norm(true.reshape(b, -1), dim=1)
    return diff / norm


def rel_l2_loss(pred: torch.Tensor, true: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of the per-sample relative L2 error (FNO ``LpLoss`` / batch size)."""
    return relative_l2(pred, true).mean()


def mse_loss(pred: torch.Tensor, true: torch.Tensor) -> torch.Tensor:
    """Mean squared error over every entry."""
    return torch.mean((pred - true) ** 2)


def get_loss(name: str) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """The loss function called ``name`` (one of :data:`LOSSES`)."""
    table = {"rel_l2": rel_l2_loss, "mse": mse_loss}
    if name not in table:
        raise ConfigError(f"unknown loss {name!r}; valid losses are: {', '.join(LOSSES)}")
    return table[name]
