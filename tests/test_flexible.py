"""Flexible CG / GMRES and their fallback when the preconditioner stops helping."""

import numpy as np
import pytest
import scipy.sparse as sp
import scipy.sparse.linalg as spla

from sciml import datasets, solvers
from sciml.errors import UnknownNameError
from sciml.solvers.flexible import fcg, fgmres
from sciml.solvers.linear import classical_preconditioner


@pytest.fixture(scope="module")
def darcy():
    A, b, _ = datasets.system("darcy", resolution=34, seed=1)
    return A, b


def test_fcg_with_a_fixed_preconditioner_is_pcg(darcy):
    A, b = darcy
    for name in ("jacobi", "ic", "amg"):
        ours = fcg(A, b, classical_preconditioner(A, name), tol=1e-8, fallback=None)
        ref = solvers.solve(A, b, method=f"pcg-{name}", tol=1e-8)
        assert ours.converged and ours.residual <= 1e-8
        assert abs(ours.iterations - ref.iterations) <= 2, (name, ours.iterations, ref.iterations)
        assert np.allclose(ours.x, spla.spsolve(A.tocsc(), b), rtol=1e-6, atol=1e-9 * np.abs(ours.x).max())
    # no preconditioner: CG's iteration count
    plain = fcg(A, b, lambda r: r.copy(), tol=1e-8, fallback=None)
    assert abs(plain.iterations - solvers.solve(A, b, method="cg", tol=1e-8).iterations) <= 3


def test_fcg_stays_conjugate_with_a_changing_preconditioner(darcy):
    """A preconditioner that changes every call (random SPD diagonal scaling) still converges."""
    A, b = darcy
    rng = np.random.default_rng(0)
    ic = classical_preconditioner(A, "ic")

    def noisy(r):
        return ic(r * rng.uniform(0.5, 1.5, r.size))

    flexible = fcg(A, b, noisy, tol=1e-8, fallback=None, memory=20)
    assert flexible.converged and flexible.notes == ()
    assert flexible.iterations < 2 * solvers.solve(A, b, method="pcg-ic", tol=1e-8).iterations


def test_fgmres_on_a_nonsymmetric_system():
    n = 30
    L = solvers.laplacian(n, dim=2) * (n + 1) ** 2
    # upwind convection along x: nonsymmetric
    D = sp.kron(sp.eye(n), sp.diags([-np.ones(n - 1), np.ones(n)], [-1, 0])) * 20 * (n + 1)
    A = sp.csr_matrix(L + D)
    b = np.random.default_rng(2).standard_normal(n * n)
    ilu = spla.spilu(A.tocsc(), drop_tol=1e-3)
    res = fgmres(A, b, ilu.solve, tol=1e-10, fallback=None, restart=20)
    assert res.converged and np.linalg.norm(b - A @ res.x) <= 1e-10 * np.linalg.norm(b)
    assert res.iterations < 40
    # the recorded history ends at the true residual and never rises within a cycle
    assert res.residuals[-1] == pytest.approx(np.linalg.norm(b - A @ res.x) / np.linalg.norm(b))


@pytest.mark.parametrize("method", [fcg, fgmres])
def test_a_useless_preconditioner_falls_back_and_says_when(darcy, method):
    A, b = darcy
    rng = np.random.default_rng(3)
    res = method(A, b, lambda r: rng.standard_normal(r.size), tol=1e-8)
    assert res.converged and res.residual <= 1e-8
    assert len(res.notes) == 1 and "stopped helping" in res.notes[0] and "amg" in res.notes[0]
    switched = int(res.notes[0].split()[1].rstrip(":"))
    assert 10 <= switched <= 12
    assert res.iterations <= switched + 15  # AMG takes over: ~10 more iterations


@pytest.mark.parametrize("method", [fcg, fgmres])
def test_nan_preconditioner_falls_back_at_once(darcy, method):
    A, b = darcy
    res = method(A, b, lambda r: np.full(r.size, np.nan), tol=1e-8, fallback="ic")
    assert res.converged and "non-finite" in res.notes[0] and res.notes[0].startswith("iteration 0")


def test_without_fallback_a_useless_preconditioner_reports_non_convergence(darcy):
    A, b = darcy
    rng = np.random.default_rng(4)
    res = fcg(A, b, lambda r: rng.standard_normal(r.size), tol=1e-8, maxiter=30, fallback=None)
    assert not res.converged and res.iterations == 30 and res.notes == ()
    # exact line search: the energy error never grows
    x_star = spla.spsolve(A.tocsc(), b)
    assert (x_star @ (A @ x_star)) >= (res.x - x_star) @ (A @ (res.x - x_star))


def test_classical_preconditioner_names(darcy):
    A, b = darcy
    r = np.ones(A.shape[0])
    sgs = classical_preconditioner(A, "sgs")(r)
    # one symmetric Gauss-Seidel sweep from zero: (D + L) D^-1 (D + U) z = r
    D = sp.diags(A.diagonal())
    M = (D + sp.tril(A, -1)) @ sp.diags(1 / A.diagonal()) @ (D + sp.triu(A, 1))
    assert np.allclose(M @ sgs, r, rtol=1e-10)
    with pytest.raises(UnknownNameError, match="ilu"):
        classical_preconditioner(A, "ilu")
