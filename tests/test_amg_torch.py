"""``pcg-amg`` with the cycle in torch (``sciml.solvers.amg_torch``): pyamg's hierarchy, a device cycle.

Run here on the CPU device (the same code runs on CUDA): the torch V-cycle equals the scipy
reference (written from the smoothing polynomial's coefficients, not the Chebyshev recurrence) on
the same hierarchy, its smoother applies that polynomial, it is symmetric positive definite as a
dense matrix, PCG with it reaches the true residual, agrees with ``spsolve`` within the bound the
residual gives, keeps the iteration count flat as the grid is refined, and a block of vectors is
preconditioned as each of its columns.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse.linalg as spla
import torch

from sciml import datasets, solvers
from sciml.errors import DataError
from sciml.solvers import amg_torch, linear
from sciml.solvers.discretisation import darcy_operator

pytestmark = pytest.mark.usefixtures("one_thread")


def blocky_darcy(s: int = 33, contrast: float = 1e3):
    """``-div(a grad u)`` on an ``s x s`` node grid, ``a`` a checkerboard of 8 x 8 blocks in {1, contrast}."""
    a = np.where(np.add.outer(np.arange(s) // 8, np.arange(s) // 8) % 2 == 0, contrast, 1.0)
    return darcy_operator(a)


SYSTEMS = {"poisson": lambda: solvers.laplacian(31, 2), "darcy-1e3": blocky_darcy}


@pytest.mark.parametrize("name", SYSTEMS)
def test_torch_cycle_equals_the_scipy_cycle(name):
    A = SYSTEMS[name]()
    amg = amg_torch.TorchAMG(A, "cpu", max_coarse=20)
    assert len(amg.levels) >= 3  # at least three smoothed levels above the dense coarse one
    ref = amg_torch.ScipyAMGCycle.of(amg)
    F = np.random.default_rng(0).standard_normal((A.shape[0], 2))
    for f in (F[:, 0], F):  # a vector and a block
        want = ref(f)
        got = amg(torch.from_numpy(f)).numpy()
        assert got.shape == want.shape
        assert np.linalg.norm(got - want) <= 1e-12 * np.linalg.norm(want)
    # the reference is not trivially equal to anything: one degree more changes the cycle by O(1)
    other = amg_torch.ScipyAMGCycle(amg.hierarchy, amg.degree + 1, amg.ratio)(F[:, 0])
    assert np.linalg.norm(other - want[:, 0]) > 1e-2 * np.linalg.norm(want[:, 0])


@pytest.mark.parametrize("degree", [2, 3])
def test_smoother_applies_the_chebyshev_polynomial(degree):
    """On an eigenvector ``e`` of ``D^-1 A`` (eigenvalue ``t``) one smoothing of ``A x = A e`` from zero
    leaves the error ``p(t) e``; ``|p| <= 1`` on ``[0, 1]`` (where the spectrum lies) and ``|p| <=
    1 / T_k((hi + lo) / (hi - lo))`` on the smoothing interval (0.17 for degree 2, ratio 4)."""
    A = solvers.laplacian(15, 2)
    amg = amg_torch.TorchAMG(A, "cpu", max_coarse=10, degree=degree)
    p, q = amg_torch.smoothing_polynomial(degree, amg.ratio)
    assert p.degree() == degree and p(0.0) == pytest.approx(1.0, abs=1e-14)
    lo, hi = 1.0 / amg.ratio, 1.0
    bound = 1.0 / np.cosh(degree * np.arccosh((hi + lo) / (hi - lo)))
    t = np.linspace(0.0, 1.0, 2001)
    assert np.abs(p(t)).max() <= 1.0 + 1e-12
    inside = t[t >= lo]
    assert np.abs(p(inside)).max() == pytest.approx(bound, rel=1e-9)
    np.testing.assert_allclose(1.0 - t * q(t), p(t), atol=1e-12)

    dinv = 1.0 / amg_torch.l1_diagonal(A)
    S = np.sqrt(dinv)[:, None] * A.toarray() * np.sqrt(dinv)[None, :]  # similar to D^-1 A, symmetric
    lam, V = np.linalg.eigh(S)
    assert 0 < lam.min() and lam.max() <= 1.0 + 1e-12  # the l1-Jacobi bound that hi = 1 relies on
    E = np.sqrt(dinv)[:, None] * V  # eigenvectors of D^-1 A, as columns
    x = amg.smooth(0, torch.from_numpy(A @ E)).numpy()
    np.testing.assert_allclose(E - x, E * p(lam)[None, :], atol=1e-12 * np.abs(E).max())


@pytest.mark.parametrize("name", ["poisson", "darcy-1e3"])
def test_vcycle_is_symmetric_positive_definite(name):
    """The cycle as a dense matrix ``M`` (``M^-1`` of the brief) on a 15^2 grid, four levels: symmetric
    to round-off, positive definite, and the spectrum of ``M A`` in ``(0, 1]`` (smoothers that never
    amplify, exact coarse solve). Measured: ``eig(M A)`` in [0.919, 1] (Poisson), [0.897, 1] (Darcy);
    ``||M - M^T|| / ||M||`` 1.5e-16 and 1.1e-16."""
    A = solvers.laplacian(15, 2) if name == "poisson" else blocky_darcy(17)
    amg = amg_torch.TorchAMG(A, "cpu", max_coarse=10)
    assert len(amg.levels) == 3
    n = A.shape[0]
    M = amg(torch.eye(n, dtype=torch.float64)).numpy()
    assert np.linalg.norm(M - M.T) <= 1e-10 * np.linalg.norm(M)
    assert np.linalg.eigvalsh(0.5 * (M + M.T)).min() > 0
    L = np.linalg.cholesky(A.toarray())
    ev = np.linalg.eigvalsh(L.T @ (0.5 * (M + M.T)) @ L)  # similar to M A
    assert 0.85 < ev.min() and ev.max() <= 1.0 + 1e-10, (ev.min(), ev.max())


def test_block_application_equals_column_by_column():
    A = blocky_darcy()
    amg = amg_torch.TorchAMG(A, "cpu", max_coarse=20)
    R = torch.from_numpy(np.random.default_rng(1).standard_normal((3, A.shape[0])))
    block = amg(R.T)  # (n, 3), a non-contiguous view, as pcg hands it over
    assert block.shape == (A.shape[0], 3)
    for j in range(3):
        np.testing.assert_allclose(block[:, j].numpy(), amg(R[j]).numpy(), rtol=0,
                                   atol=1e-13 * float(block.abs().max()))


@pytest.mark.parametrize("problem", ["poisson", "darcy"])
def test_pcg_converges_grid_independently_and_agrees_with_spsolve(problem):
    """Measured (max_coarse 10, pyamg's default, so that 31^2 has a hierarchy: 5 / 6 / 7 levels):
    Poisson 31^2 / 63^2 / 127^2, random right-hand side: 5 / 6 / 6 iterations to 1e-8; Darcy 33^2 /
    65^2 / 129^2 (its right-hand side): 8 / 9 / 10. ``||x - x*|| <= ||b - A x|| / lambda_min(A)``
    held with a margin of 66-370x (Poisson) and 43-140x (Darcy)."""
    its = []
    for s in (31, 63, 127):
        if problem == "poisson":
            A = solvers.laplacian(s, 2)
            b = np.random.default_rng(s).standard_normal(A.shape[0])
        else:
            A, b, _ = datasets.system("darcy", resolution=s + 2)
        r = amg_torch.solve(A, b, 1e-8, 100, None, device="cpu", max_coarse=10)
        true = linear.relative_residual(A, r.x, b)
        assert r.converged and true <= 1e-8
        assert r.method == "pcg-amg" and r.residuals.shape == (r.iterations + 1,)
        assert r.residuals[-1] == pytest.approx(true, rel=1e-6)  # the last entry is the true residual
        assert r.residuals[0] == pytest.approx(1.0) and r.setup_time > 0 and r.solve_time > 0
        exact = spla.spsolve(A.tocsc(), b)
        lmin = spla.eigsh(A, k=1, sigma=0, which="LM", return_eigenvectors=False)[0]
        assert np.linalg.norm(r.x - exact) <= 1.001 * np.linalg.norm(A @ r.x - b) / lmin
        its.append(r.iterations)
    assert its[-1] <= its[0] + 3, its
    assert max(its) <= (8 if problem == "poisson" else 12), its


def test_solve_edge_cases():
    A = solvers.laplacian(10, 2)  # 100 unknowns, below max_coarse: the cycle is the exact solve
    b = np.random.default_rng(2).standard_normal(100)
    r = amg_torch.solve(A, b, 1e-10, 50, None, "cpu")
    assert r.iterations == 1 and r.converged and r.residual <= 1e-13
    x = r.x
    r = amg_torch.solve(A, b, 1e-10, 50, x, "cpu")  # started at the answer: no iteration
    assert r.iterations == 0 and r.converged and r.residuals.shape == (1,)
    r = amg_torch.solve(A, np.zeros(100), 1e-10, 50, None, "cpu")
    assert r.iterations == 0 and r.converged and not r.x.any()
    r = amg_torch.solve(A, b, 1e-12, 2, None, "cpu", max_coarse=10)  # capped: reported, not raised
    assert r.iterations == 2 and not r.converged and r.residual > 1e-12
    with pytest.raises(DataError, match="positive definite"):
        amg_torch.solve(-A, b, 1e-8, 50, None, "cpu")
