"""The one place that imports DeepXDE (lazily, with its PyTorch backend and without its noise).

DeepXDE picks its backend at import time from ``DDE_BACKEND`` (else from ``~/.deepxde/config.json``,
which it may also write), prints a banner, and on a CUDA machine calls
``torch.set_default_device("cuda")`` for the whole process. Importing it through
:func:`load_deepxde` forces the PyTorch backend (so nothing is read from or written to the home
folder), swallows the banner and restores torch's default device and dtype. Every sciml module
that needs DeepXDE (DeepONet here, the PINN solver) goes through this module.
"""

from __future__ import annotations

import contextlib
import io
import os
from types import ModuleType

import torch

_MODULE: ModuleType | None = None


def load_deepxde() -> ModuleType:
    """The ``deepxde`` package (imported on first call, then cached)."""
    global _MODULE
    if _MODULE is None:
        # set, not setdefault: another backend left in the environment would break the networks
        os.environ["DDE_BACKEND"] = "pytorch"
        device, dtype = torch.get_default_device(), torch.get_default_dtype()
        sink = io.StringIO()
        try:
            with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
                import deepxde
                import deepxde.nn.pytorch  # noqa: F401
        finally:
            if torch.get_default_device() != device:
                # None drops the device mode entirely (a cpu mode would slow every torch call)
                torch.set_default_device(None if device.type == "cpu" else device)
            torch.set_default_dtype(dtype)
        _MODULE = deepxde
    return _MODULE


def deepxde_nn() -> ModuleType:
    """``deepxde.nn.pytorch``: DeepXDE's PyTorch networks (``FNN``, ``DeepONetCartesianProd``, ...)."""
    return load_deepxde().nn.pytorch
