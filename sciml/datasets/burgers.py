"""1-D viscous Burgers, FNO "R10" protocol (Li et al. 2021, arXiv 2010.08895).

``u_t + (u^2 / 2)_x = nu u_xx`` on the periodic ``[0, 1)``, ``nu = viscosity`` (0.1), mapping
``u0 -> u(., T)`` with ``T = final_time`` (1). ``u0 ~ N(0, sigma^2 (-Laplace + tau^2)^(-gamma))``
with ``sigma = 25, tau = 5, gamma = 2`` (i.e. ``625 (-Laplace + 25)^-2``), drawn as the random
trigonometric series of :func:`.random_fields.periodic_grf` (FNO's ``GRF1.m`` recipe).

Grid: ``s = resolution`` (8192) points ``x_j = j / s``, no duplicate endpoint; ``subsample = r``
stores ``[::r]`` (8192 -> 1024 with r = 8, as ``fourier_1d.py`` strides). Solver:
:func:`sciml.solvers.spectral.solve_burgers` (Fourier pseudo-spectral, 2/3 dealiasing,
integrating-factor Dormand-Prince 5(4) with adaptive steps to the relative local tolerance
``tol``). The per-sample ``residual`` stored in the file is the solver's estimate of the
relative time-integration error of ``u`` at ``T`` (sum of relative local error estimates;
measured to bound the true error, which is typically 10-100x smaller).

``trajectory = m > 0`` stores ``u`` as ``(sample, t, x)`` at the ``m + 1`` times
``t = linspace(0, T, m + 1)`` instead of ``u(T)`` alone.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from ..errors import ConfigError, DataError
from ..solvers.spectral import solve_burgers
from .generators import Generator, Solved, register
from .random_fields import periodic_grf


@dataclasses.dataclass(frozen=True)
class BurgersConfig:
    """Burgers generator parameters (defaults: FNO R10 protocol).

    resolution : solve grid points ``s`` (8192), ``x_j = j / s``; at least 8.
    subsample : stored stride ``r``; must divide ``s`` so the stored grid stays uniform.
    viscosity : ``nu`` (0.1).
    final_time : ``T`` (1).
    sigma, tau, gamma : initial-condition GRF (25, 5, 2).
    tol : relative local error per time step of the adaptive integrator (1e-8).
    trajectory : 0 stores ``u(T)``; ``m > 0`` stores ``m + 1`` equally spaced frames incl. 0 and T.
    """

    resolution: int = 8192
    subsample: int = 1
    viscosity: float = 0.1
    final_time: float = 1.0
    sigma: float = 25.0
    tau: float = 5.0
    gamma: float = 2.0
    tol: float = 1e-8
    trajectory: int = 0

    def __post_init__(self):
        if self.resolution < 8:
            raise ConfigError(f"burgers resolution must be at least 8 points, got {self.resolution}")
        if self.subsample < 1 or self.resolution % self.subsample:
            ok = [r for r in range(1, 17) if self.resolution % r == 0]
            raise ConfigError(
                f"subsample {self.subsample} must divide resolution {self.resolution} so the stored periodic grid "
                f"stays uniform; use one of {ok}"
            )
        for name in ("viscosity", "final_time", "sigma", "tau", "gamma"):
            value = getattr(self, name)
            if not (np.isfinite(value) and value > 0):
                raise ConfigError(f"burgers {name} must be a positive number, got {value}")
        if not 0 < self.tol < 1:
            raise ConfigError(f"burgers tol must lie in (0, 1), got {self.tol}")
        if self.trajectory < 0:
            raise ConfigError(f"trajectory must be 0 (final state only) or a number of frames >= 1, "
                              f"got {self.trajectory}")


@register("burgers")
class Burgers(Generator):
    """FNO Burgers: inputs ``u0`` (s,), outputs ``u`` (s,) or ``(trajectory + 1, s)``."""

    Config = BurgersConfig
    inputs = ("u0",)
    outputs = ("u",)
    grid = "periodic: x_j = j / s, j = 0..s-1 (no duplicate endpoint)"

    def coords(self) -> dict[str, np.ndarray]:
        return {"x": np.arange(self.config.resolution) / self.config.resolution}

    def times(self) -> np.ndarray:
        """Stored output times: ``[T]`` or ``linspace(0, T, trajectory + 1)``."""
        c = self.config
        return np.linspace(0.0, c.final_time, c.trajectory + 1) if c.trajectory else np.array([c.final_time])

    def variables(self) -> dict[str, tuple[str, ...]]:
        return {"u0": ("x",), "u": ("t", "x") if self.config.trajectory else ("x",)}

    def stored_coords(self) -> dict[str, np.ndarray]:
        spatial = super().stored_coords()
        return {"t": self.times(), **spatial} if self.config.trajectory else spatial

    def solver_attrs(self) -> dict[str, Any]:
        return {"name": "pseudo-spectral, 2/3 dealiasing, integrating-factor Dormand-Prince 5(4)",
                "tol": self.config.tol, "residual": "estimated relative time-integration error of u"}

    def draw_inputs(self, rng: np.random.Generator) -> dict[str, np.ndarray]:
        c = self.config
        return {"u0": periodic_grf(rng, c.resolution, c.sigma, c.tau, c.gamma)}

    def solve(self, inputs: dict[str, np.ndarray]) -> Solved:
        c = self.config
        u0 = np.asarray(inputs["u0"], dtype=np.float64)
        if u0.shape != (c.resolution,):
            raise ConfigError(f"burgers u0 must have shape ({c.resolution},), got {u0.shape}")
        result = solve_burgers(u0, c.viscosity, c.final_time, tol=c.tol, times=self.times())
        if not result.converged:
            raise DataError(
                f"burgers: the time integration took over {result.steps + result.rejected} steps before "
                f"t = {c.final_time}; raise tol or the viscosity"
            )
        u = result.u if c.trajectory else result.u[0]
        return Solved({"u": u}, result.error_estimate, "spectral-ifdp54")
