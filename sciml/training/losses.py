"""Training losses on decoded outputs ``(batch, channel, *spatial)``.

The relative L2 loss is FNO's ``LpLoss``: per sample ``||p - t||_2 / ||t||_2`` over all
channels and grid points (Li et al. 2021, ``utilities3.py``), averaged over the batch. The
relative H1 loss is the Sobolev norm of FNO's ``HsLoss`` (k=1, a=1) that MgNO trains Darcy with
(He, Liu, Xu, ICLR 2024): the relative L2 of the Fourier coefficients weighted by
``sqrt(1 + |k|^2)``, ``k`` the integer wavenumbers of the grid.
"""

from __future__ import annotations

from typing import Callable

import torch

from ..errors import ConfigError

LOSSES = ("rel_l2", "h1", "mse")


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


def _wavenumbers_squared(shape: tuple[int, ...], device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """``|k|^2`` on the FFT grid of ``shape``: integer wavenumbers ``0..n/2-1, -n/2..-1`` per axis."""
    total = torch.zeros((), device=device, dtype=dtype)
    for axis, n in enumerate(shape):
        k = torch.fft.fftfreq(n, d=1.0 / n, device=device, dtype=dtype)
        view = [1] * len(shape)
        view[axis] = n
        total = total + k.reshape(view) ** 2
    return total


def relative_h1(pred: torch.Tensor, true: torch.Tensor) -> torch.Tensor:
    """Per-sample relative H1 error ``||w F(p - t)|| / ||w F(t)||`` with ``w = sqrt(1 + |k|^2)``;
    shape ``(batch,)``.

    ``pred`` and ``true`` are ``(batch, channel, *spatial)``; the FFT runs over the spatial axes.
    By Parseval the ``1`` in ``w`` gives the L2 part and ``|k|^2`` the (periodic) gradient part.
    """
    if pred.shape != true.shape:
        raise ValueError(f"prediction shape {tuple(pred.shape)} != target shape {tuple(true.shape)}")
    if pred.ndim < 3:
        raise ValueError(f"h1 loss needs (batch, channel, *spatial) tensors, got shape {tuple(pred.shape)}")
    dims = tuple(range(2, pred.ndim))
    weight = torch.sqrt(1.0 + _wavenumbers_squared(tuple(pred.shape[2:]), pred.device, pred.real.dtype))
    b = pred.shape[0]
    diff = (torch.fft.fftn(pred - true, dim=dims) * weight).reshape(b, -1)
    ref = (torch.fft.fftn(true, dim=dims) * weight).reshape(b, -1)
    return torch.linalg.vector_norm(diff, dim=1) / torch.linalg.vector_norm(ref, dim=1)


def h1_loss(pred: torch.Tensor, true: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of the per-sample relative H1 error (see :func:`relative_h1`)."""
    return relative_h1(pred, true).mean()


def mse_loss(pred: torch.Tensor, true: torch.Tensor) -> torch.Tensor:
    """Mean squared error over every entry."""
    return torch.mean((pred - true) ** 2)


def get_loss(name: str) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """The loss function called ``name`` (one of :data:`LOSSES`)."""
    table = {"rel_l2": rel_l2_loss, "h1": h1_loss, "mse": mse_loss}
    if name not in table:
        raise ConfigError(f"unknown loss {name!r}; valid losses are: {', '.join(LOSSES)}")
    return table[name]
