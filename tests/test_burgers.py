"""Burgers: Cole-Hopf exact solution, spectral accuracy, temporal order and error control,
conservation, Galilean invariance, the R10 initial-condition field, and the dataset file."""

from __future__ import annotations

import json

import numpy as np
import pytest

import sciml.datasets.burgers  # noqa: F401  (registers "burgers")
from sciml import datasets
from sciml.datasets.random_fields import periodic_grf, periodic_grf_amplitudes
from sciml.errors import ConfigError
from sciml.solvers.spectral import BurgersOperator, solve_burgers
from sciml.testing import assert_convergence_order

NU = 0.1


def cole_hopf(x: np.ndarray, t: float, nu: float = NU, a: float = 1.0, b: float = 0.8) -> np.ndarray:
    """``u = -2 nu phi_x / phi`` with ``phi = a + b exp(-4 pi^2 nu t) cos(2 pi x)`` solving ``phi_t = nu phi_xx``."""
    e = b * np.exp(-4 * np.pi**2 * nu * t)
    return 4 * np.pi * nu * e * np.sin(2 * np.pi * x) / (a + e * np.cos(2 * np.pi * x))


def cole_hopf_error(s: int, **kwargs) -> float:
    x = np.arange(s) / s
    result = solve_burgers(cole_hopf(x, 0.0), NU, 1.0, **kwargs)
    exact = cole_hopf(x, 1.0)
    return float(np.linalg.norm(result.u[-1] - exact) / np.linalg.norm(exact))


def test_cole_hopf_solution_is_reproduced_to_round_off():
    assert cole_hopf_error(64, tol=1e-12) < 1e-12


def test_spatial_error_decays_spectrally():
    sizes = [16, 24, 32, 48]
    errors = [cole_hopf_error(s, tol=1e-11) for s in sizes]
    # 8 more points must gain > 30x each time: faster than any algebraic order below 8
    ratios = np.array(errors[:-1]) / np.array(errors[1:])
    assert np.all(ratios > 30), (errors, ratios)
    assert errors[-1] < 1e-10, errors


def test_temporal_order_is_five():
    # Lawson methods are pre-asymptotic here (modes leave the stiff regime as h shrinks): the
    # pairwise orders run 4.6 -> 5.8 around the slope 5.15 of this sequence
    steps = [20, 40, 80, 160]
    errors = [cole_hopf_error(64, steps=n) for n in steps]
    assert_convergence_order([1 / n for n in steps], errors, order=5, tol=0.3)


@pytest.fixture(scope="module")
def grf_runs():
    u0 = periodic_grf(np.random.default_rng([0, 1]), 1024)
    return u0, {tol: solve_burgers(u0, NU, 1.0, tol=tol) for tol in (1e-6, 1e-8, 1e-12)}


def test_tightening_tol_changes_the_solution_by_less_than_tol_and_the_estimate(grf_runs):
    _, runs = grf_runs
    reference = runs[1e-12].u[-1]
    for tol in (1e-6, 1e-8):
        run = runs[tol]
        change = np.linalg.norm(run.u[-1] - reference) / np.linalg.norm(reference)
        assert change < tol, (tol, change)
        assert change <= run.error_estimate < 300 * tol, (tol, change, run.error_estimate)
        assert run.converged and run.steps > 5
    assert runs[1e-8].steps > runs[1e-6].steps


def test_mean_is_conserved_exactly():
    u0 = periodic_grf(np.random.default_rng(3), 256) + 0.37
    result = solve_burgers(u0, NU, 1.0, tol=1e-8, times=np.linspace(0.25, 1.0, 4))
    assert np.abs(result.u.mean(axis=1) - u0.mean()).max() < 1e-14
    assert np.abs(result.u[-1] - result.u[-1].mean()).max() < 0.1 * np.abs(u0 - u0.mean()).max()  # it decays


def test_galilean_shift_by_one_period_adds_the_mean():
    # u0 + 1 is advected by exactly one period in T = 1: u_shifted(x, 1) = u(x - 1, 1) + 1 = u(x, 1) + 1
    u0 = periodic_grf(np.random.default_rng(4), 256)
    still = solve_burgers(u0, NU, 1.0, tol=1e-11).u[-1]
    moving = solve_burgers(u0 + 1.0, NU, 1.0, tol=1e-11).u[-1]
    assert np.abs(moving - 1.0 - still).max() < 1e-8 * np.abs(still).max()


def test_periodic_grf_is_the_trigonometric_series():
    n = 16
    g = periodic_grf(np.random.default_rng(9), n, sigma=25, tau=5, gamma=2)
    xi, eta = np.random.default_rng(9).standard_normal((2, n // 2))
    x = np.arange(n) / n
    k = np.arange(1, n // 2 + 1)
    amp = np.sqrt(2) * 25 * ((2 * np.pi * k) ** 2 + 25) ** -1.0
    series = sum(amp[m] * (xi[m] * np.cos(2 * np.pi * k[m] * x) + eta[m] * np.sin(2 * np.pi * k[m] * x))
                 for m in range(n // 2))
    np.testing.assert_allclose(periodic_grf_amplitudes(n, 25, 5, 2), amp, rtol=1e-14)
    np.testing.assert_allclose(g, series, rtol=0, atol=1e-14)


def test_periodic_grf_variance_is_the_sum_of_squared_amplitudes():
    n, draws = 64, 4000
    rng = np.random.default_rng(12)
    samples = np.stack([periodic_grf(rng, n) for _ in range(draws)])
    expected = np.sum(periodic_grf_amplitudes(n) ** 2)  # 0.34 for the R10 recipe
    # a variance from 4000 draws is within 3 sqrt(2/4000) = 6.7 % per point; the grid average is tighter
    ratio = samples.var(axis=0) / expected
    assert abs(ratio.mean() - 1) < 0.03 and np.abs(ratio - 1).max() < 0.08, ratio
    assert abs(samples.mean()) < 0.02


@pytest.fixture(scope="module")
def burgers_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("burgers")
    kw = dict(n=4, resolution=1024, seed=0, dtype="float64", progress=False)
    full = datasets.generate("burgers", out=d / "full.h5", **kw)
    sub = datasets.generate("burgers", out=d / "sub.h5", subsample=8, **kw)
    traj = datasets.generate("burgers", out=d / "traj.h5", trajectory=4, **{**kw, "n": 2})
    return full, sub, traj


def test_generated_burgers_file_holds_solver_output(burgers_files):
    with datasets.open(burgers_files[0]) as ds:
        assert ds["u0"].dims == ds["u"].dims == ("sample", "x") and ds.sizes["sample"] == 4
        np.testing.assert_array_equal(ds["x"].values, np.arange(1024) / 1024)
        for i in range(4):
            u0 = periodic_grf(np.random.default_rng([0, i]), 1024)
            np.testing.assert_array_equal(ds["u0"][i].values, u0)
            u = solve_burgers(u0, NU, 1.0, tol=1e-8).u[-1]
            np.testing.assert_allclose(ds["u"][i].values, u, rtol=0, atol=1e-15)
        assert np.all(ds["residual"].values < 1e-6)
        assert json.loads(ds.attrs["params"])["viscosity"] == NU
        assert json.loads(ds.attrs["solver"])["method"] == "spectral-ifdp54"


def test_subsampled_burgers_strides_the_full_file(burgers_files):
    with datasets.open(burgers_files[0]) as full, datasets.open(burgers_files[1]) as sub:
        assert sub.sizes["x"] == 128
        np.testing.assert_array_equal(sub["x"].values, np.arange(128) / 128)
        for v in ("u0", "u"):
            np.testing.assert_array_equal(sub[v].values, full[v].values[:, ::8])


def test_trajectory_stores_equally_spaced_frames_from_u0_to_u_T(burgers_files):
    with datasets.open(burgers_files[0]) as full, datasets.open(burgers_files[2]) as traj:
        assert traj["u"].dims == ("sample", "t", "x") and traj["u0"].dims == ("sample", "x")
        np.testing.assert_allclose(traj["t"].values, [0, 0.25, 0.5, 0.75, 1.0])
        np.testing.assert_array_equal(traj["u"][:, 0].values, traj["u0"].values)
        final, last = full["u"][:2].values, traj["u"][:, -1].values
        assert np.linalg.norm(last - final) < 1e-7 * np.linalg.norm(final)  # other steps, same tolerance


@pytest.mark.parametrize("params", [dict(subsample=3), dict(viscosity=0.0), dict(final_time=-1.0),
                                    dict(tol=2.0), dict(resolution=4), dict(trajectory=-1), dict(sigma=0.0)])
def test_invalid_burgers_config_is_rejected(params):
    with pytest.raises(ConfigError):
        datasets.create("burgers", **{"resolution": 1024, **params})


def test_unknown_burgers_key_is_rejected():
    with pytest.raises(ConfigError, match="viscosity"):
        datasets.create("burgers", viscocity=0.1)


@pytest.mark.parametrize("s", [24, 25])
def test_flux_derivative_is_the_truncated_exact_convolution(s):
    # slow, obviously right reference: the exact spectrum of u^2 by direct convolution (no aliasing)
    rng = np.random.default_rng(s)
    u_hat = np.fft.rfft(rng.standard_normal(s))  # energy in every mode, also above s/3
    k = np.arange(s // 2 + 1)
    keep = 3 * k < s
    two_sided = np.zeros(s + 1, dtype=complex)  # wave numbers -s/2..s/2 of the kept part
    two_sided[s // 2 + k[keep]] = u_hat[keep]
    two_sided[s // 2 - k[keep]] = np.conj(u_hat[keep])
    square = np.convolve(two_sided, two_sided) / s  # wave numbers -2(s//2)..2(s//2)
    expected = np.where(keep, -1j * np.pi * k * square[2 * (s // 2) + k], 0.0)
    np.testing.assert_allclose(BurgersOperator(s, NU).nonlinear(u_hat), expected, rtol=0, atol=1e-12)
