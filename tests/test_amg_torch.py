"""``pcg-amg`` with the cycle in torch (``sciml.solvers.amg_torch``): pyamg's hierarchy, a device cycle.

Run here on the CPU device (the same code runs on CUDA): the torch V-cycle equals a scipy
implementation of the same cycle on the same hierarchy, is symmetric positive definite as a dense
matrix, keeps the iteration count nearly flat as the grid is refined, agrees with ``spsolve``,
and applies to a block of vectors as to each column.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse.linalg as spla
import torch

from sciml import datasets, solvers
from sciml.solvers import amg_torch, linear
from sciml.solvers.discretisation import darcy_operator

pytestmark = pytest.mark.usefixtures("one_thread")


def blocky_darcy(s: int = 33, contrast: float = 1e3):
    a = np.where(np.add.outer(np.arange(s) // 8, np.arange(s) // 8) % 2 == 0, contrast, 1.0)
    return darcy_operator(a)


@pytest.mark.parametrize("make", [lambda: solvers.laplacian(31, 2), blocky_darcy], ids=["poisson", "darcy-1e3"])
def test_torch_cycle_equals_the_scipy_cycle(make):
    A = make()
    amg = amg_torch.TorchAMG(A, "cpu", max_coarse=20)
    assert len(amg.levels) >= 3
    ref = amg_torch.ScipyAMGCycle(amg)
    f = np.random.default_rng(0).standard_normal(A.shape[0])
    want = ref(f)
    got = amg(torch.from_numpy(f)).numpy()
    assert np.linalg.norm(got - want) <= 1e-12 * np.linalg.norm(want)


def test_chebyshev_smoother_reduces_the_error_by_its_polynomial_bound():
    """On [lmax / 30, lmax] the Chebyshev polynomial of degree k is at most 1 / T_k((b + a) / (b - a))
    (about 0.87 for k = 3 here): every component of D^-1 A in that interval is reduced at least that much."""
    A = solvers.laplacian(15, 2)
    dinv = 1.0 / amg_torch._l1_diagonal(A)
    lmax = amg_torch._lambda_max(A, dinv)
    assert 0.5 < lmax <= 1.0
    S = np.diag(np.sqrt(dinv)) @ A.toarray() @ np.diag(np.sqrt(dinv))  # similar to D^-1 A, symmetric
    lam, V = np.linalg.eigh(S)
    # error propagation on eigenvector v of S: e = D^-1/2 v, one smoothing with f = A x_true
    a, b = lmax / amg_torch.RATIO, lmax
    bound = 1.0 / np.cosh(amg_torch.DEGREE * np.arccosh((b + a) / (b - a)))
    inside = np.flatnonzero((lam >= a) & (lam <= b))
    for j in inside[:: max(1, len(inside) // 12)]:
        e = np.sqrt(dinv) * V[:, j]
        x = amg_torch._chebyshev(A.dot, dinv, np.zeros_like(e), A @ e, lmax)
        factor = np.linalg.norm((e - x) / np.sqrt(dinv)) / np.linalg.norm(e / np.sqrt(dinv))
        assert factor <= bound * (1 + 1e-8), (lam[j], factor, bound)


def test_vcycle_is_symmetric_positive_definite():
    A = blocky_darcy(17)
    amg = amg_torch.TorchAMG(A, "cpu", max_coarse=10)
    n = A.shape[0]
    M = amg(torch.eye(n, dtype=torch.float64)).numpy()
    assert np.linalg.norm(M - M.T) <= 1e-11 * np.linalg.norm(M)
    assert np.linalg.eigvalsh(0.5 * (M + M.T)).min() > 0


def test_block_application_equals_column_by_column():
    A = blocky_darcy()
    amg = amg_torch.TorchAMG(A, "cpu")
    R = torch.from_numpy(np.random.default_rng(1).standard_normal((A.shape[0], 3)))
    block = amg(R)
    for j in range(3):
        torch.testing.assert_close(block[:, j], amg(R[:, j].contiguous()), rtol=0, atol=1e-13)


def test_pcg_converges_grid_independently_and_agrees_with_spsolve():
    """Measured: Darcy 33^2 / 65^2 / 129^2: 10 / 10 / 10 iterations to 1e-8 (degree 3)."""
    its = []
    for s in (33, 65, 129):
        A, b, _ = datasets.system("darcy", resolution=s)
        r = amg_torch.solve(A, b, 1e-8, 200, None, device="cpu")  # solve(..., "pcg-amg", device="cuda") on a GPU
        assert r.converged and linear.relative_residual(A, r.x, b) <= 1e-8
        exact = spla.spsolve(A.tocsc(), b)
        assert np.linalg.norm(r.x - exact) <= 1e-5 * np.linalg.norm(exact)
        assert r.method == "pcg-amg" and len(r.residuals) == r.iterations + 1
        its.append(r.iterations)
    assert max(its) <= 12 and its[-1] <= its[0] + 2, its
