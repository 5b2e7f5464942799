"""Darcy and Poisson generators: discrete equations hold, GRF statistics, reproducibility, layout, errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import scipy.fft
import xarray as xr

from sciml import datasets
from sciml.datasets.darcy import Darcy
from sciml.datasets.random_fields import grf_amplitudes, grf_variance, neumann_grf, threshold
from sciml.errors import ConfigError, DataError, UnknownNameError
from sciml.solvers import darcy_operator, laplacian
from sciml.testing import relative_residual


@pytest.fixture(scope="module")
def darcy_files(tmp_path_factory):
    """Darcy at s = 41 stored in full and subsampled by 5 (-> 9), float64, 3 samples."""
    d = tmp_path_factory.mktemp("darcy")
    full = datasets.generate("darcy", n=3, resolution=41, seed=7, out=d / "full.h5", dtype="float64", progress=False)
    sub = datasets.generate("darcy", n=3, resolution=41, seed=7, subsample=5, out=d / "sub.h5",
                            dtype="float64", progress=False)
    return full, sub


def test_available_lists_every_generator():
    assert {"burgers", "condiff", "condiff-poisson", "darcy", "poisson", "poisson3d", "wave"} == set(datasets.available())
    assert datasets.config_class("darcy")().low == 3.0
    assert datasets.config_class("poisson")().forcing == "grf"


def test_generated_darcy_satisfies_the_discrete_equations(darcy_files):
    ds = datasets.open(darcy_files[0])
    for i in range(ds.sizes["sample"]):
        a, u = ds["a"][i].values, ds["u"][i].values
        A = darcy_operator(a)
        b = np.ones(A.shape[0])
        assert relative_residual(A, u[1:-1, 1:-1].reshape(-1), b) <= 1e-9
        assert np.all(u[0] == 0) and np.all(u[-1] == 0) and np.all(u[:, 0] == 0) and np.all(u[:, -1] == 0)
        assert u[1:-1, 1:-1].min() > 0  # maximum principle for f = 1 > 0
    solver = json.loads(ds.attrs["solver"])
    assert solver["name"] == "auto" and solver["method"] == "direct" and solver["tol"] == 1e-10
    assert solver["max_residual"] == pytest.approx(float(ds["residual"].max())) and solver["max_residual"] <= 1e-10
    ds.close()


@pytest.mark.parametrize("dim, forcing, n", [(2, "grf", 20), (2, "white_noise", 20), (3, "grf", 9),
                                             (3, "white_noise", 9)])
def test_generated_poisson_satisfies_the_discrete_equations(tmp_path, dim, forcing, n):
    path = datasets.generate("poisson", n=2, resolution=n, dim=dim, forcing=forcing, out=tmp_path / "p.h5",
                             dtype="float64", progress=False)
    ds = datasets.open(path)
    assert ds["f"].dims == ("sample", "x", "y", "z")[: dim + 1]
    np.testing.assert_allclose(ds["x"].values, np.arange(1, n + 1) / (n + 1))
    A = laplacian(n, dim)
    for i in range(2):
        f, u = ds["f"][i].values, ds["u"][i].values
        assert relative_residual(A, u.reshape(-1), f.reshape(-1)) <= 1e-9
        assert float(ds["residual"][i]) <= 1e-10
    if forcing == "white_noise":  # N(0, 1) per node
        values = ds["f"].values
        assert abs(values.mean()) < 0.15 and abs(values.std() - 1) < 0.15
    ds.close()


def test_grf_dct_coefficients_are_the_formula_times_the_normal_draw():
    shape, alpha, tau = (12, 10), 2.0, 3.0
    g = neumann_grf(np.random.default_rng(5), shape, alpha, tau)
    xi = np.random.default_rng(5).standard_normal(shape)
    coefficients = scipy.fft.dctn(g, type=2, norm="ortho")
    k1, k2 = np.meshgrid(np.arange(12), np.arange(10), indexing="ij")
    formula = np.sqrt(120) * tau ** (alpha - 1) * (np.pi**2 * (k1**2 + k2**2) + tau**2) ** (-alpha / 2)
    formula[0, 0] = 0.0
    np.testing.assert_allclose(grf_amplitudes(shape, alpha, tau), formula, rtol=1e-14)
    np.testing.assert_allclose(coefficients, formula * xi, rtol=1e-10, atol=1e-14)
    assert abs(g.mean()) < 1e-14  # no constant mode


def test_grf_pointwise_variance_matches_the_analytic_sum():
    shape = (16, 16)
    rng = np.random.default_rng(11)
    samples = np.stack([neumann_grf(rng, shape) for _ in range(3000)])
    ratio = samples.var(axis=0) / grf_variance(shape)
    # sampling error of a variance from 3000 draws: sqrt(2 / 3000) = 2.6 % per point
    assert abs(ratio.mean() - 1) < 0.02, ratio.mean()
    assert np.abs(ratio - 1).max() < 0.13, np.abs(ratio - 1).max()


def test_grf_variance_equals_the_sum_over_explicit_basis_functions():
    shape, alpha, tau = (6, 5), 2.5, 4.0
    amp = grf_amplitudes(shape, alpha, tau)
    brute = np.zeros(shape)
    for k in np.ndindex(*shape):
        unit = np.zeros(shape)
        unit[k] = 1.0
        brute += (amp[k] * scipy.fft.idctn(unit, type=2, norm="ortho")) ** 2
    np.testing.assert_allclose(grf_variance(shape, alpha, tau), brute, rtol=1e-12)


def test_thresholding_gives_exactly_low_and_high(tmp_path, darcy_files):
    ds = datasets.open(darcy_files[0])
    assert set(np.unique(ds["a"].values)) == {3.0, 12.0}
    ds.close()
    path = datasets.generate("darcy", n=2, resolution=17, low=4, out=tmp_path / "low4.h5", progress=False)
    ds = datasets.open(path)
    assert set(np.unique(ds["a"].values)) == {4.0, 12.0}
    ds.close()
    field = np.array([-1e-3, 0.0, 2.0])
    np.testing.assert_array_equal(threshold(field, 3.0, 12.0), [3.0, 12.0, 12.0])


def test_same_seed_gives_identical_arrays_and_sample_i_does_not_depend_on_n(tmp_path):
    one = datasets.generate("darcy", n=2, resolution=21, seed=3, out=tmp_path / "one.h5", progress=False)
    two = datasets.generate("darcy", n=2, resolution=21, seed=3, out=tmp_path / "two.h5", progress=False)
    big = datasets.generate("darcy", n=4, resolution=21, seed=3, out=tmp_path / "big.h5", progress=False)
    other = datasets.generate("darcy", n=2, resolution=21, seed=4, out=tmp_path / "other.h5", progress=False)
    with datasets.open(one) as a, datasets.open(two) as b, datasets.open(big) as c, datasets.open(other) as d:
        for v in ("a", "u"):
            np.testing.assert_array_equal(a[v].values, b[v].values)
            np.testing.assert_array_equal(a[v].values, c[v].values[:2])
        assert not np.array_equal(a["a"].values, d["a"].values)
        assert not np.array_equal(a["a"].values[0], a["a"].values[1])


def test_subsample_strides_the_full_resolution_file(darcy_files):
    with datasets.open(darcy_files[0]) as full, datasets.open(darcy_files[1]) as sub:
        assert dict(sub.sizes) == {"sample": 3, "x": 9, "y": 9}
        np.testing.assert_array_equal(sub["x"].values, full["x"].values[::5])
        assert sub["x"].values[-1] == 1.0
        for v in ("a", "u"):
            np.testing.assert_array_equal(sub[v].values, full[v].values[:, ::5, ::5])
        assert json.loads(sub.attrs["params"])["subsample"] == 5


@pytest.mark.parametrize("r, stored", [(2, 211), (3, 141), (4, 106), (5, 85)])
def test_fno_subsample_family_of_421(r, stored):
    gen = Darcy(datasets.config_class("darcy")(resolution=421, subsample=r))
    assert len(gen.stored_coords()["x"]) == stored


def test_file_reads_with_plain_xarray_h5netcdf(darcy_files):
    with xr.open_dataset(darcy_files[0], engine="h5netcdf") as ds:
        assert ds["a"].dims == ds["u"].dims == ("sample", "x", "y")
        assert set(ds.coords) == {"x", "y"}
        np.testing.assert_allclose(ds["x"].values, np.linspace(0, 1, 41))
        for key in ("pde", "inputs", "outputs", "params", "seed", "sciml_format", "grid", "solver"):
            assert key in ds.attrs, key
        assert (ds.attrs["pde"], ds.attrs["inputs"], ds.attrs["outputs"]) == ("darcy", "a", "u")
        assert ds.attrs["grid"] == "node, boundary included" and int(ds.attrs["seed"]) == 7
        params = json.loads(ds.attrs["params"])
        assert params["resolution"] == 41 and params["tau"] == 3.0 and params["high"] == 12.0


def test_reference_solve_reproduces_stored_solution(darcy_files):
    for path in darcy_files:
        with datasets.open(path) as ds:
            outputs, seconds = datasets.reference_solve(ds, 2)
            np.testing.assert_allclose(outputs["u"], ds["u"][2].values, rtol=1e-9, atol=1e-12)
            assert 0 < seconds < 5
    with datasets.open(darcy_files[0]) as ds, pytest.raises(DataError, match="out of range"):
        datasets.reference_solve(ds, 3)


def test_system_is_the_system_of_the_stored_sample(darcy_files):
    A, b, info = datasets.system("darcy", resolution=41, seed=7, index=1)
    assert A.shape == (39 * 39, 39 * 39) and info["shape"] == (39, 39) and info["method"] == "direct"
    with datasets.open(darcy_files[0]) as ds:
        np.testing.assert_array_equal(info["inputs"]["a"], ds["a"][1].values)
        u = ds["u"][1].values[1:-1, 1:-1].reshape(-1)
    assert relative_residual(A, u, b) <= 1e-9


def test_system_from_file_equals_the_system_of_the_seed(darcy_files):
    A, b, info = datasets.system("darcy", resolution=41, seed=7, index=2)
    for path in darcy_files:  # stored inputs (r = 1) and inputs redrawn at full resolution (r = 5)
        A_file, b_file, info_file = datasets.system_from_file(path, 2)
        assert abs(A_file - A).max() == 0 and np.array_equal(b_file, b)
        assert info_file["shape"] == (39, 39) and info_file["seed"] == 7 and info_file["index"] == 2
    with pytest.raises(DataError, match="out of range"):
        datasets.system_from_file(darcy_files[0], 3)


def test_summary_reports_sizes_ranges_and_residuals(darcy_files):
    info = datasets.summary(darcy_files[1])
    assert info["pde"] == "darcy" and info["n"] == 3 and info["seed"] == 7
    assert info["variables"]["a"]["shape"] == [3, 9, 9]
    assert (info["variables"]["a"]["min"], info["variables"]["a"]["max"]) == (3.0, 12.0)
    assert info["variables"]["u"]["min"] == 0.0 and 0 < info["variables"]["u"]["max"] < 0.1
    assert info["solver"]["tol"] == 1e-10 and 0 < info["residual"]["median"] <= info["residual"]["max"] <= 1e-10
    text = datasets.format_summary(info)
    assert "darcy" in text and "(3, 9, 9) on (sample, x, y)" in text and "max 12" in text and "residual" in text


def test_interrupted_generation_resumes_to_the_same_file(tmp_path, monkeypatch):
    reference = datasets.generate("darcy", n=3, resolution=17, seed=2, out=tmp_path / "ref.h5", progress=False)
    original = Darcy.sample

    def fail_on_two(self, seed, index):
        if index == 2:
            raise KeyboardInterrupt
        return original(self, seed, index)

    monkeypatch.setattr(Darcy, "sample", fail_on_two)
    out = tmp_path / "run.h5"
    with pytest.raises(KeyboardInterrupt):
        datasets.generate("darcy", n=3, resolution=17, seed=2, out=out, progress=False)
    assert not out.exists() and (tmp_path / "run.h5.partial").exists()
    monkeypatch.setattr(Darcy, "sample", original)
    with pytest.raises(DataError, match="holds 3 samples, not n=4"):
        datasets.generate("darcy", n=4, resolution=17, seed=2, out=out, progress=False, resume=True)
    with pytest.raises(DataError, match="other parameters"):
        datasets.generate("darcy", n=3, resolution=17, seed=3, out=out, progress=False, resume=True)
    datasets.generate("darcy", n=3, resolution=17, seed=2, out=out, progress=False, resume=True)
    with datasets.open(reference) as a, datasets.open(out) as b:
        np.testing.assert_array_equal(a["u"].values, b["u"].values)


def test_progress_bar_writes_nothing_to_stdout(tmp_path, capsys):
    datasets.generate("poisson", n=2, resolution=8, out=tmp_path / "p.h5", progress=True)
    assert capsys.readouterr().out == ""


@pytest.mark.parametrize("name, kwargs, error, message", [
    ("heat", {}, UnknownNameError, "valid generators are: burgers, condiff, condiff-poisson, darcy"),
    ("darcy", {"taus": 2.0}, ConfigError, "unknown key 'taus'.*did you mean 'tau'"),
    ("darcy", {"tau": 0.0}, ConfigError, "tau > 0"),
    ("darcy", {"resolution": 2}, ConfigError, "resolution must be at least 3"),
    ("darcy", {"subsample": 3}, ConfigError, "does not divide resolution - 1 = 16"),
    ("darcy", {"low": -1.0}, ConfigError, "must be positive"),
    ("darcy", {"solver": "lu"}, UnknownNameError, "valid solver methods are"),
    ("darcy", {"tol": 2.0}, ConfigError, "tol must lie in"),
    ("darcy", {"dtype": "int8"}, ConfigError, "dtype must be"),
    ("darcy", {"n": 0}, ConfigError, "positive integer"),
    ("darcy", {"seed": -1}, ConfigError, "non-negative"),
    ("poisson", {"dim": 4}, ConfigError, "dim must be 2 or 3"),
    ("poisson", {"out": "."}, ConfigError, "is a directory"),
    ("poisson", {"forcing": "sines"}, ConfigError, "forcing"),
])
def test_bad_inputs_raise_the_right_error(tmp_path, name, kwargs, error, message):
    args = {"n": 1, "resolution": 17, "out": tmp_path / "x.h5", "progress": False, **kwargs}
    with pytest.raises(error, match=message):
        datasets.generate(name, **args)
    assert not (tmp_path / "x.h5").exists()


def test_a_solver_that_does_not_converge_raises_data_error(tmp_path):
    with pytest.raises(DataError, match="choose another solver"):
        datasets.generate("darcy", n=1, resolution=33, solver="cg", tol=1e-15, out=tmp_path / "x.h5", progress=False)
