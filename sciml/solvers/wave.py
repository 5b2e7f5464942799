"""Wave equation ``u_tt = c^2 Laplace(u)`` on the unit square, ``u = 0`` on the boundary.

Two solvers on the node grid ``x_i = i / (s - 1)`` (boundary included):

* :func:`sine_series` - the exact solution for constant ``c`` and zero initial velocity from
  a sine-series initial state (the CNO "Wave" benchmark, Raonic et al. 2023, arXiv 2302.01178).
* :func:`leapfrog` - second-order central differences in time and the 5-point Laplacian of
  :func:`sciml.solvers.discretisation.laplacian` in space, for variable ``c(x, y)``
  (Strikwerda, *Finite Difference Schemes and Partial Differential Equations*, 2nd ed. 2004,
  ch. 8). Stable for ``dt <= h / (max c sqrt 2)``; it conserves the discrete energy of
  :func:`discrete_energy` exactly (to round-off).
"""

from __future__ import annotations

import dataclasses
import time

import numpy as np

from ..errors import ConfigError
from .discretisation import laplacian

ORDER = 2  # leapfrog: second order in space and time


def sine_series(a: np.ndarray, x: np.ndarray, y: np.ndarray, t: float | np.ndarray, c: float,
                decay: float) -> np.ndarray:
    """The CNO wave series, exact for constant ``c``.

    ``u(x, y, t) = (pi/K^2) sum_{i,j=1..K} a_ij (i^2+j^2)^(-r) sin(pi i x) sin(pi j y) cos(c pi t sqrt(i^2+j^2))``:
    the exact solution of ``u_tt = c^2 Laplace u`` with ``u = 0`` on the boundary of the unit
    square and ``u_t(., 0) = 0`` (each term is an eigenfunction with frequency
    ``c pi sqrt(i^2 + j^2)``); the CNO wave recipe with ``r = decay``.

    Parameters
    ----------
    a : ``(K, K)`` coefficients.
    x, y : 1-D node coordinates; nodes at 0 and 1 give exactly 0.
    t : one time or a 1-D array of times.

    Returns
    -------
    ``(len(x), len(y))`` for a scalar ``t``, else ``(len(t), len(x), len(y))``; float64.
    """
    a = np.asarray(a, dtype=np.float64)
    K = a.shape[0]
    k = np.arange(1, K + 1, dtype=np.float64)
    k2 = k[:, None] ** 2 + k[None, :] ** 2
    weights = np.pi / K**2 * a * k2 ** (-decay)
    sx, sy = _sines(k, x), _sines(k, y)
    ts = np.atleast_1d(np.asarray(t, dtype=np.float64))
    frames = np.stack([sx.T @ (weights * np.cos(c * np.pi * tk * np.sqrt(k2))) @ sy for tk in ts])
    return frames if np.ndim(t) else frames[0]


def _sines(k: np.ndarray, x: np.ndarray) -> np.ndarray:
    s = np.sin(np.pi * k[:, None] * np.asarray(x, dtype=np.float64)[None, :])
    # sin(pi k) is 1e-16, not 0, in floating point; the boundary value is exactly zero
    s[:, (np.asarray(x) == 0) | (np.asarray(x) == 1)] = 0.0
    return s


def cfl_step(h: float, c_max: float, final_time: float, cfl: float = 0.5, multiple: int = 1) -> tuple[float, int]:
    """Largest ``dt <= cfl h / (c_max sqrt 2)`` with ``n dt = T`` exactly and ``multiple | n``.

    Returns ``(dt, n)``.
    """
    if not (h > 0 and c_max > 0 and final_time > 0 and 0 < cfl <= 1 and multiple >= 1):
        raise ConfigError(f"need h, c_max, final_time > 0, 0 < cfl <= 1 and multiple >= 1, got "
                          f"h={h}, c_max={c_max}, final_time={final_time}, cfl={cfl}, multiple={multiple}")
    limit = cfl * h / (c_max * np.sqrt(2.0))
    n = multiple * int(np.ceil(final_time / (limit * multiple) - 1e-12))
    return final_time / n, n


def discrete_energy(u_new: np.ndarray, u_old: np.ndarray, dt: float, c: np.ndarray) -> float:
    """Leapfrog-conserved energy ``E^{n+1/2}`` on a full node grid (zero boundary).

    ``E = 1/2 ||(u^{n+1} - u^n) / dt||^2_{1/c^2} + 1/2 <grad_h u^{n+1}, grad_h u^n>``, sums
    times ``h^2`` over interior nodes, ``<grad_h v, grad_h w> = v^T (-Laplace_h) w``. For
    ``u_tt = c^2 Laplace u`` the operator ``-c^2 Laplace_h`` is self-adjoint in the ``1/c^2``
    inner product, which makes ``E`` exactly invariant under leapfrog.
    """
    s = u_new.shape[0]
    h = 1.0 / (s - 1)
    inner = (slice(1, -1),) * 2
    new, old, c2 = u_new[inner].reshape(-1), u_old[inner].reshape(-1), c[inner].reshape(-1) ** 2
    kinetic = np.sum((new - old) ** 2 / c2) / dt**2
    potential = new @ (laplacian(s - 2, 2) @ old)
    return 0.5 * h**2 * float(kinetic + potential)


@dataclasses.dataclass(frozen=True)
class WaveSolution:
    """Result of :func:`leapfrog`.

    u : ``(frames + 1, s, s)`` solution at ``t`` (frame 0 is ``u0``).
    t : ``(frames + 1,)`` times.
    dt, steps : time step and number of steps (``steps dt = T``).
    energy : ``(2,)`` discrete energy of the first and the last step (:func:`discrete_energy`).
    seconds : wall time.
    """

    u: np.ndarray
    t: np.ndarray
    dt: float
    steps: int
    energy: np.ndarray
    seconds: float

    @property
    def energy_drift(self) -> float:
        """``|E_last - E_first| / |E_first|`` (round-off for a stable run)."""
        return float(abs(self.energy[1] - self.energy[0]) / max(abs(self.energy[0]), 1e-300))


def leapfrog(u0: np.ndarray, c: np.ndarray, final_time: float, *, cfl: float = 0.5, frames: int = 1,
             steps: int | None = None) -> WaveSolution:
    """Solve ``u_tt = c^2 Laplace u``, ``u = 0`` on the boundary, ``u(0) = u0``, ``u_t(0) = 0``.

    ``u^{n+1} = 2 u^n - u^{n-1} + dt^2 c^2 Laplace_h u^n`` on the interior nodes, with the
    Taylor start ``u^1 = u^0 + dt^2 / 2 c^2 Laplace_h u^0`` (second order for zero velocity).

    Parameters
    ----------
    u0, c : ``(s, s)`` on the node grid ``x_i = i / (s - 1)`` (boundary values of ``u0`` are ignored).
    final_time : ``T > 0``.
    cfl : ``dt <= cfl h / (max c sqrt 2)`` (:func:`cfl_step`).
    frames : number of equal intervals at whose ends ``u`` is returned.
    steps : a fixed step count instead (a multiple of ``frames``; must respect the CFL limit 1).

    Returns
    -------
    WaveSolution with ``u`` of shape ``(frames + 1, s, s)``.
    """
    u0, c = np.asarray(u0, dtype=np.float64), np.asarray(c, dtype=np.float64)
    s = u0.shape[0]
    if u0.ndim != 2 or u0.shape != (s, s) or c.shape != u0.shape or s < 3:
        raise ConfigError(f"u0 and c must be square node grids of equal shape (s >= 3), got {u0.shape} and {c.shape}")
    if not (np.isfinite(c).all() and c.min() > 0):
        raise ConfigError(f"the wave speed must be positive and finite, got min {c.min()}")
    h = 1.0 / (s - 1)
    if steps is None:
        dt, steps = cfl_step(h, float(c.max()), final_time, cfl, frames)
    else:
        dt = final_time / steps
        if steps % frames or dt * c.max() * np.sqrt(2.0) / h > 1.0:
            raise ConfigError(f"steps={steps} must be a multiple of frames={frames} and keep dt within the CFL limit")
    start = time.perf_counter()
    n = s - 2
    minus_lap = laplacian(n, 2)
    coef = (dt**2) * c[1:-1, 1:-1].reshape(-1) ** 2
    inner = (slice(1, -1),) * 2
    old = u0[inner].reshape(-1).copy()
    now = old - 0.5 * coef * (minus_lap @ old)
    full = np.zeros((2, s, s))  # scratch full grids for the energy
    out = np.zeros((frames + 1, s, s))
    out[0][inner] = u0[inner]
    energies = []

    def energy(a: np.ndarray, b: np.ndarray) -> float:
        full[0][inner], full[1][inner] = a.reshape(n, n), b.reshape(n, n)
        return discrete_energy(full[0], full[1], dt, c)

    energies.append(energy(now, old))
    per_frame = steps // frames
    if per_frame == 1:
        out[1][inner] = now.reshape(n, n)
    for m in range(2, steps + 1):  # now = u^{m-1}, old = u^{m-2}
        old, now = now, 2.0 * now - old - coef * (minus_lap @ now)
        if m % per_frame == 0:
            out[m // per_frame][inner] = now.reshape(n, n)
    energies.append(energy(now, old))
    return WaveSolution(out, np.linspace(0.0, final_time, frames + 1), dt, steps, np.array(energies),
                        time.perf_counter() - start)
