"""Pressure-Poisson systems on the unit cube with solid obstacles (the DCDM setting).

``-Laplace p = f`` in the fluid part of ``(0, 1)^3`` (or of the unit square, ``dim = 2``), ``p = 0`` on the domain boundary and
``dp/dn = 0`` on obstacle surfaces: the SPD 7-point MAC pressure matrix of an
incompressible flow solver with solids (Kaneda et al. 2023, "A Deep Conjugate Direction
Method for Iteratively Solving Linear Systems", ICML; repo ``ayano721/2023_DCDM``).

Grid: ``n^dim`` points ``x_i = (i + 1) / (n + 1)`` (as ``poisson``), each the centre of a cell
that is fluid or solid. Obstacles are random axis-aligned boxes and balls; fluid pockets
sealed off from the domain boundary are filled (their pure-Neumann block would be
singular). Matrix: :func:`sciml.solvers.discretisation.masked_laplacian` scaled by
``1 / h^2``, ``h = 1 / (n + 1)``. The Dirichlet boundary (an open box, where DCDM's reference
matrix is all-Neumann and singular) keeps ``A`` positive definite. Solid cells carry the
decoupled row ``p = 0``, so ``u`` and ``f`` live on the whole grid (zero in solids).
"""

from __future__ import annotations

import dataclasses
from typing import Literal

import numpy as np

from ..errors import ConfigError, DataError
from ..solvers import discretisation, linear
from .generators import LinearGenerator, check_common, register
from .random_fields import check_forcing, random_forcing

# auto solver crossover, measured on this project's 2-core CPU (default obstacles, tol 1e-10,
# setup included): Jacobi-PCG vs RS-AMG-PCG took 0.06-0.08 vs 0.20-0.22 s at 32^3,
# 1.0-2.4 vs 1.4-3.0 s at 64^3, 9.1-10.9 vs 10.3-12.0 s at 96^3 and 25.8 vs 18.9 s at 128^3.
# The structured multigrid (pcg-mg) takes over beyond 64^3 (`benchmarks/multigrid.py
# --crossover`): Jacobi-PCG vs pcg-mg 0.27 vs 0.58 s at 48^3, 1.09 vs 1.09 s at 64^3, 9.3 vs
# 2.9 s at 96^3.
JACOBI_MAX = 64**3


def _check_range(name: str, pair: tuple[float, ...], upper: float) -> None:
    if len(pair) != 2 or not 0 < pair[0] <= pair[1] <= upper:
        raise ConfigError(f"{name} must be [low, high] with 0 < low <= high <= {upper}, got {list(pair)}")


@dataclasses.dataclass(frozen=True)
class Poisson3dConfig:
    """Poisson-with-obstacles parameters.

    resolution : points per axis ``n`` (>= 2); ``h = 1 / (n + 1)``.
    dim : 3 (the cube, default) or 2 (the unit square with rectangles and discs: the 2-D DCDM
        setting with obstacles).
    subsample : stored stride along every axis.
    n_boxes, n_spheres : number of random boxes and balls (2, 2; both 0 for an empty cube).
    box_size : range of box edge lengths, drawn per axis (0.15, 0.4).
    sphere_radius : range of ball radii (0.08, 0.2).
    forcing : ``"grf"`` (zero-Neumann GRF with ``alpha``, ``tau``) or ``"white_noise"``, zero in solids.
    solver, tol : solve method (``auto``: Jacobi-PCG up to 96^3, AMG-PCG above, by measurement)
        and relative residual (1e-10).
    """

    resolution: int = 32
    subsample: int = 1
    dim: int = 3
    n_boxes: int = 2
    n_spheres: int = 2
    box_size: tuple[float, ...] = (0.15, 0.4)
    sphere_radius: tuple[float, ...] = (0.08, 0.2)
    forcing: Literal["grf", "white_noise"] = "grf"
    alpha: float = 2.0
    tau: float = 3.0
    solver: str = "auto"
    tol: float = 1e-10

    def __post_init__(self):
        check_common(self, min_resolution=2)
        if self.dim not in (2, 3):
            raise ConfigError(f"dim must be 2 or 3, got {self.dim}")
        if self.subsample > self.resolution:
            raise ConfigError(f"subsample {self.subsample} exceeds the {self.resolution} points per axis")
        if self.n_boxes < 0 or self.n_spheres < 0:
            raise ConfigError(f"n_boxes and n_spheres must be >= 0, got {self.n_boxes}, {self.n_spheres}")
        _check_range("box_size", self.box_size, 1.0)
        _check_range("sphere_radius", self.sphere_radius, 0.5)
        check_forcing("poisson3d", self.forcing, self.alpha, self.tau)


def random_obstacles(rng: np.random.Generator, x: np.ndarray, n_boxes: int, n_spheres: int,
                     box_size: tuple[float, float], sphere_radius: tuple[float, float], dim: int = 3) -> np.ndarray:
    """Boolean solid mask on the grid ``x^dim``: union of random boxes and balls.

    Box ``b``: centre ``~ U(0, 1)^dim``, edge lengths ``~ U(box_size)`` per axis; ball: centre
    ``~ U(0, 1)^dim``, radius ``~ U(sphere_radius)``. Draws boxes first, then balls.
    """
    X = np.meshgrid(*([x] * dim), indexing="ij")
    solid = np.zeros((x.size,) * dim, dtype=bool)
    for _ in range(n_boxes):
        centre, size = rng.uniform(0, 1, dim), rng.uniform(*box_size, dim)
        inside = np.ones_like(solid)
        for d in range(dim):
            inside &= np.abs(X[d] - centre[d]) <= size[d] / 2
        solid |= inside
    for _ in range(n_spheres):
        centre, radius = rng.uniform(0, 1, dim), rng.uniform(*sphere_radius)
        solid |= sum((X[d] - centre[d]) ** 2 for d in range(dim)) <= radius**2
    return solid


def seal_pockets(solid: np.ndarray) -> np.ndarray:
    """Fill fluid regions that no face-connected path links to the domain boundary.

    Such a pocket has only no-flux faces: its block of ``A`` is a pure-Neumann Laplacian with
    the constants in its null space (a single enclosed cell would be an empty row).
    """
    from scipy import ndimage

    labels, _ = ndimage.label(~solid)  # face (6-) connectivity, as the 7-point stencil couples
    rim = np.zeros_like(solid)
    for d in range(solid.ndim):
        index = [slice(None)] * solid.ndim
        for end in (0, -1):
            index[d] = end
            rim[tuple(index)] = True
    open_labels = np.unique(labels[rim & ~solid])
    return solid | ~np.isin(labels, open_labels)


@register("poisson3d")
class Poisson3d(LinearGenerator):
    """Poisson with obstacles: inputs ``mask`` (1 = solid) and ``f``, output ``u``, all ``(n,) * dim``."""

    Config = Poisson3dConfig
    inputs = ("mask", "f")
    outputs = ("u",)
    symmetric = True
    grid = "node, boundary excluded: x_i = (i + 1) / (n + 1), i = 0..n-1 (cell centres; p = 0 one spacing outside)"

    def coords(self) -> dict[str, np.ndarray]:
        n = self.config.resolution
        x = np.arange(1, n + 1) / (n + 1)
        return {k: x.copy() for k in "xyz"[: self.config.dim]}

    def unknown_shape(self) -> tuple[int, ...]:
        return (self.config.resolution,) * self.config.dim

    def draw_inputs(self, rng: np.random.Generator) -> dict[str, np.ndarray]:
        c = self.config
        solid = random_obstacles(rng, self.coords()["x"], c.n_boxes, c.n_spheres, c.box_size, c.sphere_radius, c.dim)
        solid = seal_pockets(solid)
        if solid.all():
            raise DataError(
                f"poisson3d: the obstacles fill the whole {c.resolution}^{c.dim} grid; use fewer or smaller boxes/spheres"
            )
        shape = self.unknown_shape()
        f = random_forcing(rng, shape, c.forcing, c.alpha, c.tau)
        return {"mask": solid.astype(np.float64), "f": np.where(solid, 0.0, f)}

    def method(self, A) -> str:
        # Jacobi-PCG needs no setup and the nearly constant diagonal leaves AMG ahead only on
        # the largest grids, where its grid-independent iteration count pays for its setup
        if self.config.solver == "auto" and self.config.dim == 2:
            return linear.choose_method(A, symmetric=True)
        if self.config.solver == "auto":
            return "pcg-jacobi" if A.shape[0] <= JACOBI_MAX else "pcg-mg"
        return self.config.solver

    def _solid(self, inputs: dict[str, np.ndarray]) -> np.ndarray:
        mask = np.asarray(inputs["mask"])
        if mask.shape != self.unknown_shape():
            raise ConfigError(f"poisson3d mask must have shape {self.unknown_shape()}, got {mask.shape}")
        return mask > 0.5

    def assemble(self, inputs: dict[str, np.ndarray]):
        solid = self._solid(inputs)
        f = np.asarray(inputs["f"], dtype=np.float64)
        if f.shape != self.unknown_shape():
            raise ConfigError(f"poisson3d forcing must have shape {self.unknown_shape()}, got {f.shape}")
        # p = 0 in solids whatever f holds there (stored f is already zero)
        return discretisation.masked_laplacian(solid), np.where(solid, 0.0, f).reshape(-1)

    def outputs_from(self, x: np.ndarray, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {"u": np.where(self._solid(inputs), 0.0, x.reshape(self.unknown_shape()))}
