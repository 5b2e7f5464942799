"""Test problems of the mesh-free ML solvers (GP-HM, PINN): Fang et al., ICLR 2024, Table 1 protocol.

Every problem has a manufactured solution ``u``: the source ``f`` is computed from ``u`` by
automatic differentiation and the Dirichlet data is ``u`` itself on the boundary. PDEs (``d``
the dimension, derivatives along every axis):

* ``poisson``: ``Laplace u = f`` (``u'' = f`` in 1-D), as the paper writes it;
* ``allen_cahn``: ``Laplace u + u (u^2 - 1) = f``;
* ``advection``: ``beta u_x + u_y = 0`` (``f = 0``), ``beta = 200``, on the unit square with
  ``u = sin(x - beta y)`` (Dirichlet data on the whole boundary).

Errors are relative L2 on ``test_points`` uniform points per dimension (the paper: 300).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable

import torch

from ..errors import UnknownNameError

TWO_PI = 2 * math.pi
TEST_POINTS = 300


@dataclasses.dataclass(frozen=True)
class Problem:
    """One test PDE. ``exact(x)`` maps points ``(N, dim)`` (float64 tensor) to ``(N,)``.

    ``n_col`` collocation points per dimension, ``freq_scale`` (the paper's F: initial mixture
    frequencies ``linspace(0, 1, Q) * F``) and ``iterations`` (Adam steps) are the paper's settings.
    """

    name: str
    pde: str
    dim: int
    lower: tuple[float, ...]
    upper: tuple[float, ...]
    exact: Callable[[torch.Tensor], torch.Tensor]
    n_col: int
    freq_scale: float
    iterations: int
    beta: float = 0.0
    description: str = ""

    def source(self, x: torch.Tensor) -> torch.Tensor:
        """``f(x)`` ``(N,)`` from the exact solution by autodiff (float64)."""
        x = x.detach().to(torch.float64).requires_grad_(True)
        u = self.exact(x)
        grad = torch.autograd.grad(u.sum(), x, create_graph=True)[0]
        if self.pde == "advection":
            return (self.beta * grad[:, 0] + grad[:, 1]).detach()
        lap = sum(torch.autograd.grad(grad[:, k].sum(), x, retain_graph=True)[0][:, k] for k in range(self.dim))
        if self.pde == "allen_cahn":
            lap = lap + u * (u**2 - 1)
        return lap.detach()

    def residual(self, u: torch.Tensor, derivatives: dict[str, torch.Tensor]) -> torch.Tensor:
        """The operator applied to a candidate: ``derivatives`` holds ``u_xx``-style second
        derivatives (``"xx"``, ``"yy"``) and first derivatives (``"x"``, ``"y"``) at the points."""
        if self.pde == "advection":
            return self.beta * derivatives["x"] + derivatives["y"]
        lap = derivatives["xx"] + (derivatives["yy"] if self.dim == 2 else 0)
        return lap + u * (u**2 - 1) if self.pde == "allen_cahn" else lap

    def grid(self, n: int) -> list[torch.Tensor]:
        """``n`` uniform points per dimension, both ends included: one float64 vector per axis."""
        return [torch.linspace(lo, hi, n, dtype=torch.float64) for lo, hi in zip(self.lower, self.upper)]

    def points(self, n: int) -> torch.Tensor:
        """The tensor grid of :meth:`grid` as points ``(n^dim, dim)`` (``ij`` order)."""
        axes = self.grid(n)
        return torch.stack(torch.meshgrid(*axes, indexing="ij"), -1).reshape(-1, self.dim)

    def on_boundary(self, x: torch.Tensor) -> torch.Tensor:
        """Boolean ``(N,)``: points on the boundary of the box."""
        lo = torch.tensor(self.lower, dtype=x.dtype)
        hi = torch.tensor(self.upper, dtype=x.dtype)
        tol = 1e-12 * float((hi - lo).max())
        return ((x - lo).abs() <= tol).any(1) | ((x - hi).abs() <= tol).any(1)


def relative_l2(pred: torch.Tensor, exact: torch.Tensor) -> float:
    """``||pred - exact|| / ||exact||`` over all points."""
    return float(torch.linalg.vector_norm(pred - exact) / torch.linalg.vector_norm(exact))


def _p1(name, pde, u, lo, hi, n_col, F, its, desc):
    return Problem(name, pde, 1, (lo,), (hi,), lambda x: u(x[:, 0]), n_col, F, its, description=desc)


def _sum_multiscale(t):
    return torch.sin(t) + 0.1 * torch.sin(20 * t) + 0.05 * torch.sin(100 * t)


def _ac2d(t):
    return torch.sin(t) + 0.1 * torch.sin(20 * t) + torch.cos(100 * t)


PROBLEMS: dict[str, Problem] = {p.name: p for p in [
    _p1("poisson1d-sin100", "poisson", lambda t: torch.sin(100 * t), 0.0, TWO_PI, 400, 20, 100_000, "u = sin(100x) on [0, 2pi]"),
    _p1("poisson1d-xsin200", "poisson", lambda t: t * torch.sin(200 * t), 0.0, TWO_PI, 900, 50, 100_000, "u = x sin(200x) on [0, 2pi]"),
    _p1("poisson1d-sin6cos100", "poisson", lambda t: torch.sin(6 * t) * torch.cos(100 * t), 0.0, TWO_PI, 400, 20, 100_000,
        "u = sin(6x) cos(100x) on [0, 2pi]"),
    _p1("poisson1d-multiscale", "poisson", _sum_multiscale, 0.0, 1.0, 900, 30, 1_000_000,
        "u = sin x + 0.1 sin 20x + 0.05 sin 100x on [0, 1]"),
    _p1("poisson1d-sin500", "poisson", lambda t: torch.sin(500 * t) - 2 * (t - 0.5) ** 2, 0.0, 1.0, 400, 100, 1_000_000,
        "u = sin(500x) - 2 (x - 0.5)^2 on [0, 1]"),
    _p1("allencahn1d-sin100", "allen_cahn", lambda t: torch.sin(100 * t), 0.0, TWO_PI, 400, 20, 100_000,
        "u'' + u (u^2 - 1) = f, u = sin(100x) on [0, 2pi]"),
    _p1("allencahn1d-sin6cos100", "allen_cahn", lambda t: torch.sin(6 * t) * torch.cos(100 * t), 0.0, TWO_PI, 400, 20,
        100_000, "u'' + u (u^2 - 1) = f, u = sin(6x) cos(100x) on [0, 2pi]"),
    Problem("poisson2d-sin100", "poisson", 2, (0.0, 0.0), (TWO_PI, TWO_PI),
            lambda x: torch.sin(100 * x[:, 0]) * torch.sin(100 * x[:, 1]), 400, 20, 1_000_000,
            description="u = sin(100x) sin(100y) on [0, 2pi]^2"),
    Problem("poisson2d-sin6cos20", "poisson", 2, (0.0, 0.0), (TWO_PI, TWO_PI),
            lambda x: torch.sin(6 * x[:, 0]) * torch.cos(20 * x[:, 0]) + torch.sin(6 * x[:, 1]) * torch.cos(20 * x[:, 1]),
            200, 20, 1_000_000, description="u = sin(6x) cos(20x) + sin(6y) cos(20y) on [0, 2pi]^2"),
    Problem("allencahn2d-multiscale", "allen_cahn", 2, (0.0, 0.0), (1.0, 1.0),
            lambda x: _ac2d(x[:, 0]) * _ac2d(x[:, 1]), 400, 30, 3_000_000,
            description="Laplace u + u (u^2 - 1) = f, u = (sin x + 0.1 sin 20x + cos 100x)(same in y) on [0, 1]^2"),
    Problem("advection2d", "advection", 2, (0.0, 0.0), (1.0, 1.0),
            lambda x: torch.sin(x[:, 0] - 200.0 * x[:, 1]), 200, 40, 1_000_000, beta=200.0,
            description="200 u_x + u_y = 0, u = sin(x - 200 y) on [0, 1]^2"),
]}


def get_problem(name: str) -> Problem:
    """The test problem ``name`` (see :data:`PROBLEMS`)."""
    if name not in PROBLEMS:
        raise UnknownNameError("mesh-free test problem", name, list(PROBLEMS))
    return PROBLEMS[name]
