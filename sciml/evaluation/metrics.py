"""Error metrics on grid fields ``(batch, channel, *spatial)``.

The relative L2 error is the per-sample ``||pred - true||_2 / ||true||_2`` over every channel
and grid point (the metric of the FNO, LSM and MgNO papers, averaged over the test set).
"""

from __future__ import annotations

import numpy as np
import torch

from ..training.losses import relative_l2

__all__ = ["relative_l2", "summarise"]


def summarise(errors: torch.Tensor | np.ndarray) -> dict[str, float]:
    """Mean, (population) standard deviation, max, min and median of per-sample errors."""
    e = np.asarray(errors.detach().cpu() if isinstance(errors, torch.Tensor) else errors, dtype=np.float64).ravel()
    if e.size == 0:
        raise ValueError("no errors to summarise")
    return {
        "mean": float(e.mean()),
        "std": float(e.std()),
        "max": float(e.max()),
        "min": float(e.min()),
        "median": float(np.median(e)),
    }
