"""The one place that imports DeepXDE (lazily, with its PyTorch backend and without its noise).

DeepXDE picks its backend at import time from ``DDE_BACKEND`` (else from ``~/.deepxde/config.json``,
which it may also write), prints a banner, and on a CUDA machine calls
``torch.set_default_device("cuda")`` for the whole process. Importing it through :func:`deepxde_nn`
forces the PyTorch backend, swallows the banner and restores torch's default device and dtype.
"""

from __future__ import annotations

import contextlib
import io
import os
from types import ModuleType

import torch

_NN: ModuleType | None = None


def deepxde_nn() -> ModuleType:
    """``deepxde.nn.pytorch`` (imported on first call, then cached)."""
    global _NN
    if _NN is None:
        # set, not setdefault: another backend left in the environment would break the networks
        os.environ["DDE_BACKEND"] = "pytorch"
        device, dtype = torch.get_default_device(), torch.get_default_dtype()
        sink = io.StringIO()
        try:
            with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
                import deepxde.nn.pytorch as nn_pytorch
        finally:
            if torch.get_default_device() != device:
                # None drops the device mode entirely (a cpu mode would slow every torch call)
                torch.set_default_device(None if device.type == "cpu" else device)
            torch.set_default_dtype(dtype)
        _NN = nn_pytorch
    return _NN
