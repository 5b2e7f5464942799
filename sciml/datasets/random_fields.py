"""Gaussian random fields with a zero-Neumann cosine (Karhunen-Loeve) basis.

``g ~ N(0, tau^(2 alpha - 2) (-Laplace + tau^2)^(-alpha))`` on ``[0, 1]^d`` with the Laplacian
under zero-Neumann conditions, sampled as in the FNO data generator ``GRF.m``
(``neuraloperator/neuraloperator:data_generation/darcy/GRF.m``): the cosine coefficient of
wave vector ``k`` is ``sqrt(N) tau^(alpha-1) (pi^2 |k|^2 + tau^2)^(-alpha/2) xi_k`` with
``xi_k ~ N(0, 1)`` and ``N`` grid points (``sqrt(N) = s`` in 2-D, GRF.m's factor), the
constant mode is zero, and the field is the inverse orthonormal DCT-II of the coefficients.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import scipy.fft

from ..errors import ConfigError


def grf_amplitudes(shape: Sequence[int], alpha: float, tau: float) -> np.ndarray:
    """Standard deviation of each orthonormal DCT coefficient of the field.

    ``c_k = sqrt(N) tau^(alpha-1) (pi^2 |k|^2 + tau^2)^(-alpha/2)``, ``c_0 = 0``, for
    ``k`` in ``{0..s_0-1} x {0..s_1-1} x ...``; ``N = prod(shape)``.

    Returns
    -------
    array of ``shape``.
    """
    shape = tuple(int(s) for s in shape)
    if not shape or min(shape) < 1:
        raise ConfigError(f"a random field needs a non-empty grid shape, got {shape}")
    if not tau > 0 or not alpha > 0:
        raise ConfigError(f"random field needs tau > 0 and alpha > 0, got tau={tau}, alpha={alpha}")
    k2 = sum(np.meshgrid(*[np.arange(s, dtype=np.float64) ** 2 for s in shape], indexing="ij"))
    amp = np.sqrt(np.prod(shape)) * tau ** (alpha - 1) * (np.pi**2 * k2 + tau**2) ** (-alpha / 2)
    amp[(0,) * len(shape)] = 0.0
    return amp


def neumann_grf(rng: np.random.Generator, shape: Sequence[int], alpha: float = 2.0, tau: float = 3.0) -> np.ndarray:
    """One sample of the zero-Neumann Gaussian random field on a grid of ``shape``.

    Draws ``xi = rng.standard_normal(shape)`` (exactly one draw of that size) and returns
    ``idctn(grf_amplitudes * xi, type=2, norm="ortho")``, float64 of ``shape``.
    """
    amp = grf_amplitudes(shape, alpha, tau)
    xi = rng.standard_normal(amp.shape)
    return scipy.fft.idctn(amp * xi, type=2, norm="ortho")


def grf_variance(shape: Sequence[int], alpha: float = 2.0, tau: float = 3.0) -> np.ndarray:
    """Exact pointwise variance of :func:`neumann_grf` on its grid.

    ``Var g(x_i) = sum_k c_k^2 prod_d D_d[i_d, k_d]^2`` with ``D_d`` the orthonormal
    inverse DCT-II matrix along axis ``d``; returns an array of ``shape``.
    """
    var = grf_amplitudes(shape, alpha, tau) ** 2
    for d, s in enumerate(var.shape):
        basis = scipy.fft.idct(np.eye(s), type=2, norm="ortho", axis=0)  # column k = mode k
        var = np.moveaxis(np.tensordot(basis**2, var, axes=([1], [d])), 0, d)
    return var


def threshold(field: np.ndarray, low: float, high: float) -> np.ndarray:
    """Two-valued pushforward ``psi(g) = high`` where ``g >= 0`` and ``low`` where ``g < 0``."""
    return np.where(field >= 0, high, low)


def periodic_grf_amplitudes(n: int, sigma: float = 25.0, tau: float = 5.0, gamma: float = 2.0) -> np.ndarray:
    """Amplitudes ``a_k = sqrt(2) sigma ((2 pi k)^2 + tau^2)^(-gamma/2)``, ``k = 1..n//2``.

    Mode-``k`` amplitude of :func:`periodic_grf` (FNO ``GRF1.m``,
    ``neuraloperator/neuraloperator:data_generation/burgers/GRF1.m``). Returns ``(n // 2,)``.
    """
    if n < 2:
        raise ConfigError(f"a periodic random field needs at least 2 grid points, got {n}")
    if not (sigma > 0 and tau > 0 and gamma > 0):
        raise ConfigError(f"periodic GRF needs sigma, tau, gamma > 0, got sigma={sigma}, tau={tau}, gamma={gamma}")
    k = np.arange(1, n // 2 + 1, dtype=np.float64)
    return np.sqrt(2.0) * sigma * ((2 * np.pi * k) ** 2 + tau**2) ** (-gamma / 2)


def periodic_grf(rng: np.random.Generator, n: int, sigma: float = 25.0, tau: float = 5.0,
                 gamma: float = 2.0) -> np.ndarray:
    """One sample of ``N(0, sigma^2 (-Laplace + tau^2)^(-gamma))`` on the periodic ``[0, 1)``.

    ``g(x_j) = sum_{k=1}^{n//2} a_k (xi_k cos(2 pi k x_j) + eta_k sin(2 pi k x_j))``,
    ``x_j = j / n``, ``a_k`` from :func:`periodic_grf_amplitudes`, ``xi, eta ~ N(0, 1)``
    (one draw of shape ``(2, n // 2)``: row 0 is ``xi``, row 1 ``eta``); mean zero, no
    constant mode. With ``sigma = 25, tau = 5, gamma = 2`` this is the FNO Burgers "R10"
    initial condition ``N(0, 625 (-Laplace + 25)^-2)`` (Li et al. 2021, arXiv 2010.08895).
    Evaluated exactly by one inverse real FFT; returns float64 ``(n,)``.
    """
    amp = periodic_grf_amplitudes(n, sigma, tau, gamma)
    xi, eta = rng.standard_normal((2, amp.size))
    # irfft(X)_j = (1/n) [X_0 + 2 Re sum_k X_k e^{2 pi i j k / n}] (Nyquist counted once)
    coef = np.zeros(n // 2 + 1, dtype=np.complex128)
    coef[1:] = 0.5 * n * amp * (xi - 1j * eta)
    if n % 2 == 0:  # cos(pi j) = (-1)^j; sin(pi j) = 0, so eta of the Nyquist mode drops out
        coef[-1] = n * amp[-1] * xi[-1]
    return np.fft.irfft(coef, n=n)


FORCINGS = ("grf", "white_noise")


def check_forcing(pde: str, forcing: str, alpha: float, tau: float) -> None:
    """ConfigError unless ``forcing`` is one of :data:`FORCINGS` with a valid GRF (``tau, alpha > 0``)."""
    if forcing not in FORCINGS:
        raise ConfigError(f"{pde} forcing must be 'grf' or 'white_noise', got {forcing!r}")
    if not (tau > 0 and alpha > 0):
        raise ConfigError(f"{pde} needs tau > 0 and alpha > 0, got tau={tau}, alpha={alpha}")


def random_forcing(rng: np.random.Generator, shape: Sequence[int], forcing: str, alpha: float, tau: float) -> np.ndarray:
    """A right-hand side of ``shape``: white noise ``N(0, 1)`` per point or the Neumann GRF."""
    if forcing == "white_noise":
        return rng.standard_normal(tuple(shape))
    return neumann_grf(rng, shape, alpha, tau)
