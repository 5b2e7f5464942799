"""Linear solvers: agreement with scipy's spsolve, residual histories, auto choice, errors."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import scipy.sparse.linalg as spla

from sciml.errors import ConfigError, SciMLError, UnknownNameError
from sciml.solvers import available, choose_method, darcy_operator, laplacian, solve
from sciml.solvers import linear
from sciml.testing import assert_monotone_ish, relative_residual

METHODS = ["direct", "cg", "pcg-jacobi", "pcg-ic", "pcg-amg", "pcg-mg", "gmres", "auto"]


def _darcy_system():
    g = np.random.default_rng(3).standard_normal((33, 33))
    A = darcy_operator(np.where(g >= 0, 12.0, 3.0))
    return A, np.ones(A.shape[0])


def _poisson_system():
    A = laplacian(31, 2)
    return A, np.random.default_rng(4).standard_normal(A.shape[0])


SYSTEMS = {"poisson": _poisson_system, "darcy": _darcy_system}


def test_available_lists_every_method():
    assert available()[:8] == ["auto", "direct", "cg", "pcg-jacobi", "pcg-ic", "pcg-amg", "pcg-mg", "gmres"]


@pytest.mark.parametrize("system", list(SYSTEMS))
@pytest.mark.parametrize("method", METHODS)
def test_solution_agrees_with_spsolve(method, system):
    A, b = SYSTEMS[system]()
    reference = spla.spsolve(A.tocsc(), b)
    result = solve(A, b, method=method, tol=1e-10)
    assert result.converged
    assert result.method == (choose_method(A) if method == "auto" else method)
    assert np.linalg.norm(result.x - reference) / np.linalg.norm(reference) < 1e-8
    assert result.residuals[-1] <= 1e-10
    assert result.residuals[-1] == pytest.approx(relative_residual(A, result.x, b), rel=1e-6)
    assert result.residuals[0] == pytest.approx(1.0)
    assert_monotone_ish(result.residuals)
    assert result.total_time == result.setup_time + result.solve_time > 0


def test_krylov_iteration_counts_order_by_preconditioner_strength():
    A, b = _darcy_system()
    its = {m: solve(A, b, method=m, tol=1e-8).iterations for m in ("cg", "pcg-jacobi", "pcg-ic", "pcg-amg")}
    assert its["pcg-amg"] < 15 < its["pcg-ic"] < 0.6 * its["pcg-jacobi"] and its["pcg-jacobi"] <= its["cg"], its


def test_amg_contraction_rate_is_grid_independent():
    rates = []
    for n in (31, 63, 127, 255):
        A = laplacian(n, 2)
        result = solve(A, np.ones(A.shape[0]), method="pcg-amg", tol=1e-10)
        rates.append((result.residuals[-1] / result.residuals[0]) ** (1 / result.iterations))
    # measured: 0.064, 0.066, 0.069, 0.073 per iteration (9 iterations to 1e-10 at every size)
    assert max(rates) < 0.1, rates
    assert max(rates) < 1.3 * min(rates), rates


def test_non_convergence_is_reported_not_raised():
    A, b = _poisson_system()
    result = solve(A, b, method="cg", tol=1e-10, maxiter=3)
    assert not result.converged
    assert result.iterations == 3 and len(result.residuals) == 4
    assert result.residuals[-1] > 1e-10


def test_exact_initial_guess_needs_no_iterations():
    A, b = _poisson_system()
    x = spla.spsolve(A.tocsc(), b)
    result = solve(A, b, method="pcg-jacobi", tol=1e-8, x0=x)
    assert result.converged and result.iterations == 0


def test_zero_right_hand_side_gives_zero_solution():
    A, _ = _poisson_system()
    for method in ("cg", "pcg-amg", "direct"):
        result = solve(A, np.zeros(A.shape[0]), method=method)
        assert result.converged and np.all(result.x == 0), method


def test_auto_picks_direct_small_and_amg_large_at_the_measured_crossover():
    assert choose_method(laplacian(100, 2)) == "direct"           # 10 000 unknowns
    assert choose_method(laplacian(120, 2)) == "pcg-amg"          # 14 400 unknowns
    assert choose_method(laplacian(9, 3)) == "direct"             # 729 unknowns, 7-point
    assert choose_method(laplacian(12, 3)) == "pcg-amg"           # 1 728 unknowns, 7-point
    upwind = sp.diags([np.ones(120 * 120 - 1)], [1])
    assert choose_method((laplacian(120, 2) + upwind).tocsr()) == "direct"    # nonsymmetric 2-D
    upwind = sp.diags([np.ones(12**3 - 1)], [1])
    assert choose_method((laplacian(12, 3) + upwind).tocsr()) == "gmres"      # nonsymmetric 3-D
    assert linear.DIRECT_MAX_2D == 12_000 and linear.DIRECT_MAX_3D == 1_000
    # the structured multigrid beyond its crossover, on grid stencils only
    assert choose_method(laplacian(190, 2)) == "pcg-amg" and linear.MG_MIN_2D == 40_000  # 36 100 unknowns
    assert choose_method(laplacian(201, 2)) == "pcg-mg"           # 40 401 unknowns
    assert choose_method(laplacian(50, 3)) == "pcg-mg" and choose_method(laplacian(49, 3)) == "pcg-amg"
    A = laplacian(201, 2)
    perm = np.random.default_rng(0).permutation(A.shape[0])  # the same matrix, its grid order lost
    assert choose_method(A[perm][:, perm].tocsr()) == "pcg-amg"


def test_gmres_solves_a_nonsymmetric_system():
    A, b = _poisson_system()
    A = (A + 40.0 * sp.diags([np.ones(A.shape[0] - 1)], [1])).tocsr()
    result = solve(A, b, method="gmres", tol=1e-9)
    assert result.converged and relative_residual(A, result.x, b) <= 1e-9
    np.testing.assert_allclose(result.x, spla.spsolve(A.tocsc(), b), rtol=1e-6, atol=1e-9)


def test_unknown_method_lists_valid_names():
    A, b = _poisson_system()
    valid = "valid solver methods are: auto, cg, dcdm-mg:RUN, dcdm:RUN, direct, fcg:RUN, fgmres:RUN, gmres, hints:RUN, nmg:RUN, pcg-amg, pcg-ic, pcg-jacobi"
    with pytest.raises(UnknownNameError, match=valid):
        solve(A, b, method="multigrid")


@pytest.mark.parametrize("kwargs, message", [
    ({"b": np.ones(5)}, "right-hand side must have 961 entries"),
    ({"x0": np.ones(3)}, "initial guess must have 961 entries"),
    ({"tol": 0.0}, "tol must be positive"),
    ({"maxiter": 0}, "maxiter must be at least 1"),
])
def test_bad_arguments_raise_config_error(kwargs, message):
    A, b = _poisson_system()
    args = {"b": b, **kwargs}
    with pytest.raises(ConfigError, match=message):
        solve(A, args.pop("b"), method="cg", **args)


def test_non_square_matrix_raises_config_error():
    with pytest.raises(ConfigError, match="square"):
        solve(sp.random(4, 5, density=0.5, format="csr"), np.ones(4))


def test_jacobi_rejects_a_matrix_without_positive_diagonal():
    A = sp.csr_matrix(np.array([[0.0, 1.0], [1.0, 2.0]]))
    with pytest.raises(ConfigError, match="positive diagonal"):
        solve(A, np.ones(2), method="pcg-jacobi")


# ----------------------------------------------------------------------------- incomplete Cholesky


@pytest.mark.parametrize("system", list(SYSTEMS))
def test_ichol0_reproduces_the_matrix_on_its_pattern(system):
    from sciml.solvers.incomplete import ichol0

    A, _ = SYSTEMS[system]()
    L = ichol0(A)
    lower = sp.tril(A).tocsr()
    assert (abs(sp.triu(L, 1)).sum() == 0) and L.nnz == lower.nnz  # zero fill, lower triangular
    product = (L @ L.T).tocsr()
    on_pattern = product.multiply(lower != 0) - lower
    assert abs(on_pattern).max() <= 1e-13 * abs(lower).max()  # (L L^T)_ij = A_ij on the pattern
    assert abs(product - A).max() > 1e-3  # and only there: IC(0) is not the exact factor in 2D


def test_ichol0_is_the_exact_cholesky_factor_without_fill():
    from sciml.solvers.incomplete import ichol0, triangular_solver

    A = sp.diags([-1.0, 2.5, -1.0], [-1, 0, 1], shape=(40, 40)).tocsr()  # tridiagonal: no fill exists
    L = ichol0(A).toarray()
    np.testing.assert_allclose(L, np.linalg.cholesky(A.toarray()), rtol=0, atol=1e-14)
    r = np.random.default_rng(0).standard_normal(40)
    np.testing.assert_allclose(triangular_solver(sp.csr_matrix(L))(r), np.linalg.solve(A.toarray(), r), rtol=1e-12)


def test_ichol0_breakdown_is_a_clear_error():
    A = sp.csr_matrix(np.array([[1.0, 2.0], [2.0, 1.0]]))  # symmetric, indefinite
    with pytest.raises(SciMLError, match="pivot .* <= 0 at row 1"):
        solve(A, np.ones(2), method="pcg-ic")


def test_breakdown_divergence_and_bad_systems_are_reported_not_returned_as_answers():
    """Issue 10: an indefinite matrix stops CG with a note (not converged, finite x whose true
    residual is reported); a singular matrix, NaN or Inf in the matrix, right-hand side or
    initial guess raise one clear DataError instead of returning garbage."""
    from sciml.errors import DataError

    n = 200
    b = np.random.default_rng(0).standard_normal(n)
    indefinite = sp.diags(np.linspace(-1, 1, n) + 1e-3).tocsr()
    res = solve(indefinite, b, method="cg", tol=1e-8, maxiter=500)
    assert not res.converged and np.all(np.isfinite(res.x))
    assert res.residual == pytest.approx(np.linalg.norm(b - indefinite @ res.x) / np.linalg.norm(b), rel=1e-12)
    assert "broke down" in res.notes[0] and "not symmetric positive definite" in res.notes[0]
    gm = solve(indefinite, b, method="gmres", tol=1e-8, maxiter=20)
    assert not gm.converged and np.all(np.isfinite(gm.x)) and gm.residual < 1.0

    singular = sp.diags([np.ones(n), -np.ones(n - 1)], [0, 1]).tolil()
    singular[n - 1, n - 1] = 0
    with pytest.raises(DataError, match="singular"):
        solve(singular.tocsr(), b, method="direct")
    spd = sp.diags(np.full(n, 2.0)).tocsr()
    nan_matrix = spd.copy()
    nan_matrix.data[3] = np.nan
    for method in ("cg", "direct", "gmres", "pcg-amg"):
        with pytest.raises(DataError, match="the matrix holds 1 NaN or Inf entry"):
            solve(nan_matrix, b, method=method)
    with pytest.raises(DataError, match="right-hand side holds 2 NaN or Inf entries"):
        solve(spd, np.where(np.arange(n) < 2, np.inf, b), method="cg")
    with pytest.raises(DataError, match="initial guess"):
        solve(spd, b, method="cg", x0=np.full(n, np.nan))
