"""ConDiff: diffusion with a log-normal coefficient of controlled contrast (Trifonov et al. 2024).

``-div(k grad u) = f`` on ``(0, 1)^2``, ``u = 0`` on the boundary (arXiv 2406.04709, code
``condiff-dataset/ConDiff:condiff.py``, parameters ``generate_condiff.ipynb``).

* ``k = exp(phi)``, ``phi`` a zero-mean stationary GRF with a ``cubic``, ``exponential`` or
  ``gaussian`` covariance of variance ``s2`` and correlation length 0.05 at the ``(n+1)^2``
  cell centres ``(i + 1/2) h``, sampled exactly by circulant embedding
  (:mod:`.covariance`; ConDiff calls parafields, same embedding factor 2).
* Rejection sampling on the contrast ``exp(max phi - min phi) = k_max / k_min``: a field is kept
  only inside the recipe's window for its variance (:data:`CONTRAST_WINDOWS`).
* ``f ~ N(0, 1)`` per unknown; ``n x n`` unknowns at the interior nodes ``(i + 1) h``,
  ``h = 1 / (n + 1)``, matrix :func:`sciml.solvers.discretisation.condiff_operator`.

``condiff-poisson`` is the Poisson subset (``k = 1``, no ``k`` stored). The candidate
fields, then ``f``, come from ``default_rng([seed, i])``, so sample ``i`` is a pure
function of ``(config, seed, i)``; the random streams differ from ConDiff's (JAX keys
seeding parafields), the distributions are the recipe's.
"""

from __future__ import annotations

import abc

import dataclasses
from typing import Literal, Optional

import numpy as np

from ..errors import ConfigError, DataError
from ..solvers import discretisation
from .covariance import MODELS, cell_centres, embedding
from .generators import LinearGenerator, check_common, register

#: contrast windows of the recipe (``boundaries_ls`` of ``generate_condiff.ipynb``, grids 64 and 128)
CONTRAST_WINDOWS = {0.1: (5.0, 15.0), 0.4: (50.0, 250.0), 1.0: (600.0, 1000.0), 2.0: (8e4, 1e5)}


def _check_grid(config) -> None:
    check_common(config, min_resolution=1)
    if config.subsample > config.resolution:
        raise ConfigError(f"subsample {config.subsample} exceeds the {config.resolution} nodes per axis")


@dataclasses.dataclass(frozen=True)
class CondiffConfig:
    """ConDiff diffusion parameters (defaults: cubic covariance, variance 0.1, grid 64).

    resolution : interior nodes per axis ``n`` (64 and 128 in the paper); ``k`` has ``n + 1``.
    subsample : stored stride along every axis (of ``k`` and of ``f``, ``u``).
    covariance : ``"cubic"``, ``"exponential"`` or ``"gaussian"``.
    variance : variance ``s2`` of ``phi = log k`` (recipe: 0.1, 0.4, 1.0, 2.0).
    correlation_length : ``l`` of the covariance (0.05).
    contrast_min, contrast_max : acceptance window of ``k_max / k_min``; default the recipe's
        window for ``variance``, required for any other variance.
    max_tries : candidate fields drawn per sample before giving up (10000).
    padding : circulant-embedding torus size per axis over the grid extent (2, parafields').
    solver, tol : solve method and relative residual (``auto``, 1e-10).
    """

    resolution: int = 64
    subsample: int = 1
    covariance: Literal["cubic", "exponential", "gaussian"] = "cubic"
    variance: float = 0.1
    correlation_length: float = 0.05
    contrast_min: Optional[float] = None
    contrast_max: Optional[float] = None
    max_tries: int = 10000
    padding: float = 2.0
    solver: str = "auto"
    tol: float = 1e-10

    def __post_init__(self):
        _check_grid(self)
        if self.covariance not in MODELS:
            raise ConfigError(f"condiff covariance must be one of {list(MODELS)}, got {self.covariance!r}")
        if not (self.variance > 0 and self.correlation_length > 0):
            raise ConfigError(f"condiff needs variance > 0 and correlation_length > 0, got "
                              f"{self.variance}, {self.correlation_length}")
        if (self.contrast_min is None) != (self.contrast_max is None):
            raise ConfigError("give both contrast_min and contrast_max, or neither (the recipe's window)")
        if self.contrast_min is None and self.variance not in CONTRAST_WINDOWS:
            raise ConfigError(
                f"variance {self.variance} has no recipe contrast window (recipe variances: "
                f"{', '.join(map(str, CONTRAST_WINDOWS))}); set contrast_min and contrast_max"
            )
        lo, hi = self.window
        if not 1 <= lo <= hi:
            raise ConfigError(f"the contrast window needs 1 <= contrast_min <= contrast_max, got [{lo}, {hi}]")
        if self.max_tries < 1:
            raise ConfigError(f"max_tries must be a positive integer, got {self.max_tries}")
        if not self.padding >= 2:
            raise ConfigError(f"padding must be at least 2 (the minimal circulant embedding), got {self.padding}")

    @property
    def window(self) -> tuple[float, float]:
        """The contrast window ``(min, max)`` in force."""
        if self.contrast_min is None:
            return CONTRAST_WINDOWS[self.variance]
        return float(self.contrast_min), float(self.contrast_max)


@dataclasses.dataclass(frozen=True)
class CondiffPoissonConfig:
    """ConDiff Poisson subset parameters.

    resolution : interior nodes per axis ``n``; subsample : stored stride;
    solver, tol : solve method and relative residual (``auto``, 1e-10).
    """

    resolution: int = 64
    subsample: int = 1
    solver: str = "auto"
    tol: float = 1e-10

    def __post_init__(self):
        _check_grid(self)


class _CondiffGrid(LinearGenerator):
    """Shared grid of both ConDiff generators: nodes ``(i + 1) h``, cells ``(i + 1/2) h``."""

    symmetric = True
    grid = "node, boundary excluded: x_i = (i + 1) / (n + 1), i = 0..n-1"

    def coords(self) -> dict[str, np.ndarray]:
        n = self.config.resolution
        x = np.arange(1, n + 1) / (n + 1)
        return {"x": x, "y": x.copy()}

    def unknown_shape(self) -> tuple[int, ...]:
        return (self.config.resolution,) * 2

    def stride(self, array: np.ndarray) -> np.ndarray:
        r = self.config.subsample
        return array[tuple(slice(None, None, r) for _ in range(np.ndim(array)))]

    def draw_forcing(self, rng: np.random.Generator) -> np.ndarray:
        """White noise ``f ~ N(0, 1)`` per unknown (ConDiff's right-hand side)."""
        return rng.standard_normal(self.unknown_shape())

    @abc.abstractmethod
    def coefficient(self, inputs: dict[str, np.ndarray]) -> np.ndarray:
        ...

    def assemble(self, inputs: dict[str, np.ndarray]):
        f = np.asarray(inputs["f"], dtype=np.float64)
        if f.shape != self.unknown_shape():
            raise ConfigError(f"{self.name} forcing must have shape {self.unknown_shape()}, got {f.shape}")
        return discretisation.condiff_operator(self.coefficient(inputs)), f.reshape(-1)

    def outputs_from(self, x: np.ndarray, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {"u": x.reshape(self.unknown_shape())}


@register("condiff")
class Condiff(_CondiffGrid):
    """ConDiff diffusion: inputs ``k`` ``(n+1, n+1)`` on ``(xk, yk)`` and ``f`` ``(n, n)``; outputs ``u``.

    Also stores the per-sample ``contrast`` ``k_max / k_min`` (dims ``(sample,)``).
    """

    Config = CondiffConfig
    inputs = ("k", "f")
    outputs = ("u",)
    grid = _CondiffGrid.grid + "; k at cell centres xk_i = (i + 1/2) / (n + 1), i = 0..n"

    def coords(self) -> dict[str, np.ndarray]:
        xk = cell_centres(self.config.resolution + 1)
        return {**super().coords(), "xk": xk, "yk": xk.copy()}

    def variables(self) -> dict[str, tuple[str, ...]]:
        return {"k": ("xk", "yk"), "f": ("x", "y"), "u": ("x", "y"), "contrast": ()}

    def draw_log_coefficient(self, rng: np.random.Generator) -> tuple[np.ndarray, float, int]:
        """First candidate ``phi`` whose contrast lies in the window: ``(phi, contrast, tries)``.

        Candidates come in pairs from one noise draw (real and imaginary part of the
        embedding), tried in that order; raises DataError after ``max_tries`` candidates.
        """
        c = self.config
        m = c.resolution + 1
        sampler = embedding((m, m), 1.0 / m, c.covariance, c.variance, c.correlation_length, c.padding)
        lo, hi = c.window
        tries = 0
        while tries < c.max_tries:
            for phi in sampler.sample_pair(rng)[: c.max_tries - tries]:
                tries += 1
                contrast = float(np.exp(phi.max() - phi.min()))
                if lo <= contrast <= hi:
                    return phi, contrast, tries
        raise DataError(
            f"condiff: none of {c.max_tries} {c.covariance} fields of variance {c.variance} at n={c.resolution} "
            f"had a contrast in [{lo:g}, {hi:g}]; widen contrast_min/contrast_max or raise max_tries"
        )

    def draw_inputs(self, rng: np.random.Generator) -> dict[str, np.ndarray]:
        phi, contrast, _ = self.draw_log_coefficient(rng)
        return {"k": np.exp(phi), "f": self.draw_forcing(rng), "contrast": np.asarray(contrast)}

    def coefficient(self, inputs: dict[str, np.ndarray]) -> np.ndarray:
        k = np.asarray(inputs["k"], dtype=np.float64)
        m = self.config.resolution + 1
        if k.shape != (m, m):
            raise ConfigError(f"condiff coefficient k must have shape {(m, m)} (cell centres), got {k.shape}")
        return k


@register("condiff-poisson")
class CondiffPoisson(_CondiffGrid):
    """ConDiff's Poisson subset: ``k = 1`` in the same matrix; inputs ``f``, outputs ``u`` ``(n, n)``.

    A registered name of its own (not a flag of ``condiff``) because inputs and outputs are
    declared per generator class and the diffusion keys mean nothing here. The systems equal
    those of ``poisson`` with ``dim=2, forcing="white_noise"`` (same ``f`` draw, same matrix).
    """

    Config = CondiffPoissonConfig
    inputs = ("f",)
    outputs = ("u",)

    def draw_inputs(self, rng: np.random.Generator) -> dict[str, np.ndarray]:
        return {"f": self.draw_forcing(rng)}

    def coefficient(self, inputs: dict[str, np.ndarray]) -> np.ndarray:
        return np.ones((self.config.resolution + 1,) * 2)
