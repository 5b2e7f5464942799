"""Stationary Gaussian random fields on regular grids by circulant embedding.

A zero-mean field with isotropic covariance ``Cov(phi(x), phi(y)) = C(|x - y|)`` on a grid of
``m_0 x m_1 x ...`` points with spacing ``h`` is sampled exactly (Dietrich & Newsam, SIAM J.
Sci. Comput. 18, 1997; Wood & Chan, J. Comput. Graph. Stat. 3, 1994): the covariance matrix
is embedded in the block-circulant matrix of a periodic torus of ``M_d >= 2 (m_d - 1)``
points per axis, whose eigenvalues ``lambda = FFT(c)`` of its base block ``c`` are known in
closed form. With ``lambda >= 0`` and ``xi = a + i b`` (``a, b ~ N(0, I)``),
``y = FFT(sqrt(lambda / M) xi)`` has ``Re y`` and ``Im y`` independent, each ``N(0, C)`` on
the torus; restricted to the grid they are two exact samples.

Models (ConDiff, Trifonov et al. 2024, arXiv 2406.04709, via parafields; ``r = d / l``):
``exponential`` ``s2 exp(-r)``; ``gaussian`` ``s2 exp(-r^2)``; ``cubic``
``s2 (1 - 7 r^2 + 35/4 r^3 - 7/2 r^5 + 3/4 r^7)`` for ``r < 1``, else 0.
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Sequence

import numpy as np
import scipy.fft

from ..errors import ConfigError

MODELS = ("cubic", "exponential", "gaussian")

#: negative eigenvalues down to this fraction of the largest are FFT round-off and are
#: clamped to 0 (the gaussian model's spectrum decays to ~1e-16 of its peak)
ROUNDOFF = 1e-10
#: the torus grows by this factor per attempt while true negative eigenvalues remain
GROWTH = 1.5
#: give up beyond this many times the minimal embedding per axis
MAX_PADDING = 16.0


def covariance(model: str, d: np.ndarray, variance: float, length: float) -> np.ndarray:
    """Isotropic covariance ``C(d)`` of ``model`` at distances ``d`` (see the module docstring)."""
    if model not in MODELS:
        raise ConfigError(f"unknown covariance model {model!r}; valid models are: {', '.join(MODELS)}")
    r = np.asarray(d, dtype=np.float64) / length
    if model == "exponential":
        return variance * np.exp(-r)
    if model == "gaussian":
        return variance * np.exp(-(r**2))
    poly = 1 - 7 * r**2 + 35 / 4 * r**3 - 7 / 2 * r**5 + 3 / 4 * r**7
    return variance * np.where(r < 1, poly, 0.0)


def cell_centres(cells: int) -> np.ndarray:
    """Centres ``(i + 1/2) / cells``, ``i = 0..cells-1``, of a uniform cell grid of ``[0, 1]``."""
    return (np.arange(cells) + 0.5) / cells


def _torus_distances(torus: Sequence[int], h: float) -> np.ndarray:
    """Periodic distance from point 0 to every torus point, ``h sqrt(sum min(j, M - j)^2)``."""
    axes = [np.minimum(np.arange(M), M - np.arange(M)) * h for M in torus]
    return np.sqrt(sum(a**2 for a in np.meshgrid(*axes, indexing="ij")))


class CirculantEmbedding:
    """Exact sampler of a stationary isotropic GRF on a regular grid.

    Parameters
    ----------
    shape : grid points per axis ``(m_0, m_1, ...)``.
    spacing : grid spacing ``h`` (same on every axis).
    model : one of :data:`MODELS`.
    variance, length : ``s2`` and correlation length ``l`` of the model.
    padding : torus size per axis as a multiple of the grid's extent ``m - 1`` (>= 2, the
        smallest valid embedding; parafields' default factor is 2).

    Attributes
    ----------
    torus : embedding size per axis (grown by :data:`GROWTH` until no eigenvalue is
        negative beyond :data:`ROUNDOFF`).
    eigenvalues : non-negative eigenvalues of the embedding, shape ``torus``.
    clamped : most negative eigenvalue set to zero, relative to the largest (0 if none);
        the pointwise variance is then off by at most about this fraction.
    """

    def __init__(self, shape: Sequence[int], spacing: float, model: str, variance: float, length: float,
                 padding: float = 2.0):
        self.shape = tuple(int(s) for s in shape)
        if not self.shape or min(self.shape) < 1:
            raise ConfigError(f"a random field needs a non-empty grid shape, got {shape}")
        if not (spacing > 0 and variance > 0 and length > 0):
            raise ConfigError(
                f"covariance needs spacing, variance and length > 0, got {spacing}, {variance}, {length}")
        if not padding >= 2:
            raise ConfigError(f"circulant embedding padding must be at least 2 (the minimal torus), got {padding}")
        self.model, self.variance, self.length, self.spacing = model, float(variance), float(length), float(spacing)
        covariance(model, 0.0, 1.0, 1.0)  # validates the model name before any work
        self.torus, self.eigenvalues, self.clamped = self._embed(padding)
        self._scale = np.sqrt(self.eigenvalues / np.prod(self.torus))

    def _sizes(self, factor: float) -> tuple[int, ...]:
        # scipy's FFT is fastest on 2-3-5-smooth sizes; a larger torus is still a valid embedding
        return tuple(scipy.fft.next_fast_len(max(2 * (m - 1), math.ceil(factor * (m - 1)), 1), real=False)
                     for m in self.shape)

    def _embed(self, padding: float) -> tuple[tuple[int, ...], np.ndarray, float]:
        factor = padding
        while True:
            torus = self._sizes(factor)
            c = covariance(self.model, _torus_distances(torus, self.spacing), self.variance, self.length)
            # c is real and even on the torus, so its DFT is real up to round-off
            lam = scipy.fft.fftn(c).real
            low = float(lam.min()) / float(lam.max())
            if low >= -ROUNDOFF:
                return torus, np.maximum(lam, 0.0), max(0.0, -low)
            factor *= GROWTH
            if factor > MAX_PADDING:
                raise ConfigError(
                    f"the {self.model} covariance with length {self.length} has no non-negative circulant "
                    f"embedding up to {MAX_PADDING:g}x the grid (smallest eigenvalue {low:.2e} of the largest); "
                    "use a shorter correlation length or another model"
                )

    def fields(self, noise: np.ndarray) -> np.ndarray:
        """Two independent fields from real white noise ``noise`` of shape ``(2, *torus)``.

        ``Re`` and ``Im`` of ``FFT(sqrt(lambda / M) (noise[0] + i noise[1]))`` restricted to
        the grid; returns shape ``(2, *shape)``.
        """
        noise = np.asarray(noise, dtype=np.float64)
        if noise.shape != (2, *self.torus):
            raise ConfigError(f"noise must have shape {(2, *self.torus)}, got {noise.shape}")
        y = scipy.fft.fftn(self._scale * (noise[0] + 1j * noise[1]))
        y = y[tuple(slice(0, m) for m in self.shape)]
        return np.stack([y.real, y.imag])

    def sample_pair(self, rng: np.random.Generator) -> np.ndarray:
        """Two independent fields, shape ``(2, *shape)``, from one draw ``rng.standard_normal((2, *torus))``."""
        return self.fields(rng.standard_normal((2, *self.torus)))

    def sample(self, rng: np.random.Generator) -> np.ndarray:
        """One field of ``shape`` (the first of :meth:`sample_pair`; the same draw)."""
        return self.sample_pair(rng)[0]


@lru_cache(maxsize=16)
def embedding(shape: tuple[int, ...], spacing: float, model: str, variance: float, length: float,
              padding: float = 2.0) -> CirculantEmbedding:
    """A cached :class:`CirculantEmbedding` (its FFT set-up is shared by all samples)."""
    return CirculantEmbedding(shape, spacing, model, variance, length, padding)
