"""Named presets: a model name plus a config, kept apart from the architectures.

A preset that a published number was measured with is frozen: change it only by adding a new
name (``tests/test_operators.py`` pins the paper presets). ``create(preset, **overrides)`` in
:mod:`sciml.operators` builds one with keywords on top.
"""

from __future__ import annotations

import copy
from typing import Any

from ..errors import UnknownNameError

_PRESETS: dict[str, tuple[str, dict[str, Any]]] = {
    # Li et al. 2021, Darcy s=85 (fourier_2d.py): modes 12, width 32, 4 layers, projection 128.
    "fno-darcy-paper": (
        "fno",
        {"in_channels": 1, "out_channels": 1, "modes": (12, 12), "width": 32, "n_layers": 4, "projection": 128,
         "add_grid": True, "padding": 0, "activation": "gelu"},
    ),
    # the current fourier_2d.py: the same network with 9 points of domain padding (non-periodic u)
    "fno-darcy-padded": (
        "fno",
        {"in_channels": 1, "out_channels": 1, "modes": (12, 12), "width": 32, "n_layers": 4, "projection": 128,
         "add_grid": True, "padding": 9, "activation": "gelu"},
    ),
    # Li et al. 2021, Burgers (fourier_1d.py): 1D, modes 16, width 64, 4 layers, projection 128.
    "fno-burgers-paper": (
        "fno",
        {"in_channels": 1, "out_channels": 1, "modes": (16,), "width": 64, "n_layers": 4, "projection": 128,
         "add_grid": True, "padding": 0, "activation": "gelu"},
    ),
    # Wu et al. 2023, Darcy s=85 (scripts/darcy_lsm.sh): d_model 64, 4 tokens, 12 basis functions, 8 heads,
    # patch 6x6, 5 scales; padding None pads 85 -> 96 (the paper's 11x11) and any other grid minimally, so a
    # model trained at 85 also runs at 43 or 211. Trained with Adam lr 5e-4, wd 1e-4, StepLR(100, 0.5), batch 20.
    "lsm-darcy-paper": (
        "lsm",
        {"in_channels": 1, "out_channels": 1, "d_model": 64, "num_token": 4, "num_basis": 12, "patch_size": (6, 6),
         "heads": 8, "padding": None, "n_scales": 5, "projection": 128},
    ),
    # Li et al. 2020, Darcy (graph-pde UAI1_full_resolution.py, trained on the full 61x61 grid at batch 1): width 64,
    # kernel width 1024, depth 6, radius 0.1, full kernel, ReLU, linear projection; 128 neighbours keep the whole
    # r = 0.1 ball up to s = 61. 5,259,649 parameters. At 85x85 it needs ~36 GB per sample (width^2 numbers per edge).
    "gno-darcy-paper": (
        "gno",
        {"in_channels": 1, "out_channels": 1, "coord_dim": 2, "width": 64, "kernel_width": 1024, "depth": 6,
         "radius": 0.1, "max_neighbors": 128, "kernel": "full", "activation": "relu", "projection": 0,
         "query_kernel": False},
    ),
    # He, Liu, Xu 2024, Darcy smooth 211x211 (README: MgNO_DC_smooth, 5 layers, 24 channels, --num_iteration
    # 10 10 10 10 10 20 = 6 levels, [1,0] smoothing per level and [2,0] on the coarsest: iterations None is that
    # schedule for any `levels`); zero padding (Dirichlet). Needs >= 32 points per axis. Trained with Adam lr 5e-4,
    # wd 1e-4, batch 8, 500 epochs, scheduler onecycle, loss h1.
    "mgno-darcy-paper": (
        "mgno",
        {"in_channels": 1, "out_channels": 1, "channels": 24, "n_layers": 5, "levels": 6, "iterations": None,
         "padding_mode": "zeros", "activation": "gelu", "normalisation": "none"},
    ),
    # U-Net baseline of the LSM Darcy table (0.0080 at s=85), as in thuml/Neural-Solver-Library (models/U_Net.py,
    # scripts/StandardBench/darcy/U_Net.sh: width 128, 4 down-samplings, bilinear up, BN + ReLU, zero padding to 96).
    # Our levels double the channels down to the coarsest one (138.0M parameters); theirs keeps the coarsest level at
    # the width above it and halves the decoder (69.3M): the same U-Net family, not the same parameter count.
    "unet-darcy": (
        "unet",
        {"in_channels": 1, "out_channels": 1, "depth": 4, "width": 128, "convs_per_level": 2, "bottleneck_convs": 0,
         "norm": "batch", "activation": "relu", "downsample": "maxpool", "upsample": "interp",
         "padding_mode": "zeros", "pad_mode": "zeros", "add_grid": True},
    ),
    # ConDiff notebooks' U-Net ("UNet for Poisson 2D.ipynb": 3 levels = 2 down-samplings, width 32, 4 convolutions per
    # level, GELU, no normalisation): 1,388,577 parameters against the notebook's 1,388,833 (its output conv is 3x3).
    "unet-condiff": (
        "unet",
        {"depth": 2, "width": 32, "convs_per_level": 4, "bottleneck_convs": 3, "norm": "none", "activation": "gelu",
         "downsample": "maxpool", "upsample": "transpose", "padding_mode": "zeros", "add_grid": False},
    ),
    # Darcy with an MLP branch on all grid values; trunk as in Lu et al. 2022 (4 x 128, ReLU).
    # n_sensors and channels come from the data.
    "deeponet-darcy": (
        "deeponet",
        {"coord_dim": 2, "branch": (128, 128, 128, 128), "trunk": (128, 128, 128, 128), "activation": "relu"},
    ),
    # Lu et al. 2021 (NMI), antiderivative: 100 sensors, branch [100, 40, 40], trunk [1, 40, 40], ReLU.
    "deeponet-antiderivative": (
        "deeponet",
        {"n_sensors": 100, "in_channels": 1, "out_channels": 1, "coord_dim": 1, "branch": (40, 40),
         "trunk": (40, 40), "activation": "relu", "initializer": "Glorot normal"},
    ),
}


def presets() -> list[str]:
    """Names of the presets."""
    return sorted(_PRESETS)


def resolve(name: str) -> tuple[str, dict[str, Any]]:
    """``(model name, config dict)`` of a preset; a registered model name gives ``(name, {})``."""
    from .base import available

    if name in _PRESETS:
        model, config = _PRESETS[name]
        return model, copy.deepcopy(config)
    models = available()
    if name in models:
        return name, {}
    raise UnknownNameError("model", name, models + presets())
