"""Wave: the CNO sine series solves the PDE, leapfrog conserves its energy, converges at
second order, respects the CFL limit and matches a plain-loop reference; the speed models,
the dataset files and config validation."""

from __future__ import annotations

import json

import numpy as np
import pytest

import sciml.datasets.wave  # noqa: F401  (registers "wave")
from sciml import datasets
from sciml.datasets.random_fields import neumann_grf
from sciml.errors import ConfigError, UnknownNameError
from sciml.solvers.wave import cfl_step, discrete_energy, leapfrog, sine_series
from sciml.testing import assert_convergence_order


def grid(s: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    x = np.linspace(0.0, 1.0, s)
    X, Y = np.meshgrid(x, x, indexing="ij")
    return x, X, Y


def test_sine_series_satisfies_the_wave_equation_at_second_order():
    # central differences of the series in t and x, y: u_tt - c^2 Lap u = O(h^2) -> 0
    a = np.random.default_rng(0).uniform(-1, 1, (5, 5))
    c, t, residuals, hs = 1.0, 0.3, [], []
    for s in (33, 65, 129):
        x, h = np.linspace(0, 1, s), 1 / (s - 1)
        dt = h
        u_m, u_0, u_p = sine_series(a, x, x, np.array([t - dt, t, t + dt]), c, 1.0)
        u_tt = (u_p - 2 * u_0 + u_m) / dt**2
        lap = (u_0[2:, 1:-1] + u_0[:-2, 1:-1] + u_0[1:-1, 2:] + u_0[1:-1, :-2] - 4 * u_0[1:-1, 1:-1]) / h**2
        residuals.append(np.abs(u_tt[1:-1, 1:-1] - c**2 * lap).max() / np.abs(u_tt).max())
        hs.append(h)
    assert_convergence_order(hs, residuals, order=2, tol=0.1)
    assert residuals[-1] < 1e-3


def test_sine_series_vanishes_on_the_boundary_and_starts_at_rest():
    a = np.random.default_rng(1).uniform(-1, 1, (24, 24))
    x = np.linspace(0, 1, 64)
    u = sine_series(a, x, x, np.array([-1e-3, 0.0, 1e-3]), 0.1, 1.0)
    for frame in u:
        assert np.all(frame[[0, -1]] == 0) and np.all(frame[:, [0, -1]] == 0)
    np.testing.assert_array_equal(u[0], u[2])  # even in t: u_t(., 0) = 0


@pytest.fixture(scope="module")
def cno_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("wave") / "cno.h5"
    return datasets.generate("wave", n=4, resolution=64, seed=0, out=path, dtype="float64", progress=False)


def test_cno_file_holds_the_exact_series_of_uniform_coefficients(cno_file):
    x = np.linspace(0, 1, 64)
    with datasets.open(cno_file) as ds:
        assert ds["u0"].dims == ds["u"].dims == ("sample", "x", "y") and list(ds.data_vars)[:2] == ["u0", "u"]
        assert "c" not in ds and np.all(ds["residual"].values == 0)
        np.testing.assert_array_equal(ds["x"].values, x)
        for i in range(4):
            a = np.random.default_rng([0, i]).uniform(-1, 1, (24, 24))
            np.testing.assert_allclose(ds["u0"][i].values, sine_series(a, x, x, 0.0, 0.1, 1.0), rtol=0, atol=1e-17)
            np.testing.assert_allclose(ds["u"][i].values, sine_series(a, x, x, 5.0, 0.1, 1.0), rtol=0, atol=1e-17)
        assert json.loads(ds.attrs["solver"])["method"] == "exact sine series"


def test_cno_trajectory_frames_are_the_series_at_equal_times(tmp_path):
    path = datasets.generate("wave", n=1, resolution=40, trajectory=5, out=tmp_path / "t.h5", dtype="float64",
                             progress=False)
    x = np.linspace(0, 1, 40)
    a = np.random.default_rng([0, 0]).uniform(-1, 1, (24, 24))
    with datasets.open(path) as ds:
        assert ds["u"].dims == ("sample", "t", "x", "y")
        np.testing.assert_allclose(ds["t"].values, np.linspace(0, 5, 6))
        np.testing.assert_allclose(ds["u"][0].values, sine_series(a, x, x, np.linspace(0, 5, 6), 0.1, 1.0),
                                   rtol=0, atol=1e-17)


def standing_wave_error(s: int, c0: float = 1.0, T: float = 1.0) -> float:
    _, X, Y = grid(s)
    u0 = np.sin(np.pi * X) * np.sin(2 * np.pi * Y)
    result = leapfrog(u0, np.full((s, s), c0), T, cfl=0.5)
    return float(np.abs(result.u[-1] - u0 * np.cos(np.sqrt(5) * np.pi * c0 * T)).max())


def test_leapfrog_converges_at_second_order_to_a_standing_wave():
    sizes = [17, 33, 65, 129]
    errors = [standing_wave_error(s) for s in sizes]
    assert_convergence_order([1 / (s - 1) for s in sizes], errors, order=2, tol=0.1)


@pytest.mark.parametrize("speed", ["layers", "grf"])
def test_leapfrog_energy_is_conserved_to_round_off(speed):
    gen = datasets.create("wave", resolution=33, mode="variable", speed=speed, c=1.0)
    inputs = gen.draw_inputs(np.random.default_rng(5))
    result = leapfrog(inputs["u0"], inputs["c"], 20.0, cfl=0.9)
    assert result.steps > 1000
    assert result.energy[0] > 0 and result.energy_drift < 1e-10, result.energy


def test_leapfrog_energy_helper_matches_a_loop_over_edges():
    rng = np.random.default_rng(6)
    s, dt = 9, 0.01
    new, old = np.pad(rng.standard_normal((7, 7)), 1), np.pad(rng.standard_normal((7, 7)), 1)
    c = rng.uniform(0.5, 2.0, (s, s))
    h = 1 / (s - 1)
    kinetic = sum(((new[i, j] - old[i, j]) / dt) ** 2 / c[i, j] ** 2 for i in range(1, 8) for j in range(1, 8))
    # <grad_h new, grad_h old>: a product of forward differences over every edge, boundary edges included
    potential = sum((new[i + 1, j] - new[i, j]) * (old[i + 1, j] - old[i, j]) for i in range(8) for j in range(1, 8))
    potential += sum((new[i, j + 1] - new[i, j]) * (old[i, j + 1] - old[i, j]) for i in range(1, 8) for j in range(8))
    expected = 0.5 * h**2 * kinetic + 0.5 * potential
    assert discrete_energy(new, old, dt, c) == pytest.approx(expected, rel=1e-12)


def test_leapfrog_matches_a_plain_stencil_loop():
    rng = np.random.default_rng(7)
    s, T = 12, 0.3
    c = rng.uniform(0.5, 1.5, (s, s))
    u0 = np.pad(rng.standard_normal((s - 2, s - 2)), 1)
    fast = leapfrog(u0, c, T, frames=3)
    h, dt = 1 / (s - 1), fast.dt
    prev, cur = u0.copy(), u0.copy()
    frames = [u0.copy()]
    for n in range(fast.steps):
        lap = np.zeros_like(cur)
        for i in range(1, s - 1):
            for j in range(1, s - 1):
                lap[i, j] = (cur[i + 1, j] + cur[i - 1, j] + cur[i, j + 1] + cur[i, j - 1] - 4 * cur[i, j]) / h**2
        nxt = cur + 0.5 * dt**2 * c**2 * lap if n == 0 else 2 * cur - prev + dt**2 * c**2 * lap
        prev, cur = cur, nxt
        if (n + 1) % (fast.steps // 3) == 0:
            frames.append(cur.copy())
    np.testing.assert_allclose(fast.u, np.stack(frames), rtol=0, atol=1e-12)
    np.testing.assert_allclose(fast.t, [0, 0.1, 0.2, 0.3])


@pytest.mark.parametrize("cfl", [0.5, 0.9, 1.0])
def test_cfl_step_is_the_largest_that_divides_T(cfl):
    h, c_max, T = 1 / 63, 0.37, 5.0
    dt, n = cfl_step(h, c_max, T, cfl, multiple=4)
    assert dt * c_max * np.sqrt(2) / h <= cfl * (1 + 1e-12)
    assert n % 4 == 0 and n * dt == pytest.approx(T, rel=1e-14)
    assert T / (n - 4) * c_max * np.sqrt(2) / h > cfl  # four fewer steps would break the limit


def test_generated_variable_samples_respect_the_cfl_limit(tmp_path):
    path = datasets.generate("wave", n=3, resolution=33, mode="variable", seed=2, out=tmp_path / "v.h5",
                             dtype="float64", progress=False)
    h, cfl = 1 / 32, 0.5
    with datasets.open(path) as ds:
        assert ds["c"].dims == ("sample", "x", "y") and str(ds.attrs["inputs"]) == "u0 c"
        for i in range(3):
            u0, c = ds["u0"][i].values, ds["c"][i].values
            result = leapfrog(u0, c, 5.0, cfl=cfl)
            assert result.dt * c.max() * np.sqrt(2) / h <= cfl
            np.testing.assert_allclose(ds["u"][i].values, result.u[-1], rtol=0, atol=1e-15)
            assert float(ds["residual"][i]) < 1e-12  # energy drift
            assert np.all(u0[[0, -1]] == 0) and np.all(u0[:, [0, -1]] == 0)


def test_layered_speed_is_piecewise_constant_in_y():
    gen = datasets.create("wave", resolution=50, mode="variable", speed="layers", layers=5, c=0.2)
    for i in range(10):
        c = gen.draw_inputs(np.random.default_rng([1, i]))["c"]
        assert np.all(c == c[:1, :])  # independent of x
        values = np.unique(c)
        assert 2 <= values.size <= 5 and values.min() >= 0.2 and values.max() <= 0.6
        assert np.count_nonzero(np.diff(c[0])) == values.size - 1  # one jump per interface


def test_grf_speed_is_the_exponential_of_the_neumann_field():
    gen = datasets.create("wave", resolution=30, mode="variable", speed="grf", c=0.5, speed_sigma=0.7)
    c = gen.draw_inputs(np.random.default_rng([3, 0]))["c"]
    g = neumann_grf(np.random.default_rng([3, 0]), (30, 30), 2.0, 3.0)
    np.testing.assert_allclose(np.log(c / 0.5) / 0.7, g, rtol=0, atol=1e-13)


def test_variable_trajectory_starts_at_u0_and_ends_at_u_T(tmp_path):
    kw = dict(n=1, resolution=21, mode="variable", speed="grf", dtype="float64", progress=False)
    final = datasets.generate("wave", out=tmp_path / "f.h5", **kw)
    traj = datasets.generate("wave", out=tmp_path / "t.h5", trajectory=4, **kw)
    with datasets.open(final) as f, datasets.open(traj) as t:
        assert t["u"].dims == ("sample", "t", "x", "y")
        np.testing.assert_array_equal(t["u"][0, 0].values, t["u0"][0].values)
        # the frame count is a multiple of 4 here, so the step may differ from the final-only run
        assert np.abs(t["u"][0, -1].values - f["u"][0].values).max() < 1e-2 * np.abs(f["u"][0].values).max()


@pytest.mark.parametrize("params, error", [
    (dict(speed="gaussian", mode="variable"), UnknownNameError),
    (dict(mode="pdearena"), UnknownNameError),
    (dict(resolution=2), ConfigError),
    (dict(resolution=20), ConfigError),  # too coarse for K = 24 modes
    (dict(modes=0), ConfigError),
    (dict(decay=-1.0), ConfigError),
    (dict(c=0.0), ConfigError),
    (dict(final_time=0.0), ConfigError),
    (dict(cfl=1.5), ConfigError),
    (dict(subsample=2), ConfigError),  # 63 is odd
    (dict(speed_range=(2.0, 1.0)), ConfigError),
    (dict(bump_width=(0.05, 0.2)), ConfigError),
])
def test_invalid_wave_config_is_rejected(params, error):
    with pytest.raises(error):
        datasets.create("wave", **params)


def test_unknown_speed_model_lists_the_valid_ones():
    with pytest.raises(UnknownNameError, match="grf, layers"):
        datasets.create("wave", mode="variable", speed="gaussian")
