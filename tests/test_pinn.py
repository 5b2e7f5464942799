"""PINN baseline (DeepXDE, PyTorch backend) on the mesh-free test problems: small nets, short budgets.

Numbers in comments were measured on the 2-core CPU box with one torch thread (float32).
"""

from __future__ import annotations

import math

import pytest
import torch

from sciml.errors import ConfigError
from sciml.meshfree.problems import Problem, get_problem
from sciml.meshfree.pinn import PINNResult, pinn_solve

pytestmark = pytest.mark.usefixtures("one_thread")

SMALL = dict(width=50, depth=3)


def _sin_pi(pde: str) -> Problem:
    return Problem(f"{pde}-sinpi", pde, 1, (0.0,), (1.0,), lambda x: torch.sin(math.pi * x[:, 0]),
                   n_col=64, freq_scale=1, iterations=1000)


def test_smooth_poisson_is_solved():
    calls = []
    r = pinn_solve(_sin_pi("poisson"), eval_every=100, progress=lambda *a: calls.append(a), **SMALL)
    assert isinstance(r, PINNResult) and r.iterations == 1000 and r.n_test == 300
    assert r.u_test.shape == (300,) and r.u_test.dtype == torch.float64
    # measured: rel L2 2.5e-3 after 1000 Adam steps (0.93 at step 0), ~7 s
    assert r.rel_l2 < 1e-2 and r.min_rel_l2 <= r.rel_l2
    assert [h[0] for h in r.history] == list(range(0, 1001, 100))
    assert calls == list(r.history)
    assert r.history[0][2] > 0.5  # the untrained network is far off: the solve did the work


def test_high_frequency_poisson_fails_as_in_the_paper():
    # u = sin(100 x) on [0, 2 pi], the paper's 400 collocation points: spectral bias. Measured
    # over 1000 steps (seeds 0, 1; also 2000 steps of the 100x4 default net) the error never went
    # below 0.99 while the loss stayed ~4.9e7; the paper's PINN also fails on this problem.
    r = pinn_solve(get_problem("poisson1d-sin100"), iterations=400, eval_every=100, **SMALL)
    assert math.isfinite(r.rel_l2) and math.isfinite(r.min_rel_l2)
    assert torch.isfinite(r.u_test).all()
    assert r.min_rel_l2 > 0.5
    # ... and it fails while training, not because nothing ran: the loss went down (measured
    # 4.99e7 -> 4.91e7 in 400 steps) and the network moved away from zero (max |u| ~ 5)
    assert r.history[-1][1] < 0.995 * r.history[0][1]
    assert float(r.u_test.abs().max()) > 0.1


def test_same_seed_same_result():
    p = _sin_pi("poisson")
    a, b = (pinn_solve(p, iterations=50, width=20, depth=2, seed=3) for _ in range(2))
    c = pinn_solve(p, iterations=50, width=20, depth=2, seed=4)
    assert a.rel_l2 == b.rel_l2 and torch.equal(a.u_test, b.u_test)
    assert c.rel_l2 != a.rel_l2


def test_2d_problem_runs_and_leaves_torch_defaults_alone():
    dtype = torch.get_default_dtype()
    r = pinn_solve(get_problem("poisson2d-sin6cos20"), iterations=100, n_col=20, eval_every=50,
                   n_test=30, width=30, depth=2, float64=True)
    assert r.u_test.shape == (900,) and r.n_test == 30
    assert math.isfinite(r.rel_l2) and [h[0] for h in r.history] == [0, 50, 100]
    assert torch.get_default_dtype() == dtype and torch.get_default_device().type == "cpu"


def test_allen_cahn_smooth_is_solved():
    r = pinn_solve(_sin_pi("allen_cahn"), iterations=800, eval_every=100, **SMALL)
    # measured: 0.93 at step 0, 3.0e-2 at step 480, 2e-3 at step 1000 (800 steps: ~5e-3)
    assert r.rel_l2 < 5e-2
    assert r.rel_l2 < r.history[0][2] / 10


@pytest.mark.parametrize("kwargs, word", [
    (dict(iterations=0), "iterations"),
    (dict(iterations=2.5), "iterations"),
    (dict(n_col=2), "n_col"),
    (dict(lr=-1.0), "lr"),
    (dict(activation="cosh"), "activation"),
    (dict(boundary_weight=0), "boundary_weight"),
])
def test_bad_input(kwargs, word):
    with pytest.raises(ConfigError, match=word) as info:
        pinn_solve(_sin_pi("poisson"), **kwargs)
    assert "\n" not in str(info.value)


def test_bad_problem():
    with pytest.raises(ConfigError, match="Problem"):
        pinn_solve("poisson1d-sin100")
