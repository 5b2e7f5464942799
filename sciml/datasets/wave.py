"""2-D wave equation ``u_tt = c^2 Laplace(u)`` on the unit square, ``u = 0`` on the boundary.

Grid: ``s = resolution`` nodes per axis, ``x_i = i / (s - 1)``, boundary included (the CNO
loaders' ``linspace(0, 1, s)``); ``subsample = r`` stores ``[::r, ::r]``. Zero initial velocity.

``mode="cno"`` (default): the CNO "Wave" benchmark (Raonic et al. 2023, arXiv 2302.01178),
``u(x, y, t) = (pi/K^2) sum_{i,j<=K} a_ij (i^2+j^2)^(-r) sin(pi i x) sin(pi j y) cos(c pi t sqrt(i^2+j^2))``
with ``a_ij ~ U(-1, 1)``, ``K = modes`` (24), ``r = decay`` (1), ``c`` (0.1), ``T = final_time``
(5); evaluated exactly (:func:`sciml.solvers.wave.sine_series`), so ``residual = 0``.
Inputs ``u0``, outputs ``u``.

``mode="variable"``: a variable speed ``c(x, y)`` and an initial state of Gaussian bumps,
solved by leapfrog with the 5-point Laplacian (:func:`sciml.solvers.wave.leapfrog`), in the
spirit of Poseidon's Wave-Layer / Wave-Gauss (Herde et al. 2024, arXiv 2405.19101; their
absorbing boundaries are not reproduced). Speed models (``speed``):

* ``"layers"``: ``n ~ U{2..layers}`` horizontal layers (interfaces at sorted ``U(0, 1)``
  heights ``y``), each with speed ``c * U(speed_range)``;
* ``"grf"``: ``c * exp(speed_sigma * g)``, ``g`` the zero-Neumann GRF of
  :func:`.random_fields.neumann_grf` (``alpha``, ``tau``; its pointwise std is about 0.29
  for the defaults 2, 3).

``u0`` is a sum of ``n ~ U{1..bumps}`` bumps ``A exp(-|x - m|^2 / (2 w^2))``, ``A ~ U(-1, 1)``,
``w ~ U(bump_width)``, centre ``m ~ U(5w, 1 - 5w)^2`` (so a bump is below 4e-6 on the boundary).
``dt`` is the largest step with ``dt max(c) sqrt 2 / h <= cfl`` that divides ``T`` (and the frame
interval). Inputs ``u0`` and ``c``, outputs ``u``; ``residual`` = relative drift of the
conserved discrete energy (round-off; it checks stability, not the discretisation error).

``trajectory = m > 0`` stores ``u`` as ``(sample, t, x, y)`` at ``linspace(0, T, m + 1)``.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from ..errors import ConfigError, UnknownNameError
from ..solvers.wave import leapfrog, sine_series
from .generators import Generator, Solved, register
from .random_fields import neumann_grf

MODES = ("cno", "variable")
SPEED_MODELS = ("grf", "layers")


@dataclasses.dataclass(frozen=True)
class WaveConfig:
    """Wave generator parameters (defaults: CNO wave benchmark, in-distribution).

    resolution : nodes per axis ``s`` incl. the boundary (>= 3); subsample : stored stride (divides ``s - 1``).
    mode : ``"cno"`` (exact sine series) or ``"variable"`` (leapfrog with variable speed).
    c : wave speed (cno) or reference speed (variable) (0.1).
    final_time : ``T`` (5).
    modes, decay : ``K`` (24) and ``r`` (1) of the sine series (cno; OOD set: 32, 0.85).
    speed : ``"layers"`` or ``"grf"`` (variable).
    layers, speed_range : most layers (4) and the range of ``c_layer / c`` ((1, 3)).
    speed_sigma, alpha, tau : log-amplitude (1) and GRF parameters (2, 3) of the grf speed.
    bumps, bump_width : most Gaussian bumps in ``u0`` (4) and the range of their width ((0.04, 0.08)).
    cfl : Courant number ``dt max(c) sqrt(2) / h`` bound (0.5; stability needs <= 1).
    trajectory : 0 stores ``u(T)``; ``m > 0`` stores ``m + 1`` equally spaced frames incl. 0 and T.
    """

    resolution: int = 64
    subsample: int = 1
    mode: str = "cno"
    c: float = 0.1
    final_time: float = 5.0
    modes: int = 24
    decay: float = 1.0
    speed: str = "layers"
    layers: int = 4
    speed_range: tuple[float, float] = (1.0, 3.0)
    speed_sigma: float = 1.0
    alpha: float = 2.0
    tau: float = 3.0
    bumps: int = 4
    bump_width: tuple[float, float] = (0.04, 0.08)
    cfl: float = 0.5
    trajectory: int = 0

    def __post_init__(self):
        if self.mode not in MODES:
            raise UnknownNameError("wave mode", self.mode, list(MODES))
        if self.speed not in SPEED_MODELS:
            raise UnknownNameError("wave speed model", self.speed, list(SPEED_MODELS))
        if self.resolution < 3:
            raise ConfigError(f"wave resolution must be at least 3 nodes per axis, got {self.resolution}")
        if self.subsample < 1 or (self.resolution - 1) % self.subsample:
            ok = [r for r in range(1, self.resolution) if (self.resolution - 1) % r == 0][:8]
            raise ConfigError(
                f"subsample {self.subsample} must divide resolution - 1 = {self.resolution - 1} so the stored grid "
                f"keeps the x = 1 boundary; use one of {ok}"
            )
        self._check_positive("c", "final_time", "speed_sigma", "alpha", "tau")
        if self.modes < 1 or self.layers < 2 or self.bumps < 1:
            raise ConfigError(f"wave needs modes >= 1, layers >= 2 and bumps >= 1, got modes={self.modes}, "
                              f"layers={self.layers}, bumps={self.bumps}")
        if self.mode == "cno" and self.resolution - 1 <= self.modes:
            raise ConfigError(f"wave cno mode needs resolution >= modes + 2 = {self.modes + 2} nodes to resolve "
                              f"its {self.modes} sine modes, got {self.resolution}")
        if not (np.isfinite(self.decay) and self.decay >= 0):
            raise ConfigError(f"wave decay r must be a non-negative number, got {self.decay}")
        if not 0 < self.cfl <= 1:
            raise ConfigError(f"cfl must lie in (0, 1] (leapfrog is unstable beyond 1), got {self.cfl}")
        lo, hi = self.speed_range
        if not 0 < lo <= hi:
            raise ConfigError(f"speed_range must be two numbers 0 < low <= high, got {self.speed_range}")
        lo, hi = self.bump_width
        if not 0 < lo <= hi < 0.1:
            raise ConfigError(f"bump_width must be two numbers 0 < low <= high < 0.1 (a bump must fit "
                              f"inside the square), got {self.bump_width}")
        if self.trajectory < 0:
            raise ConfigError(f"trajectory must be 0 (final state only) or a number of frames >= 1, "
                              f"got {self.trajectory}")

    def _check_positive(self, *names: str) -> None:
        for name in names:
            value = getattr(self, name)
            if not (np.isfinite(value) and value > 0):
                raise ConfigError(f"wave {name} must be a positive number, got {value}")


@register("wave")
class Wave(Generator):
    """2-D wave: inputs ``u0`` (and ``c`` in variable mode) ``(s, s)``, outputs ``u`` ``(s, s)`` or ``(m+1, s, s)``."""

    Config = WaveConfig
    outputs = ("u",)
    grid = "node, boundary included"

    @property
    def inputs(self) -> tuple[str, ...]:  # type: ignore[override]
        return ("u0",) if self.config.mode == "cno" else ("u0", "c")

    def coords(self) -> dict[str, np.ndarray]:
        x = np.linspace(0.0, 1.0, self.config.resolution)
        return {"x": x, "y": x.copy()}

    def times(self) -> np.ndarray:
        """Stored output times: ``[T]`` or ``linspace(0, T, trajectory + 1)``."""
        c = self.config
        return np.linspace(0.0, c.final_time, c.trajectory + 1) if c.trajectory else np.array([c.final_time])

    def variables(self) -> dict[str, tuple[str, ...]]:
        out = ("t", "x", "y") if self.config.trajectory else ("x", "y")
        return {**{v: ("x", "y") for v in self.inputs}, "u": out}

    def stored_coords(self) -> dict[str, np.ndarray]:
        spatial = super().stored_coords()
        return {"t": self.times(), **spatial} if self.config.trajectory else spatial

    def solver_attrs(self) -> dict[str, Any]:
        if self.config.mode == "cno":
            return {"name": "exact sine series", "tol": 0.0, "residual": "0 (exact solution)"}
        return {"name": "leapfrog, 5-point Laplacian", "cfl": self.config.cfl,
                "residual": "relative drift of the conserved discrete energy"}

    def draw_inputs(self, rng: np.random.Generator) -> dict[str, np.ndarray]:
        c = self.config
        x = self.coords()["x"]
        if c.mode == "cno":
            a = rng.uniform(-1.0, 1.0, (c.modes, c.modes))
            return {"u0": sine_series(a, x, x, 0.0, c.c, c.decay)}
        speed = self._speed(rng, x)
        return {"u0": self._bumps(rng, x), "c": speed}

    def _speed(self, rng: np.random.Generator, x: np.ndarray) -> np.ndarray:
        c = self.config
        if c.speed == "grf":
            return c.c * np.exp(c.speed_sigma * neumann_grf(rng, (x.size, x.size), c.alpha, c.tau))
        n = int(rng.integers(2, c.layers + 1))
        interfaces = np.sort(rng.uniform(0.0, 1.0, n - 1))
        speeds = c.c * rng.uniform(*c.speed_range, n)
        column = speeds[np.searchsorted(interfaces, x, side="right")]  # layer index of each height y
        return np.broadcast_to(column[None, :], (x.size, x.size)).copy()

    def _bumps(self, rng: np.random.Generator, x: np.ndarray) -> np.ndarray:
        c = self.config
        n = int(rng.integers(1, c.bumps + 1))
        width = rng.uniform(*c.bump_width, n)
        amplitude = rng.uniform(-1.0, 1.0, n)
        centre = rng.uniform(5 * width[:, None], 1 - 5 * width[:, None], (n, 2))
        X, Y = np.meshgrid(x, x, indexing="ij")
        u0 = sum(a * np.exp(-((X - m[0]) ** 2 + (Y - m[1]) ** 2) / (2 * w**2))
                 for a, w, m in zip(amplitude, width, centre))
        u0[[0, -1], :] = 0.0  # the Dirichlet data; the bumps are below 4e-6 there
        u0[:, [0, -1]] = 0.0
        return u0

    def solve(self, inputs: dict[str, np.ndarray]) -> Solved:
        c = self.config
        u0 = np.asarray(inputs["u0"], dtype=np.float64)
        shape = (c.resolution,) * 2
        if u0.shape != shape:
            raise ConfigError(f"wave u0 must have shape {shape}, got {u0.shape}")
        if c.mode == "cno":
            return self._solve_series(u0)
        speed = np.asarray(inputs["c"], dtype=np.float64)
        result = leapfrog(u0, speed, c.final_time, cfl=c.cfl, frames=max(c.trajectory, 1))
        u = result.u if c.trajectory else result.u[-1]
        return Solved({"u": u}, result.energy_drift, "leapfrog")

    def _solve_series(self, u0: np.ndarray) -> Solved:
        # a_ij are recovered from u0 by the type-I sine transform (exact while resolution - 1 > K,
        # which the config enforces), so a stored sample can be re-solved from its u0 alone
        import scipy.fft

        c = self.config
        m = c.resolution - 1
        coef = scipy.fft.dstn(u0[1:-1, 1:-1], type=1) / m**2  # b_ij of u0 = sum b_ij sin(pi i x) sin(pi j y)
        k = np.arange(1, c.modes + 1, dtype=np.float64)
        k2 = k[:, None] ** 2 + k[None, :] ** 2
        a = coef[: c.modes, : c.modes] / (np.pi / c.modes**2 * k2 ** (-c.decay))
        x = self.coords()["x"]
        times = self.times()
        u = sine_series(a, x, x, times if c.trajectory else c.final_time, c.c, c.decay)
        return Solved({"u": u}, 0.0, "exact sine series")
