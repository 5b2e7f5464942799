"""DCDM: spectrally biased training vectors, the network, the conjugate-direction iteration,
training without solutions and application at twice the training resolution (2-D, 3-D with obstacles)."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
import scipy.sparse.linalg as spla
import torch

from sciml import datasets, solvers
from sciml.errors import CheckpointError, ConfigError
from sciml.solvers import laplacian
from sciml.learned.dcdm import (DCDMConfig, DCDMNet, Direction, dcdm_loss, dcdm_solve, fluid_rows, load_dcdm,
                                parameter_count, train_dcdm, _torch_sparse)
from sciml.learned.spectral_rhs import SpectralRHS, eigenvalue_quantile, jackson_step_coefficients

pytestmark = pytest.mark.usefixtures("one_thread")


# ----------------------------------------------------------------------------- training vectors


def test_spectral_bias_matches_the_reference_weighting():
    """Eigen-coordinates below the 55 % eigenvalue quantile carry 9x the amplitude (81x the energy)."""
    A = laplacian(24, dim=2)
    gen = SpectralRHS(A, degree=80)
    lam, U = np.linalg.eigh(A.toarray())
    assert gen.cut == pytest.approx(np.quantile(lam, 0.55), rel=1e-12)  # exact for small matrices
    V = gen.draw(3000, np.random.default_rng(0))
    assert np.allclose(np.linalg.norm(V, axis=0), 1.0)
    energy = ((U.T @ V) ** 2).mean(axis=1)
    low, high = energy[lam < 0.8 * gen.cut], energy[lam > 1.2 * gen.cut]
    assert low.mean() / high.mean() == pytest.approx(81.0, rel=0.1)
    # flat within each band: every eigenvector of a band gets the same weight
    assert low.std() / low.mean() < 0.1 and high.std() / high.mean() < 0.15


def test_step_polynomial_and_quantile_estimate():
    coef = jackson_step_coefficients(cut=0.3, lo=0.0, hi=1.0, degree=120)
    lam = np.linspace(0, 1, 2001)
    t = 2 * lam - 1
    p = np.polynomial.chebyshev.chebval(t, coef)
    away = np.abs(lam - 0.3) > 0.05
    assert np.max(np.abs(p - (lam < 0.3))[away]) < 0.02
    assert p.min() > -0.02 and p.max() < 1.02  # Jackson damping: no Gibbs overshoot
    # stochastic Lanczos quadrature against the exact 3-D Laplacian spectrum
    n = 30
    h = 1 / (n + 1)
    l1 = 4 / h**2 * np.sin(np.arange(1, n + 1) * np.pi * h / 2) ** 2
    exact = np.quantile((l1[:, None, None] + l1[None, :, None] + l1[None, None, :]).ravel(), 0.55)
    est = eigenvalue_quantile(laplacian(n, dim=3), 0.55, np.random.default_rng(0))
    assert est == pytest.approx(exact, rel=0.01)


def test_drawing_vectors_holds_no_basis():
    """Memory of a draw is a few blocks of N x k, not a Lanczos basis of thousands of vectors."""
    A = laplacian(32, dim=3)  # 32,768 unknowns
    gen = SpectralRHS(A, degree=60)
    n, k = A.shape[0], 10
    tracemalloc.start()
    gen.draw(k, np.random.default_rng(1))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 8 * n * k * 8  # eight float64 blocks; the reference's basis would be 10,000 vectors


# ----------------------------------------------------------------------------- network


def test_network_matches_the_papers_parameter_counts_and_runs_on_any_grid():
    assert parameter_count(DCDMNet(DCDMConfig(dim=3, mask_channel=False, levels=1))) == 97_457  # paper: ~97k
    assert parameter_count(DCDMNet(DCDMConfig(dim=3, pre=6, mid=10, post=6, mask_channel=False, levels=1))) == 152_881  # ~153k
    net = DCDMNet(DCDMConfig(dim=2))
    assert [net.n_levels((n, n)) for n in (4, 8, 9, 32, 64)] == [1, 1, 2, 3, 4]
    for shape in [(17, 17), (32, 32), (21, 33)]:
        r = torch.randn(2, 1, *shape)
        fluid = (torch.rand(2, 1, *shape) > 0.2).float()
        q = net(r, fluid)
        assert q.shape == r.shape and torch.isfinite(q).all()
        assert torch.all(q[fluid == 0] == 0)
    net3 = DCDMNet(DCDMConfig(dim=3))
    x = torch.randn(1, 1, 9, 9, 9)
    fast = net3(x, torch.ones_like(x))
    assert fast.shape == (1, 1, 9, 9, 9)
    # the direct oneDNN convolutions agree with torch's own
    import sciml.learned.dcdm as dcdm

    monkey = pytest.MonkeyPatch()
    monkey.setattr(dcdm, "_ONEDNN", False)
    slow = net3(x, torch.ones_like(x))
    monkey.undo()
    assert torch.allclose(fast, slow, rtol=1e-5, atol=1e-6 * slow.abs().max().item())
    with pytest.raises(ConfigError, match="even"):
        DCDMConfig(pre=3)


def test_loss_is_the_residual_after_an_exact_line_search():
    A = laplacian(12, dim=2)
    rng = np.random.default_rng(2)
    b, q = rng.standard_normal((A.shape[0], 3)), rng.standard_normal((A.shape[0], 3))
    expected = np.mean([np.linalg.norm(b[:, j] - A @ q[:, j] * (q[:, j] @ b[:, j]) / (q[:, j] @ A @ q[:, j])) ** 2
                        for j in range(3)])
    got = dcdm_loss(_torch_sparse(A, "cpu", torch.float64), torch.from_numpy(b), torch.from_numpy(q))
    assert got.item() == pytest.approx(expected, rel=1e-12)
    # the exact inverse makes the loss vanish; the loss is invariant to the scale of q
    exact = torch.from_numpy(spla.spsolve(A.tocsc(), b))
    At = _torch_sparse(A, "cpu", torch.float64)
    assert dcdm_loss(At, torch.from_numpy(b), exact).item() < 1e-20
    assert dcdm_loss(At, torch.from_numpy(b), 7.5 * torch.from_numpy(q)).item() == pytest.approx(expected, rel=1e-12)


# ----------------------------------------------------------------------------- iteration


def test_iteration_with_identity_directions_is_conjugate_gradients():
    """q = r, A-orthogonalised against the last two directions, is CG in exact arithmetic."""
    A = laplacian(31, dim=2)
    b = np.random.default_rng(3).standard_normal(A.shape[0])
    ours = dcdm_solve(A, b, lambda r: r.copy(), tol=1e-8)
    cg = solvers.solve(A, b, method="cg", tol=1e-8)
    assert ours.converged and abs(ours.iterations - cg.iterations) <= 2
    k = min(40, cg.iterations)
    assert np.allclose(ours.residuals[:k], cg.residuals[:k], rtol=1e-5)


def test_iteration_with_the_exact_inverse_takes_one_step():
    A = laplacian(20, dim=2)
    b = np.random.default_rng(4).standard_normal(A.shape[0])
    lu = spla.splu(A.tocsc())
    res = dcdm_solve(A, b, lambda r: 3.0 * lu.solve(r), tol=1e-10)
    assert res.iterations == 1 and res.residual < 1e-12


# ----------------------------------------------------------------------------- training and use


@pytest.fixture(scope="module")
def poisson_run(tmp_path_factory):
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("dcdm") / "run"
    result = train_dcdm(out, pde="poisson", resolution=32, steps=400, progress=False, log_every=100)
    return out, result


def test_trained_at_32_beats_incomplete_cholesky_at_64(poisson_run):
    out, result = poisson_run
    from sciml.runs import read_metrics

    rows = read_metrics(out)
    assert rows[-1]["val_loss"] < 0.1 * rows[0]["train_loss"] and rows[-1]["val_loss"] < 0.02
    its = {}
    for n in (32, 64):
        A, b, _ = datasets.system("poisson", resolution=n, seed=7)
        d = solvers.solve(A, b, method=f"dcdm:{out}", tol=1e-6)
        assert d.converged and d.residual <= 1e-6
        its[n] = (d.iterations, solvers.solve(A, b, method="pcg-ic", tol=1e-6).iterations,
                  solvers.solve(A, b, method="cg", tol=1e-6).iterations)
    # measured: DCDM 13 -> 22 iterations, IC(0)-PCG 29 -> 58, CG 85 -> 172
    assert its[64][0] < 0.6 * its[64][1]
    assert its[64][0] / its[32][0] < 0.9 * its[64][2] / its[32][2]


def test_saved_network_round_trips(poisson_run):
    out, _ = poisson_run
    net, meta = load_dcdm(out)
    net2, _ = load_dcdm(out)
    x = torch.randn(1, 1, 40, 40)
    assert torch.equal(net(x, torch.ones_like(x)), net2(x, torch.ones_like(x)))
    assert meta["kind"] == "dcdm" and meta["train"]["resolution"] == 32


def test_3d_obstacles_trained_coarse_applied_at_twice_the_resolution(tmp_path):
    out = tmp_path / "run3d"
    train_dcdm(out, pde="poisson3d", resolution=8, steps=150, n_systems=2, progress=False, log_every=50)
    A, b, info = datasets.system("poisson3d", resolution=16, seed=9)
    fluid = fluid_rows(A)
    assert not fluid.all() and np.array_equal(~fluid, info["inputs"]["mask"].reshape(-1) > 0.5)
    d = solvers.solve(A, b, method=f"dcdm:{out}", tol=1e-6)
    cg = solvers.solve(A, b, method="cg", tol=1e-6)
    # measured: 18 DCDM iterations against CG's 61 on unseen obstacles
    assert d.converged and d.iterations < 0.5 * cg.iterations
    assert np.all(d.x[~fluid] == 0)


def test_errors_name_the_problem(tmp_path, poisson_run):
    A = laplacian(8, dim=2)
    b = np.ones(A.shape[0])
    with pytest.raises(ConfigError, match="dcdm:RUN"):
        solvers.solve(A, b, method="dcdm")
    with pytest.raises(CheckpointError, match="not a run directory"):
        solvers.solve(A, b, method=f"dcdm:{tmp_path / 'nothing'}")
    out, _ = poisson_run
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "run.json").write_text((out / "run.json").read_text())
    (bad / "weights.safetensors").write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="not a readable safetensors"):
        load_dcdm(bad)
    with pytest.raises(ConfigError, match="already holds a run"):
        train_dcdm(out, steps=1, progress=False)
    assert "dcdm:RUN" in solvers.available()
    direction = Direction(load_dcdm(out)[0], (7, 7), np.ones(49, bool))
    assert direction(np.ones(49)).shape == (49,)


def test_cli_trains_dcdm_and_solves_with_it(tmp_path, capsys):
    from test_cli import assert_one_line_error, run_cli

    out = tmp_path / "cli"
    code, stdout, err = run_cli(["train", "dcdm", "--pde", "poisson3d", "-s", 8, "-p", "dim=2", "--steps", 150,
                                 "--out", out, "--no-progress", "--option", "log_every=50"], capsys)
    assert code in (0, None), err
    assert f"dcdm:{out}" in stdout
    code, stdout, err = run_cli(["solve", "poisson3d", "-s", 16, "-p", "dim=2", "--method", f"cg,dcdm:{out}",
                                 "--tol", "1e-6", "--plot", tmp_path / "res.png"], capsys)
    assert code in (0, None), err
    rows = [ln for ln in stdout.splitlines() if "dcdm:" in ln or "│ cg" in ln]
    assert len(rows) == 2 and all("yes" in r for r in rows)
    assert (tmp_path / "res.png").stat().st_size > 1000
    code, _, err = run_cli(["solve", "poisson", "-s", 8, "--method", f"dcdm:{tmp_path / 'missing'}"], capsys)
    assert_one_line_error(code, err, "not a run directory")
    code, _, err = run_cli(["train", "dcdm", "--pde", "poisson", "--out", out, "--steps", 1], capsys)
    assert_one_line_error(code, err, "already holds a run")
    code, _, err = run_cli(["train", "dcdm", "--pde", "poisson", "--out", tmp_path / "x", "--option", "stepz=3"], capsys)
    assert_one_line_error(code, err, "did you mean 'steps'")
    code, _, err = run_cli(["train", "fno", "--data", "x.h5", "--out", tmp_path / "y", "--pde", "poisson"], capsys)
    assert_one_line_error(code, err, "unknown key 'pde' in training options")
    code, _, err = run_cli(["train", "dcdm", "--pde", "poisson", "-s", 8, "--set", "dim=3", "--out", tmp_path / "z"], capsys)
    assert_one_line_error(code, err, "the network is 3-D but poisson is 2-D")
    assert not (tmp_path / "z").exists()
    code, _, err = run_cli(["evaluate", out], capsys)
    assert_one_line_error(code, err, "is a dcdm solver", f"dcdm:{out}")
    (out / "run.json").write_text("{not json")
    code, _, err = run_cli(["evaluate", out], capsys)
    assert_one_line_error(code, err, "run.json is damaged")
