"""Poisson's equation with random forcing on the unit square or cube (ConDiff convention).

``-Laplace u = f`` on ``(0, 1)^d`` (d = 2, 3), ``u = 0`` on the boundary, discretised by the
standard ``(2d+1)``-point Laplacian scaled by ``(n + 1)^2`` on the interior nodes
``x_i = (i + 1) / (n + 1)``, ``i = 0..n-1`` (Trifonov et al. 2024, ConDiff, arXiv 2406.04709;
their ``poisson_grid{64,128}`` sets). ``f`` is either a zero-Neumann GRF (same sampler as
Darcy, ``forcing="grf"``) or white noise ``N(0, 1)`` per node (``forcing="white_noise"``,
ConDiff's Poisson subset). Unlike ConDiff's Fortran-ordered vectors, fields are stored as
``(sample, x, y[, z])`` arrays.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

import numpy as np

from ..errors import ConfigError
from ..solvers import discretisation
from .generators import LinearGenerator, check_common, register
from .random_fields import check_forcing, random_forcing


@dataclasses.dataclass(frozen=True)
class PoissonConfig:
    """Poisson generator parameters.

    resolution : interior nodes per axis ``n`` (>= 1); ``h = 1 / (n + 1)``.
    subsample : stored stride along every axis.
    dim : 2 (square) or 3 (cube).
    forcing : ``"grf"`` (zero-Neumann GRF with ``alpha``, ``tau``) or ``"white_noise"``.
    alpha, tau : GRF parameters (2, 3).
    solver, tol : solve method (``sciml.solvers.available()``) and relative residual.
    """

    resolution: int = 64
    subsample: int = 1
    dim: int = 2
    forcing: Literal["grf", "white_noise"] = "grf"
    alpha: float = 2.0
    tau: float = 3.0
    solver: str = "auto"
    tol: float = 1e-10

    def __post_init__(self):
        check_common(self, min_resolution=1)
        if self.dim not in (2, 3):
            raise ConfigError(f"poisson dim must be 2 or 3, got {self.dim}")
        check_forcing("poisson", self.forcing, self.alpha, self.tau)
        if self.subsample > self.resolution:
            raise ConfigError(f"subsample {self.subsample} exceeds the {self.resolution} nodes per axis")


@register("poisson")
class Poisson(LinearGenerator):
    """Poisson with random forcing: inputs ``f``, outputs ``u``, both ``(n,) * dim``."""

    Config = PoissonConfig
    inputs = ("f",)
    outputs = ("u",)
    symmetric = True
    grid = "node, boundary excluded: x_i = (i + 1) / (n + 1), i = 0..n-1"

    def coords(self) -> dict[str, np.ndarray]:
        n = self.config.resolution
        x = np.arange(1, n + 1) / (n + 1)
        return {k: x.copy() for k in ("x", "y", "z")[: self.config.dim]}

    def unknown_shape(self) -> tuple[int, ...]:
        return (self.config.resolution,) * self.config.dim

    def draw_inputs(self, rng: np.random.Generator) -> dict[str, np.ndarray]:
        c = self.config
        shape = self.unknown_shape()
        return {"f": random_forcing(rng, shape, c.forcing, c.alpha, c.tau)}

    def assemble(self, inputs: dict[str, np.ndarray]):
        f = np.asarray(inputs["f"], dtype=np.float64)
        if f.shape != self.unknown_shape():
            raise ConfigError(f"poisson forcing must have shape {self.unknown_shape()}, got {f.shape}")
        return discretisation.laplacian(self.config.resolution, self.config.dim), f.reshape(-1)

    def method(self, A) -> str:
        # a constant diagonal makes Jacobi-PCG plain CG, which beat RS-AMG-PCG on the 3-D
        # Laplacian here at every size measured (0.13 vs 0.26 s at 40^3, 0.68 vs 1.24 s at
        # 64^3, tol 1e-10) and beat splu already at 6^3 (0.6 vs 0.7 ms)
        if self.config.solver == "auto" and self.config.dim == 3:
            return "pcg-jacobi"
        return super().method(A)

    def outputs_from(self, x: np.ndarray, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {"u": x.reshape(self.unknown_shape())}

