"""Darcy flow with a piecewise-constant coefficient, FNO protocol (Li et al. 2021, arXiv 2010.08895).

``-div(a grad u) = f`` on ``(0, 1)^2``, ``u = 0`` on the boundary, ``f = forcing`` (1).
``a = psi(g)`` with ``g ~ N(0, tau^(2 alpha - 2) (-Laplace + tau^2)^(-alpha))`` (zero-Neumann
Laplacian, :mod:`.random_fields`), ``psi = high`` (12) where ``g >= 0`` and ``low`` where
``g < 0``. ``low`` defaults to 3 as in the paper's text; the authors' MATLAB code
(``neuraloperator/neuraloperator:data_generation/darcy/demo.m``) uses 4, selectable here.

Grid: ``s = resolution`` nodes per axis, ``x_i = i / (s - 1)``, boundary included; ``a``
is sampled at the nodes, the conservative 5-point scheme of
:func:`sciml.solvers.discretisation.darcy_operator` acts on the ``(s-2)^2`` interior nodes
and ``u`` is stored on all nodes with its zero boundary. ``subsample = r`` stores
``[::r, ::r]`` (421 -> 211, 141, 106, 85 for r = 2..5, as ``fourier_2d.py`` strides).

Deliberately *not* reproduced: the FNO solver's spline re-interpolation of ``a`` from cell
centres to nodes and of ``u`` back (``solve_gwf.m``), which blurs the coefficient jumps
and leaves ``u`` non-zero on the boundary; here ``a`` is exactly two-valued and ``u`` is
the nodal solution.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from ..errors import ConfigError
from ..solvers import discretisation
from .generators import LinearGenerator, check_common, register
from .random_fields import neumann_grf, threshold


@dataclasses.dataclass(frozen=True)
class DarcyConfig:
    """Darcy generator parameters (defaults: FNO protocol at s = 85).

    resolution : nodes per axis ``s`` of the solve grid, boundary included (>= 3).
    subsample : stored stride ``r``; ``(s - 1)`` must be divisible by ``r``.
    alpha, tau : GRF smoothness and inverse length scale (2, 3).
    high, low : coefficient where the GRF is >= 0 / < 0 (12, 3; FNO code uses low = 4).
    forcing : constant right-hand side ``f`` (1).
    solver, tol : solve method (``sciml.solvers.available()``) and relative residual.
    """

    resolution: int = 85
    subsample: int = 1
    alpha: float = 2.0
    tau: float = 3.0
    high: float = 12.0
    low: float = 3.0
    forcing: float = 1.0
    solver: str = "auto"
    tol: float = 1e-10

    def __post_init__(self):
        check_common(self, min_resolution=3)
        if (self.resolution - 1) % self.subsample:
            ok = [r for r in range(1, self.resolution) if (self.resolution - 1) % r == 0][:8]
            raise ConfigError(
                f"subsample {self.subsample} does not divide resolution - 1 = {self.resolution - 1}, so the "
                f"strided grid would lose the x = 1 boundary; use one of {ok}"
            )
        if not (self.tau > 0 and self.alpha > 0):
            raise ConfigError(f"darcy needs tau > 0 and alpha > 0, got tau={self.tau}, alpha={self.alpha}")
        if not (self.low > 0 and self.high > 0):
            raise ConfigError(f"the coefficient values must be positive, got low={self.low}, high={self.high}")
        if not np.isfinite(self.forcing):
            raise ConfigError(f"forcing must be a finite number, got {self.forcing}")


@register("darcy")
class Darcy(LinearGenerator):
    """FNO Darcy flow: inputs ``a`` (s, s), outputs ``u`` (s, s), node grid with boundary."""

    Config = DarcyConfig
    inputs = ("a",)
    outputs = ("u",)
    symmetric = True
    grid = "node, boundary included"

    def coords(self) -> dict[str, np.ndarray]:
        x = np.linspace(0.0, 1.0, self.config.resolution)
        return {"x": x, "y": x.copy()}

    def unknown_shape(self) -> tuple[int, ...]:
        return (self.config.resolution - 2,) * 2

    def draw_inputs(self, rng: np.random.Generator) -> dict[str, np.ndarray]:
        c = self.config
        g = neumann_grf(rng, (c.resolution, c.resolution), c.alpha, c.tau)
        return {"a": threshold(g, c.low, c.high)}

    def assemble(self, inputs: dict[str, np.ndarray]):
        a = np.asarray(inputs["a"], dtype=np.float64)
        if a.shape != (self.config.resolution,) * 2:
            raise ConfigError(f"darcy coefficient must have shape {(self.config.resolution,) * 2}, got {a.shape}")
        A = discretisation.darcy_operator(a)
        return A, np.full(A.shape[0], self.config.forcing)

    def outputs_from(self, x: np.ndarray, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {"u": discretisation.pad_boundary(x.reshape(self.unknown_shape()))}
