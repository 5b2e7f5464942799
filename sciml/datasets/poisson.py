"""Poisson's equation with random forcing on the unit square or cube (ConDiff convention).

``-Laplace u = f`` on ``(0, 1)^d`` (d = 2, 3), ``u = 0`` on the boundary, discretised by the
standard ``(2d+1)``-point Laplacian scaled by ``(n + 1)^2`` on the interior nodes
``x_i = (i + 1) / (n + 1)``, ``i = 0..n-1`` (Trifonov et al. 2024, ConDiff, arXiv 2406.04709;
their ``poisson_grid{64,128}`` sets). ``f`` is either a zero-Neumann GRF (same sampler as
Darcy, ``forcing="grf"``) or white noise ``N(0, 1)`` per node (``forcing="white_noise"``,
ConDiff's Poisson subset). Unlike ConDiff's Fortran-ordered vectors, fields are stored as
``(sample, x, y[, z])`` arrays.

Non-rectangular 2-D domains (``domain``, ``dim = 2`` only): the same node grid, with the
nodes outside the domain (or on its boundary) fixed at ``u = 0``, so ``u = 0`` on the whole
boundary of the domain, the cut and hole boundaries included (Dirichlet, staircased to the
grid):

* ``"lshape"``: ``(0, 1)^2`` minus the quadrant ``[0.5, 1] x [0.5, 1]`` (the L-shaped domain
  with its re-entrant corner at ``(0.5, 0.5)``); for ``n + 1`` even the cut lies on grid lines
  and the scheme stays second order for smooth ``u``.
* ``"holes"``: ``(0, 1)^2`` minus the closed discs of :data:`HOLES` (fixed: the same geometry
  for every sample and resolution); the circles are staircased, so the boundary error there is
  first order in ``h``.

Such samples carry ``mask`` (``(x, y)``, one of the ``inputs``, as in ``poisson3d``): 1 at the
nodes outside the domain (``u = 0`` there), 0 inside; ``f`` and ``u`` are zero where
``mask = 1``. The matrix is :func:`domain_laplacian`. ``domain = "square"`` (default) stores
no mask and assembles :func:`sciml.solvers.discretisation.laplacian` as before.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

import numpy as np
import scipy.sparse as sp

from ..errors import ConfigError
from ..solvers import discretisation
from .generators import LinearGenerator, check_common, register
from .random_fields import check_forcing, random_forcing

DOMAINS = ("square", "lshape", "holes")

#: the fixed holes of ``domain = "holes"``: ``(centre x, centre y, radius)``; pairwise apart
#: and clear of the outer boundary (removed area ``pi * (0.12^2 + 0.1^2 + 0.15^2) = 0.1472``)
HOLES = ((0.25, 0.25, 0.12), (0.75, 0.3, 0.10), (0.5, 0.7, 0.15))


def outside_mask(domain: str, x: np.ndarray) -> np.ndarray:
    """Boolean ``(len(x), len(x))``: the nodes ``(x_i, x_j)`` outside ``domain`` or on its boundary.

    ``"lshape"``: ``x >= 0.5 and y >= 0.5``; ``"holes"``: inside or on a circle of :data:`HOLES`;
    ``"square"``: none (the outer boundary is not on the interior grid).
    """
    X, Y = np.meshgrid(x, x, indexing="ij")
    if domain == "square":
        return np.zeros(X.shape, dtype=bool)
    if domain == "lshape":
        eps = 1e-12  # nodes on the cut (x or y = 0.5 exactly) are boundary nodes
        return (X >= 0.5 - eps) & (Y >= 0.5 - eps)
    if domain == "holes":
        out = np.zeros(X.shape, dtype=bool)
        for cx, cy, r in HOLES:
            out |= (X - cx) ** 2 + (Y - cy) ** 2 <= r**2
        return out
    raise ConfigError(f"unknown poisson domain {domain!r}; use one of {', '.join(DOMAINS)}")


def domain_laplacian(outside: np.ndarray) -> sp.csr_matrix:
    """5-point ``-Laplace`` with ``u = 0`` at the ``outside`` nodes (Dirichlet), ``(n + 1)^2`` scaled.

    An inside row is the row of :func:`sciml.solvers.discretisation.laplacian` without its
    couplings to outside nodes (their value is the Dirichlet 0; the diagonal keeps
    ``4 / h^2``); an outside row is the decoupled ``(4 / h^2) u = 0``, as the solid rows of
    :func:`~sciml.solvers.discretisation.masked_laplacian` (which instead has *no flux* into
    solids). Symmetric positive definite for any mask (a principal block of the SPD Laplacian
    plus a positive diagonal). With no outside node this is ``laplacian(n, dim)``.
    """
    outside = np.asarray(outside, dtype=bool)
    n, dim = outside.shape[0], outside.ndim
    L = discretisation.laplacian(n, dim)
    keep = sp.diags((~outside).reshape(-1).astype(np.float64))
    decoupled = sp.diags(outside.reshape(-1) * (2.0 * dim * (n + 1) ** 2))
    A = (keep @ L @ keep + decoupled).tocsr()
    A.eliminate_zeros()
    return A


@dataclasses.dataclass(frozen=True)
class PoissonConfig:
    """Poisson generator parameters.

    resolution : interior nodes per axis ``n`` (>= 1); ``h = 1 / (n + 1)``.
    subsample : stored stride along every axis.
    dim : 2 (square) or 3 (cube).
    domain : ``"square"`` (default), ``"lshape"`` or ``"holes"`` (2-D only; see the module notes):
        ``u = 0`` on the whole domain boundary; non-square domains store ``mask`` (1 outside).
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
    domain: Literal["square", "lshape", "holes"] = "square"

    def __post_init__(self):
        check_common(self, min_resolution=1)
        if self.dim not in (2, 3):
            raise ConfigError(f"poisson dim must be 2 or 3, got {self.dim}")
        if self.domain not in DOMAINS:
            raise ConfigError(f"unknown poisson domain {self.domain!r}; use one of {', '.join(DOMAINS)}")
        if self.domain != "square" and self.dim != 2:
            raise ConfigError(f"poisson domain {self.domain!r} is 2-D only; use dim=2 or domain='square'")
        check_forcing("poisson", self.forcing, self.alpha, self.tau)
        if self.subsample > self.resolution:
            raise ConfigError(f"subsample {self.subsample} exceeds the {self.resolution} nodes per axis")


@register("poisson")
class Poisson(LinearGenerator):
    """Poisson with random forcing: inputs ``f``, outputs ``u``, both ``(n,) * dim``.

    On a non-square ``domain`` the inputs are ``mask`` (1 = outside the domain) and ``f``.
    """

    Config = PoissonConfig
    inputs = ("f",)
    outputs = ("u",)
    symmetric = True
    grid = "node, boundary excluded: x_i = (i + 1) / (n + 1), i = 0..n-1"

    def __init__(self, config: PoissonConfig):
        super().__init__(config)
        if config.domain != "square":  # instance attributes: the square keeps the class's
            self.inputs = ("mask", "f")
            self.grid = f"{Poisson.grid}; {config.domain} domain: u = 0 where mask = 1"
            n = config.resolution
            self._outside = outside_mask(config.domain, np.arange(1, n + 1) / (n + 1))
            if self._outside.all():
                raise ConfigError(f"poisson domain {config.domain!r} has no interior node at resolution "
                                  f"{n}; use a larger resolution")

    def coords(self) -> dict[str, np.ndarray]:
        n = self.config.resolution
        x = np.arange(1, n + 1) / (n + 1)
        return {k: x.copy() for k in ("x", "y", "z")[: self.config.dim]}

    def unknown_shape(self) -> tuple[int, ...]:
        return (self.config.resolution,) * self.config.dim

    def draw_inputs(self, rng: np.random.Generator) -> dict[str, np.ndarray]:
        c = self.config
        shape = self.unknown_shape()
        f = random_forcing(rng, shape, c.forcing, c.alpha, c.tau)
        if c.domain == "square":
            return {"f": f}
        # the same draws as the square: the geometry is fixed, f is cut to the domain
        return {"mask": self._outside.astype(np.float64), "f": np.where(self._outside, 0.0, f)}

    def assemble(self, inputs: dict[str, np.ndarray]):
        f = np.asarray(inputs["f"], dtype=np.float64)
        if f.shape != self.unknown_shape():
            raise ConfigError(f"poisson forcing must have shape {self.unknown_shape()}, got {f.shape}")
        if self.config.domain == "square":
            return discretisation.laplacian(self.config.resolution, self.config.dim), f.reshape(-1)
        # the geometry is the config's (fixed); u = 0 outside whatever f holds there
        return domain_laplacian(self._outside), np.where(self._outside, 0.0, f).reshape(-1)

    def method(self, A) -> str:
        # a constant diagonal makes Jacobi-PCG plain CG, which beat RS-AMG-PCG on the 3-D
        # Laplacian here at every size measured (0.13 vs 0.26 s at 40^3, 0.68 vs 1.24 s at
        # 64^3, tol 1e-10) and beat splu already at 6^3 (0.6 vs 0.7 ms)
        if self.config.solver == "auto" and self.config.dim == 3:
            return "pcg-jacobi"
        return super().method(A)

    def outputs_from(self, x: np.ndarray, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        u = x.reshape(self.unknown_shape())
        if self.config.domain == "square":
            return {"u": u}
        return {"u": np.where(self._outside, 0.0, u)}

