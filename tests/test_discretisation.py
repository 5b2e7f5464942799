"""Discretisations: exact stencils against slow references, SPD, observed order on manufactured solutions."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from sciml.errors import ConfigError
from sciml.solvers import ORDER, darcy_operator, diffusion_operator, laplacian, solve
from sciml.solvers.discretisation import pad_boundary
from sciml.testing import assert_convergence_order, observed_order


def _second_difference(n: int) -> sp.csr_matrix:
    return sp.diags([2.0 * np.ones(n), -np.ones(n - 1), -np.ones(n - 1)], [0, 1, -1]) * (n + 1) ** 2


def test_laplacian_equals_kronecker_sum_of_1d_second_differences():
    n = 7
    T, identity = _second_difference(n), sp.identity(n)
    two_d = sp.kron(T, identity) + sp.kron(identity, T)
    three_d = sp.kron(two_d, identity) + sp.kron(sp.kron(identity, identity), T)
    assert abs(laplacian(n, 2) - two_d).max() == 0.0
    assert abs(laplacian(n, 3) - three_d).max() < 1e-9


def _darcy_by_loops(a: np.ndarray) -> np.ndarray:
    """Row-by-row assembly of the arithmetic-mean 5-point scheme (obviously right, slow)."""
    s0, s1 = a.shape
    h = (1 / (s0 - 1), 1 / (s1 - 1))
    m1 = s1 - 2
    dense = np.zeros(((s0 - 2) * m1,) * 2)
    for i in range(1, s0 - 1):
        for j in range(1, s1 - 1):
            row = (i - 1) * m1 + (j - 1)
            for di, dj, hh in ((1, 0, h[0]), (-1, 0, h[0]), (0, 1, h[1]), (0, -1, h[1])):
                k = 0.5 * (a[i, j] + a[i + di, j + dj]) / hh**2
                dense[row, row] += k
                if 1 <= i + di <= s0 - 2 and 1 <= j + dj <= s1 - 2:
                    dense[row, (i + di - 1) * m1 + (j + dj - 1)] -= k
    return dense


def test_darcy_operator_matches_loop_assembly_on_rectangular_grid():
    a = 1.0 + np.random.default_rng(0).random((7, 9)) * 11.0
    A = darcy_operator(a)
    reference = _darcy_by_loops(a)
    assert A.shape == reference.shape == (35, 35)
    np.testing.assert_allclose(A.toarray(), reference, rtol=1e-13, atol=1e-10)


def _two_valued(s: int) -> np.ndarray:
    return np.where(np.random.default_rng(1).random((s, s)) > 0.5, 12.0, 3.0)


@pytest.mark.parametrize("build", [lambda: laplacian(6, 2), lambda: laplacian(4, 3),
                                   lambda: darcy_operator(_two_valued(9))])
def test_operator_is_symmetric_positive_definite(build):
    A = build().toarray()
    assert np.array_equal(A, A.T)
    assert np.linalg.eigvalsh(A).min() > 1.0  # the smallest eigenvalue is near 2 pi^2 a_min


def test_constant_coefficient_darcy_operator_is_the_laplacian():
    s = 10
    np.testing.assert_allclose(darcy_operator(np.full((s, s), 2.5)).toarray(),
                               2.5 * laplacian(s - 2, 2).toarray(), rtol=1e-13)


def _bubble(x):
    """p(x) = x (1 - x) e^x and its second derivative."""
    return x * (1 - x) * np.exp(x), -x * (x + 3) * np.exp(x)


def _poisson_error(n: int, dim: int) -> float:
    """Max nodal error of -Laplace u = f with u = p(x) q(y) [q(z)], q(t) = t (1 - t)."""
    x = np.arange(1, n + 1) / (n + 1)
    grids = np.meshgrid(*([x] * dim), indexing="ij")
    p, p2 = _bubble(grids[0])
    factors = [t * (1 - t) for t in grids[1:]]
    u = p * np.prod(factors, axis=0)
    # -Laplace(p q ...) = -p'' q ... + 2 p sum over the other factors of their products
    f = -p2 * np.prod(factors, axis=0)
    for k in range(len(factors)):
        others = np.prod([factors[j] for j in range(len(factors)) if j != k], axis=0) if len(factors) > 1 else 1.0
        f = f + 2.0 * p * others
    result = solve(laplacian(n, dim), f.reshape(-1), method="direct" if dim == 2 else "cg", tol=1e-13)
    return float(np.abs(result.x - u.reshape(-1)).max())


def test_poisson_2d_converges_at_declared_order():
    ns = [7, 15, 31, 63]
    errors = [_poisson_error(n, 2) for n in ns]
    assert_convergence_order([1 / (n + 1) for n in ns], errors, ORDER, tol=0.1)


def test_poisson_3d_converges_at_declared_order():
    ns = [5, 11, 23]
    errors = [_poisson_error(n, 3) for n in ns]
    assert_convergence_order([1 / (n + 1) for n in ns], errors, ORDER, tol=0.1)


def _darcy_error(s: int) -> float:
    """-div(a grad u) = f with a = exp(x - y), u = sin(pi x) sin(pi y), nodal max error."""
    x = np.linspace(0, 1, s)
    X, Y = np.meshgrid(x, x, indexing="ij")
    a = np.exp(X - Y)
    u = np.sin(np.pi * X) * np.sin(np.pi * Y)
    ux = np.pi * np.cos(np.pi * X) * np.sin(np.pi * Y)
    uy = np.pi * np.sin(np.pi * X) * np.cos(np.pi * Y)
    f = -a * (ux - uy - 2 * np.pi**2 * u)  # a_x = a, a_y = -a
    result = solve(darcy_operator(a), f[1:-1, 1:-1].reshape(-1), method="direct")
    return float(np.abs(pad_boundary(result.x.reshape(s - 2, s - 2)) - u).max())


def test_variable_coefficient_darcy_converges_at_declared_order():
    sizes = [9, 17, 33, 65]
    errors = [_darcy_error(s) for s in sizes]
    assert errors[-1] < 1e-3
    assert_convergence_order([1 / (s - 1) for s in sizes], errors, ORDER, tol=0.1)


def test_convergence_assertion_reports_the_observed_slope():
    hs = [0.1, 0.05, 0.025]
    with pytest.raises(AssertionError, match=r"observed order 1\.000, expected 2"):
        assert_convergence_order(hs, [h for h in hs], 2, tol=0.1)
    assert observed_order(hs, [h**2 for h in hs]) == pytest.approx(2.0)


def test_face_coefficients_of_wrong_shape_raise_config_error():
    with pytest.raises(ConfigError, match="must have shape"):
        diffusion_operator([np.ones((5, 4)), np.ones((4, 4))], 0.2)
    with pytest.raises(ConfigError, match="at least 3 nodes"):
        darcy_operator(np.ones((2, 5)))
    with pytest.raises(ConfigError, match="positive"):
        diffusion_operator([np.ones((5, 4)), np.ones((4, 5))], -1.0)
