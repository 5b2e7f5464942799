"""GP-HM (Fang et al., ICLR 2024): Kronecker algebra against dense torch, interpolation of the
training grid, analytic kernel derivatives against finite differences and a known function,
the paper's headline case poisson1d-sin100 and config validation."""

from __future__ import annotations

import math

import pytest
import torch

from sciml.errors import ConfigError
from sciml.meshfree.gp import GPHM, KroneckerGP, KroneckerUSolve, SpectralMixture, gp_solve, mode_product
from sciml.meshfree.problems import get_problem

pytestmark = pytest.mark.usefixtures("one_thread")

F64 = torch.float64


def _factor(kind: str, n: int, lo: float, hi: float, freq: float, jitter: float = 1e-6):
    x = torch.linspace(lo, hi, n, dtype=F64)
    m = SpectralMixture(kind, 30, freq, hi - lo)
    with torch.no_grad():
        return x, m, m.matrix(x, x) + jitter * torch.eye(n, dtype=F64)


@pytest.mark.parametrize("kind", ["gm", "stm"])
def test_kronecker_solve_logdet_quad_match_dense(kind):
    _, _, k1 = _factor(kind, 7, 0.0, 1.0, 3.0, jitter=1e-2)
    _, _, k2 = _factor(kind, 9, -1.0, 2.0, 2.0, jitter=1e-2)
    gp = KroneckerGP([k1, k2])
    dense = torch.kron(k1, k2)
    U = torch.randn(7, 9, dtype=F64, generator=torch.Generator().manual_seed(0))
    ref = torch.linalg.solve(dense, U.reshape(-1))
    got = gp.solve(U).reshape(-1)
    assert torch.linalg.vector_norm(got - ref) / torch.linalg.vector_norm(ref) < 1e-10
    sign, logdet = torch.linalg.slogdet(dense)
    assert sign > 0 and abs(float(gp.logdet() - logdet)) <= 1e-10 * abs(float(logdet))
    quad = U.reshape(-1) @ ref
    assert abs(float(gp.quad(U) - quad)) <= 1e-10 * abs(float(quad))
    assert torch.allclose(gp.matmul(U).reshape(-1), dense @ U.reshape(-1), rtol=1e-12, atol=1e-12)
    chol = torch.kron(gp.chol[0], gp.chol[1])
    assert torch.allclose(gp.chol_matmul(U).reshape(-1), chol @ U.reshape(-1), rtol=1e-12, atol=1e-12)
    assert torch.allclose(gp.chol_solve(gp.chol_matmul(U)), U, rtol=1e-9, atol=1e-9)
    # a per-axis matrix along axis 0 is kron(M, I)
    M = torch.randn(5, 7, dtype=F64)
    assert torch.allclose(mode_product(M, U, 0).reshape(-1), torch.kron(M, torch.eye(9, dtype=F64)) @ U.reshape(-1))


@pytest.mark.parametrize("name,kind", [("poisson1d-sin100", "gm"), ("poisson1d-sin100", "stm"),
                                       ("poisson2d-sin6cos20", "gm"), ("advection2d", "stm")])
def test_interpolant_reproduces_its_training_grid(name, kind):
    problem = get_problem(name)
    model = GPHM(problem, kind, n_col=40)
    with torch.no_grad():
        U = problem.exact(problem.points(40)).reshape((40,) * problem.dim)
        model.U.copy_(U)
        pred = model.predict(problem.grid(40)).reshape(U.shape)   # k(X, X) K^{-1} U, K jittered
        gp = model.kron()
        # exactly: k(X, X) = K - jitter I per axis, so pred = (prod_d (K_d - j I) K_d^{-1}) U
        expect = U
        for d in range(problem.dim):
            expect = expect - model.jitter * gp.solve(expect, axes=[d])
    assert float((pred - expect).abs().max()) < 1e-8 * float(U.abs().max())
    assert float((pred - U).abs().max()) < 1e-3


@pytest.mark.parametrize("kind", ["gm", "stm"])
@pytest.mark.parametrize("order", [1, 2])
def test_analytic_kernel_derivatives_match_finite_differences(kind, order):
    m = SpectralMixture(kind, 30, 20.0, 2 * math.pi)
    with torch.no_grad():
        m.log_w.copy_(torch.linspace(-2, 1, 30, dtype=F64))
        m.log_scale.add_(torch.linspace(-1, 1, 30, dtype=F64))
        t = torch.linspace(-0.7, 0.7, 141, dtype=F64) + 1e-3      # steps over t = 0 too
        h = 1e-5
        fd = (m(t + h, order - 1) - m(t - h, order - 1)) / (2 * h)
        exact = m(t, order)
    assert float((fd - exact).abs().max()) < 1e-6 * float(exact.abs().max())
    # k'' at 0 is finite for Matern-5/2 too (-5/(3 l^2) envelope term), and k' is odd, k'' even
    with torch.no_grad():
        assert torch.allclose(m(-t, order), (-1) ** order * m(t, order), rtol=1e-12, atol=1e-9)


@pytest.mark.parametrize("kind", ["gm", "stm"])
def test_derivative_matrices_differentiate_a_smooth_function(kind):
    # U = sin(3x) on 80 points of [0, 2 pi]: (K'' K^{-1}) U = -9 sin 3x, (K' K^{-1}) U = 3 cos 3x
    x, m, K = _factor(kind, 80, 0.0, 2 * math.pi, 2.0, jitter=1e-10)
    U = torch.sin(3 * x)
    with torch.no_grad():
        alpha = KroneckerGP([K]).solve(U)
        d2 = m.matrix(x, x, 2) @ alpha
        d1 = m.matrix(x, x, 1) @ alpha
        toe = m.toeplitz(80, float(x[1] - x[0]), 2)
    inner = (x > 1.0) & (x < 2 * math.pi - 1.0)
    assert float((d2 + 9 * U)[inner].abs().max()) < 1e-4 * 9
    assert float((d1 - 3 * torch.cos(3 * x))[inner].abs().max()) < 1e-4 * 3
    assert torch.allclose(toe, m.matrix(x, x, 2), rtol=1e-10, atol=1e-8)


# Measured (1 thread, paper protocol: Adam lr 1e-2, Q = 30, 400 points, F = 20, StM): rel. L2
# 5.8e-2 @ 500, 3.28e-2 @ 1000, 2.0e-2 @ 1500, 1.29e-2 @ 2000, 7.6e-3 @ 3000, 6.35e-3 @ 3500 steps
# (~33 ms/step unloaded). 1e-3 is NOT reached within a test-sized budget (the paper runs 1e5 steps),
# so this test pins the measured 1000-step error instead.
# the paper's protocol (400 collocation points, F = 20, Q = 30, Adam lr 1e-2) with U updated by its
# exact minimiser after each kernel step (u_update="auto" -> "newton" in 1-D); budget: 150 steps,
# about 5 s on one unloaded CPU thread (the paper: 1e5 Adam steps)
HEADLINE_STEPS = 150


@pytest.mark.parametrize("kind", ["stm", "gm"])
def test_headline_poisson1d_sin100_reaches_1e3(kind):
    problem = get_problem("poisson1d-sin100")
    seen = []
    result = gp_solve(problem, kernel=kind, iterations=HEADLINE_STEPS if kind == "stm" else 250, eval_every=50,
                      progress=lambda step, loss, err: seen.append(step))
    assert result.n_col == 400 and result.kernel == kind
    assert result.u_test.shape == (300,)
    assert len(result.history) == len(seen) and seen[-1] == result.iterations
    assert result.min_rel_l2 <= result.rel_l2 + 1e-15
    # measured: stm 1.8e-3 / 5.5e-4 / 9.6e-5 at 50 / 100 / 150 steps; gm 6.2e-3 / 2.0e-3 / 1.3e-3 /
    # 3.5e-5 at 50 / 100 / 150 / 200
    assert result.min_rel_l2 <= 1e-3, result.history


def test_adam_on_u_follows_the_paper_and_lowers_the_error():
    """u_update="adam" is the paper's optimiser (Adam on U and the kernel): slower, but it works
    (measured 5.8e-2 after 500 steps, 3.3e-2 after 1000, 6.4e-3 after 3500)."""
    result = gp_solve(get_problem("poisson1d-sin100"), kernel="stm", iterations=200, eval_every=50,
                      u_update="adam")
    errors = [err for _, _, err in result.history]
    assert errors[-1] < 0.6 * errors[0] and result.min_rel_l2 < 0.5


def test_allen_cahn_gauss_newton():
    result = gp_solve(get_problem("allencahn1d-sin100"), kernel="stm", iterations=150, eval_every=50)
    assert result.min_rel_l2 <= 1e-3, result.history


def _dense_u_minimiser(model):
    """The U-subproblem solved densely: ``(K^-1 + w_b P + w_e J^T J) U = w_b P g + w_e J^T t`` with
    ``K = kron(K_d)``, ``J = sum_d c_d kron(.., K_d^(k) K_d^-1, ..)`` (+ the Gauss-Newton diagonal
    at the current U for Allen-Cahn), built independently of KroneckerUSolve."""
    p, n = model.problem, model.n_col
    order, coef = (1, [p.beta, 1.0]) if p.pde == "advection" else (2, [1.0] * p.dim)
    eye = torch.eye(n, dtype=F64)
    K = J = None
    for d in range(p.dim):
        m, h = model.mixtures[d], model.h[d]
        Kd = m.toeplitz(n, h) + model.jitter * eye
        Dd = coef[d] * torch.linalg.solve(Kd, m.toeplitz(n, h, order).T).T
        if K is None:
            K, J = Kd, Dd
        else:
            K, J = torch.kron(K, Kd), torch.kron(J, eye) + torch.kron(torch.eye(J.shape[0], dtype=F64), Dd)
    mask = model.boundary.reshape(-1).to(F64)
    g = torch.zeros(n**p.dim, dtype=F64)
    g[model.boundary.reshape(-1)] = model.g
    t = model.f.reshape(-1)
    if p.pde == "allen_cahn":
        u = model.U.detach().reshape(-1)
        J, t = J + torch.diag(3 * u**2 - 1), t + 2 * u**3
    w_b = model.llk_weight * (1.0 if model.reduction == "sum" else 1.0 / float(mask.sum()))
    w_e = 1.0 if model.reduction == "sum" else 1.0 / n**p.dim
    A = torch.linalg.inv(K) + w_b * torch.diag(mask) + w_e * J.T @ J
    return torch.linalg.solve(0.5 * (A + A.T), w_b * mask * g + w_e * J.T @ t).reshape(model.U.shape)


@pytest.mark.parametrize("name", ["poisson2d-sin6cos20", "poisson2d-sin100", "allencahn2d-multiscale", "advection2d",
                                  "poisson1d-sin100"])
@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_kronecker_u_solve_matches_dense_solve(name, reduction):
    # 8 x 8 grid (24 points in 1-D), a coarse F so that the kernel is not pure aliasing, jitter 1e-6;
    # U holds a random linearisation point (used by Allen-Cahn). Measured agreement: 1e-15 - 2e-12.
    problem = get_problem(name)
    model = GPHM(problem, "stm", n_col=8 if problem.dim == 2 else 24, reduction=reduction, freq_scale=2.0)
    with torch.no_grad():
        model.U.copy_(torch.randn(model.U.shape, dtype=F64, generator=torch.Generator().manual_seed(1)))
        ref = _dense_u_minimiser(model)
        U, its = KroneckerUSolve(model).solve(None, tol=1e-13, maxiter=500)
    assert 0 < its < 60     # measured 6-28 preconditioned CG iterations
    assert float(torch.linalg.vector_norm(U - ref) / torch.linalg.vector_norm(ref)) < 1e-9
    if problem.dim == 1:    # the 1-D dense newton_u is the same minimiser
        with torch.no_grad():
            model.newton_u()
        assert torch.allclose(model.U.detach(), ref, rtol=1e-8, atol=1e-8 * float(ref.abs().max()))


def test_kronecker_u_update_solves_a_2d_poisson_problem():
    """2-D Poisson u = sin6x cos20x + sin6y cos20y on a 64^2 grid (F = 5, the grid's Nyquist
    frequency; reduction="sum"): U by its exact minimiser each step (Kronecker PCG), Adam on the
    kernel. Measured (1 thread): rel. L2 5.5e-2 @ 10, 4.9e-3 @ 20 steps, about 1.5 s; Adam on U
    (the paper's optimiser) stays at ~1 over the same budget."""
    problem = get_problem("poisson2d-sin6cos20")
    result = gp_solve(problem, kernel="stm", n_col=64, iterations=20, eval_every=10, freq_scale=5.0,
                      reduction="sum")
    assert result.u_test.shape == (300 * 300,) and result.cg_iterations > 0
    assert result.min_rel_l2 <= 1e-2, result.history
    adam = gp_solve(problem, kernel="stm", n_col=64, iterations=20, eval_every=10, freq_scale=5.0,
                    reduction="sum", u_update="adam")
    assert adam.min_rel_l2 > 0.5, adam.history


def _monotone(history):
    losses = [loss for _, loss, _ in history]
    return all(b <= a for a, b in zip(losses, losses[1:]))


def test_monotone_kernel_step_keeps_advection2d_converged():
    """advection2d (200 u_x + u_y = 0, u = sin(x - 200 y)) on a 96^2 grid (3 points per wavelength
    along y; F = 40, StM, sums): the first U solve converged (~1700 CG iterations), then 10 kernel
    steps, each re-solving U with at most 100 CG iterations and kept only if the loss does not
    increase (kernel_step="monotone", the default for 2-D advection and Allen-Cahn). Budget: ~11 s on
    one CPU thread with the contrast run below (20 s cap).
    Measured: rel. L2 8.2e-3 after the first solve, 7.9e-3 after 10 steps (3.0e-2 at step 2), loss
    monotone, ~8 s. The plain Adam step at fixed U (kernel_step="adam", U then inexact) took it to
    0.13 within 3 steps (checked below, ~4 s) and to 4-7 at 128^2."""
    problem = get_problem("advection2d")
    result = gp_solve(problem, kernel="stm", n_col=96, iterations=10, eval_every=2, freq_scale=40.0,
                      reduction="sum", cg_first=3000)
    assert _monotone(result.history), result.history
    assert result.rel_l2 <= 1e-2 and result.min_rel_l2 <= 1e-2, result.history
    plain = gp_solve(problem, kernel="stm", n_col=96, iterations=3, eval_every=1, freq_scale=40.0,
                     reduction="sum", cg_first=3000, kernel_step="adam")
    assert plain.rel_l2 > 5e-2, plain.history     # measured 8.2e-3, 2.1e-2, 0.13 after steps 1-3


def test_allencahn2d_damped_gauss_newton_with_monotone_kernel_steps():
    """allencahn2d-multiscale (Laplace u + u (u^2 - 1) = f, u = (sin x + 0.1 sin 20x + cos 100x)(..y))
    on a 64^2 grid (4 points per wavelength of cos 100x; F = 30, StM, sums, kernel lr 0.2): damped
    Gauss-Newton for U, monotone kernel steps. Budget: 200 steps, ~7 s on one CPU thread (20 s cap).
    Measured: rel. L2 0.71 after the first solve (the initial kernel's MAP), 0.21 @ 100, 2.1e-2 @ 140,
    1.2e-2 @ 200 steps, ~6 s; before (undamped, plain Adam, lr 1e-2): 0.39 @ 100 steps, diverged at
    128^2; plain Adam at lr 0.2 diverges (16 at 64^2)."""
    problem = get_problem("allencahn2d-multiscale")
    result = gp_solve(problem, kernel="stm", n_col=64, iterations=200, eval_every=20, lr=0.2, reduction="sum")
    assert _monotone(result.history), result.history
    assert result.min_rel_l2 <= 3e-2, result.history


def test_bad_input_raises_config_error():
    problem = get_problem("poisson1d-sin100")
    with pytest.raises(ConfigError, match="kernel"):
        gp_solve(problem, kernel="rbf", iterations=1)
    with pytest.raises(ConfigError, match="n_col"):
        gp_solve(problem, n_col=2, iterations=1)
    with pytest.raises(ConfigError, match="iterations"):
        gp_solve(problem, iterations=0)
    with pytest.raises(ConfigError, match="problem"):
        GPHM("poisson1d-sin100")
    with pytest.raises(ConfigError, match="kernel_step"):
        gp_solve(problem, iterations=1, kernel_step="sgd")
    with pytest.raises(ConfigError, match="kernel_step"):
        gp_solve(problem, iterations=1, kernel_step="monotone", u_update="adam")
    for bad in (dict(lr=-1.0), dict(eval_every=0), dict(components=0), dict(llk_weight=0.0), dict(gn_iters=0)):
        with pytest.raises(ConfigError):
            gp_solve(problem, iterations=1, **bad)


def test_cli_solves_a_test_problem(tmp_path, capsys):
    from test_cli import assert_one_line_error, run_cli

    png = tmp_path / "gp.png"
    code, out, err = run_cli(["solve", "--problem", "poisson1d-sin100", "--method", "gp-stm", "--iterations", "100",
                              "--plot", png], capsys)
    assert code == 0, err
    assert "GP-HM-StM" in out and png.stat().st_size > 10_000
    row = next(line for line in out.splitlines() if "GP-HM-StM" in line)
    assert float(row.split("│")[4]) < 1e-3  # the minimum relative L2 seen (measured 5.5e-4)
    code, out, _ = run_cli(["solve", "--problem", "list"], capsys)
    assert code == 0 and "allencahn2d-multiscale" in out
    code, out, err = run_cli(["solve", "--problem", "poisson2d-sin6cos20", "--method", "gp-stm", "--iterations", "40",
                              "--n-col", "64", "--lr", "0.01"], capsys)  # 2-D from the command line, a reduced grid
    assert code == 0, err
    assert float(next(ln for ln in out.splitlines() if "GP-HM-StM" in ln).split("│")[4]) < 2e-2  # measured 1.2e-2
    code, _, err = run_cli(["solve", "--problem", "poisson1d-sin100", "--method", "gp", "--lr", "0"], capsys)
    assert_one_line_error(code, err, "lr must be a positive")
    code, _, err = run_cli(["solve", "--problem", "poisson1d-sin100", "--method", "gp,cg"], capsys)
    assert_one_line_error(code, err, "--problem")
    code, _, err = run_cli(["solve", "darcy", "--method", "pinn"], capsys)
    assert_one_line_error(code, err, "--problem")
    code, _, err = run_cli(["solve", "--problem", "poisson9d", "--method", "gp"], capsys)
    assert_one_line_error(code, err, "poisson9d", "poisson1d-sin100")
