"""Right-hand sides biased towards the low end of an SPD matrix's spectrum (DCDM's training data).

Kaneda et al. (ICML 2023, "A Deep Conjugate Direction Method", repo ``ayano721/2023_DCDM``)
build training vectors ``sum_i c_i v_i`` over the Ritz vectors ``v_i`` of a 10,000-step
Lanczos run with ``c_i ~ N(0, 1)``, the lowest ``m/2 + theta`` (theta = 500, i.e. 55 %) of
them scaled by 9, then normalise to unit length. Holding that basis costs
``10,000 x N`` numbers (about 10 GB at 64^3).

Here the same weighting is applied as a matrix function without any basis: with white noise
``w ~ N(0, I)`` the vector ``g(A) w`` has independent ``N(0, g(lambda_i)^2)`` coordinates in
A's eigenbasis, so ``g(lambda) = 1 + (weight - 1) * [lambda < cut]`` gives every eigenvector
below the cut 9 times the amplitude of one above it: the reference recipe in the limit where
the Ritz vectors are the eigenvectors (Lanczos run to completion). The step is a
Jackson-damped Chebyshev expansion of degree ``degree`` on ``[0, Gershgorin bound]``
(Weisse et al. 2006, Rev. Mod. Phys. 78, 275, the kernel polynomial method), applied with the
three-term recurrence to a block of vectors: memory is three blocks of ``N x batch``, and no
vector is ever stored beyond the batch being drawn. The cut is the 55 % quantile of A's
eigenvalue distribution, estimated by stochastic Lanczos quadrature (Ubaru, Chen & Saad
2017) or computed exactly for small matrices.
"""

from __future__ import annotations

import math

import numpy as np
import scipy.sparse as sp

from ..errors import ConfigError

# the reference's fraction of up-weighted Ritz values: (m / 2 + theta) / m, m = 10,000, theta = 500
LOW_FRACTION = 0.55
LOW_WEIGHT = 9.0


def gershgorin_bound(A: sp.spmatrix) -> float:
    """An upper bound of the spectral radius: the largest absolute row sum."""
    return float(np.max(np.asarray(abs(A).sum(axis=1)).ravel()))


def lanczos(A: sp.spmatrix, v0: np.ndarray, m: int) -> tuple[np.ndarray, np.ndarray]:
    """``m`` steps of Lanczos with full reorthogonalisation: the Ritz values and the squared first
    components of the Ritz vectors (the Gauss quadrature weights of ``v0``'s spectral measure)."""
    n = A.shape[0]
    m = min(m, n)
    Q = np.zeros((m, n))
    alpha, beta = np.zeros(m), np.zeros(m)
    q = v0 / np.linalg.norm(v0)
    k = m
    for j in range(m):
        Q[j] = q
        w = A @ q
        alpha[j] = q @ w
        w -= Q[: j + 1].T @ (Q[: j + 1] @ w)
        w -= Q[: j + 1].T @ (Q[: j + 1] @ w)  # twice is enough (Giraud et al. 2005)
        beta[j] = np.linalg.norm(w)
        if beta[j] <= 1e-12 * max(abs(alpha[j]), 1.0):  # invariant subspace: the quadrature is exact
            k = j + 1
            break
        q = w / beta[j]
    T = np.diag(alpha[:k]) + np.diag(beta[: k - 1], 1) + np.diag(beta[: k - 1], -1)
    theta, S = np.linalg.eigh(T)
    return theta, S[0] ** 2


def eigenvalue_quantile(A: sp.spmatrix, fraction: float, rng: np.random.Generator, probes: int = 4,
                        steps: int = 80, exact_below: int = 1500) -> float:
    """The ``fraction`` quantile of A's eigenvalues (exact when ``N <= exact_below``, else by
    stochastic Lanczos quadrature with ``probes`` Rademacher vectors of ``steps`` steps)."""
    n = A.shape[0]
    if n <= exact_below:
        lam = np.linalg.eigvalsh(A.toarray())
        return float(np.quantile(lam, fraction))
    nodes, weights = [], []
    for _ in range(probes):
        theta, tau = lanczos(A, rng.choice([-1.0, 1.0], n), steps)
        nodes.append(theta)
        weights.append(tau / probes)
    nodes, weights = np.concatenate(nodes), np.concatenate(weights)
    order = np.argsort(nodes)
    cdf = np.cumsum(weights[order])
    return float(np.interp(fraction, cdf, nodes[order]))


def jackson_step_coefficients(cut: float, lo: float, hi: float, degree: int) -> np.ndarray:
    """Jackson-damped Chebyshev coefficients of the indicator ``[lambda < cut]`` on ``[lo, hi]``."""
    t = np.clip((2 * cut - (lo + hi)) / (hi - lo), -1.0, 1.0)
    a = math.acos(t)  # the indicator of [-1, t] in the variable s = cos(phi) is [phi >= a]
    k = np.arange(1, degree + 1)
    coef = np.concatenate([[1 - a / math.pi], -2 * np.sin(k * a) / (k * math.pi)])
    K = degree + 2
    kk = np.arange(degree + 1)
    jackson = ((K - kk) * np.cos(math.pi * kk / K) + np.sin(math.pi * kk / K) / math.tan(math.pi / K)) / K
    return coef * jackson


class SpectralRHS:
    """Draws unit vectors whose eigen-coordinates are ``N(0, 1)``, times ``weight`` below the cut.

    Parameters
    ----------
    A : SPD sparse matrix.
    fraction : share of the spectrum (by eigenvalue count) that gets the weight (0.55).
    weight : amplitude factor of the low part (9).
    degree : Chebyshev degree of the step; the transition is about ``hi / degree`` wide.
    mask : optional boolean ``(N,)``: entries outside it are zeroed (solid cells).
    seed : seed of the quantile estimate.
    """

    def __init__(self, A: sp.spmatrix, fraction: float = LOW_FRACTION, weight: float = LOW_WEIGHT,
                 degree: int = 80, mask: np.ndarray | None = None, seed: int = 0):
        if not 0 < fraction < 1:
            raise ConfigError(f"the low-spectrum fraction must lie in (0, 1), got {fraction}")
        if weight <= 0 or degree < 1:
            raise ConfigError(f"weight must be > 0 and degree >= 1, got {weight}, {degree}")
        self.A = sp.csr_matrix(A, dtype=np.float64)
        self.weight, self.degree = float(weight), int(degree)
        self.hi = gershgorin_bound(self.A) * (1 + 1e-9)
        self.lo = 0.0
        self.cut = eigenvalue_quantile(self.A, fraction, np.random.default_rng([seed, 7]))
        self.coef = jackson_step_coefficients(self.cut, self.lo, self.hi, self.degree)
        self.mask = None if mask is None else np.asarray(mask, dtype=bool).reshape(-1)

    def filter(self, W: np.ndarray) -> np.ndarray:
        """``g(A) W`` for a block ``W`` of shape ``(N, k)``: ``W + (weight - 1) p(A) W``."""
        scale, shift = 2.0 / (self.hi - self.lo), (self.hi + self.lo) / (self.hi - self.lo)
        t_prev, t_cur = W, scale * (self.A @ W) - shift * W
        acc = self.coef[0] * t_prev + self.coef[1] * t_cur
        for c in self.coef[2:]:
            t_prev, t_cur = t_cur, 2 * (scale * (self.A @ t_cur) - shift * t_cur) - t_prev
            acc += c * t_cur
        return W + (self.weight - 1.0) * acc

    def draw(self, k: int, rng: np.random.Generator) -> np.ndarray:
        """``k`` unit-norm vectors, shape ``(N, k)``, float64."""
        W = rng.standard_normal((self.A.shape[0], k))
        if self.mask is not None:
            W[~self.mask] = 0.0
        V = self.filter(W)
        if self.mask is not None:
            V[~self.mask] = 0.0
        return V / np.linalg.norm(V, axis=0, keepdims=True)
