"""ConDiff generators: the finite-volume matrix, its order, rejection sampling, storage layout."""

from __future__ import annotations

import json

import numpy as np
import pytest

import sciml.datasets.condiff  # noqa: F401  (registers condiff and condiff-poisson)
from sciml import datasets
from sciml.datasets.condiff import CONTRAST_WINDOWS
from sciml.datasets.covariance import embedding
from sciml.errors import ConfigError, DataError
from sciml.solvers import laplacian, solve
from sciml.solvers.discretisation import ORDER, condiff_operator
from sciml.testing import assert_convergence_order, relative_residual


@pytest.fixture(scope="module")
def condiff_file(tmp_path_factory):
    """4 samples of cubic variance 0.4 at n = 24, float64."""
    path = tmp_path_factory.mktemp("condiff") / "c.h5"
    return datasets.generate("condiff", n=4, resolution=24, seed=5, variance=0.4, out=path,
                             dtype="float64", progress=False)


def _loop_assembly(k: np.ndarray) -> np.ndarray:
    """Dense FV matrix written straight from the stencil, one unknown at a time.

    Unknown (i, j) is node (i + 1, j + 1); cell (p, q) spans nodes p..p+1 x q..q+1. The edge to
    the east neighbour (i + 1, j) borders cells (i + 1, j) and (i + 1, j + 1), and so on.
    """
    n = k.shape[0] - 1
    A = np.zeros((n * n, n * n))
    for i in range(n):
        for j in range(n):
            row = i * n + j
            A[row, row] = k[i, j] + k[i + 1, j] + k[i, j + 1] + k[i + 1, j + 1]
            edges = {(i + 1, j): (k[i + 1, j], k[i + 1, j + 1]), (i - 1, j): (k[i, j], k[i, j + 1]),
                     (i, j + 1): (k[i, j + 1], k[i + 1, j + 1]), (i, j - 1): (k[i, j], k[i + 1, j])}
            for (a, b), (k1, k2) in edges.items():
                if 0 <= a < n and 0 <= b < n:
                    A[row, a * n + b] = -(k1 + k2) / 2
    return A * (n + 1) ** 2


def test_fv_operator_equals_the_loop_assembly():
    k = np.exp(np.random.default_rng(0).standard_normal((6, 6)))
    np.testing.assert_allclose(condiff_operator(k).toarray(), _loop_assembly(k), rtol=1e-14, atol=0)


def test_fv_operator_with_unit_coefficient_is_the_5_point_laplacian():
    assert abs(condiff_operator(np.ones((10, 10))) - laplacian(9, 2)).max() == 0


def test_fv_operator_is_second_order_on_a_manufactured_solution():
    # u = sin(pi x) sin(pi y), k = exp(sin(2 pi x) cos(3 pi y) / 2) at the cell centres
    def k_of(x, y):
        return np.exp(0.5 * np.sin(2 * np.pi * x) * np.cos(3 * np.pi * y))

    def f_of(x, y):
        k = k_of(x, y)
        kx = k * np.pi * np.cos(2 * np.pi * x) * np.cos(3 * np.pi * y)
        ky = -k * 1.5 * np.pi * np.sin(2 * np.pi * x) * np.sin(3 * np.pi * y)
        ux, uy = np.pi * np.cos(np.pi * x) * np.sin(np.pi * y), np.pi * np.sin(np.pi * x) * np.cos(np.pi * y)
        return -(kx * ux + ky * uy) + 2 * np.pi**2 * k * np.sin(np.pi * x) * np.sin(np.pi * y)

    hs, errors = [], []
    for n in (15, 31, 63, 127):
        h = 1.0 / (n + 1)
        nodes = np.meshgrid(np.arange(1, n + 1) * h, np.arange(1, n + 1) * h, indexing="ij")
        cells = np.meshgrid((np.arange(n + 1) + 0.5) * h, (np.arange(n + 1) + 0.5) * h, indexing="ij")
        u = solve(condiff_operator(k_of(*cells)), f_of(*nodes).reshape(-1), "direct").x
        hs.append(h)
        errors.append(np.abs(u - (np.sin(np.pi * nodes[0]) * np.sin(np.pi * nodes[1])).reshape(-1)).max())
    assert_convergence_order(hs, errors, ORDER, tol=0.1)


def test_stored_contrast_lies_in_its_window(condiff_file):
    ds = datasets.open(condiff_file)
    lo, hi = CONTRAST_WINDOWS[0.4]
    contrast = ds["contrast"].values
    assert ds["contrast"].dims == ("sample",)
    assert np.all((lo <= contrast) & (contrast <= hi))
    k = ds["k"].values
    np.testing.assert_allclose(contrast, k.max(axis=(1, 2)) / k.min(axis=(1, 2)), rtol=1e-12)
    ds.close()


def test_generated_condiff_satisfies_the_discrete_equations(condiff_file):
    ds = datasets.open(condiff_file)
    assert ds["k"].dims == ("sample", "xk", "yk") and ds["u"].dims == ("sample", "x", "y")
    np.testing.assert_allclose(ds["xk"].values, (np.arange(25) + 0.5) / 25, rtol=1e-15)
    np.testing.assert_allclose(ds["x"].values, np.arange(1, 25) / 25, rtol=1e-15)
    assert ds.attrs["inputs"] == "k f" and ds.attrs["outputs"] == "u"
    for i in range(ds.sizes["sample"]):
        A = condiff_operator(ds["k"][i].values)
        assert relative_residual(A, ds["u"][i].values.reshape(-1), ds["f"][i].values.reshape(-1)) <= 1e-9
    assert json.loads(ds.attrs["solver"])["max_residual"] <= 1e-10
    f = ds["f"].values  # white noise N(0, 1): 2304 values
    assert abs(f.mean()) < 0.1 and abs(f.std() - 1) < 0.1
    ds.close()


def test_condiff_sample_is_reproducible_and_independent_of_the_run(condiff_file, tmp_path):
    again = datasets.generate("condiff", n=2, resolution=24, seed=5, variance=0.4, out=tmp_path / "c.h5",
                              dtype="float64", progress=False)
    a, b = datasets.open(condiff_file), datasets.open(again)
    for v in ("k", "f", "u", "contrast"):
        np.testing.assert_array_equal(a[v].values[:2], b[v].values)
    a.close(), b.close()


def test_kept_field_is_the_first_candidate_inside_the_window():
    gen = datasets.create("condiff", resolution=24, variance=2.0)
    phi, contrast, tries = gen.draw_log_coefficient(np.random.default_rng([0, 1]))
    sampler = embedding((25, 25), 1 / 25, "cubic", 2.0, 0.05, 2.0)
    rng = np.random.default_rng([0, 1])
    candidates = [c for _ in range((tries + 1) // 2) for c in sampler.sample_pair(rng)][:tries]
    contrasts = [np.exp(c.max() - c.min()) for c in candidates]
    lo, hi = CONTRAST_WINDOWS[2.0]
    assert all(not lo <= c <= hi for c in contrasts[:-1]) and lo <= contrasts[-1] <= hi
    np.testing.assert_array_equal(phi, candidates[-1])
    assert contrast == contrasts[-1]


def test_unreachable_window_raises_a_data_error():
    gen = datasets.create("condiff", resolution=8, contrast_min=1e6, contrast_max=2e6, max_tries=5)
    with pytest.raises(DataError, match="none of 5 cubic fields.*raise max_tries"):
        gen.draw_inputs(np.random.default_rng(0))


def test_custom_variance_needs_an_explicit_window():
    with pytest.raises(ConfigError, match="no recipe contrast window"):
        datasets.create("condiff", variance=0.3)
    with pytest.raises(ConfigError, match="give both contrast_min and contrast_max"):
        datasets.create("condiff", contrast_min=2.0)
    with pytest.raises(ConfigError, match="must be one of"):
        datasets.create("condiff", covariance="matern")
    assert datasets.create("condiff", variance=0.3, contrast_min=1, contrast_max=50).config.window == (1.0, 50.0)


def test_condiff_poisson_equals_the_white_noise_poisson_generator():
    a, _, _ = datasets.compute_sample("condiff-poisson", {"resolution": 20}, 3, 1)
    b, _, _ = datasets.compute_sample("poisson", {"resolution": 20, "forcing": "white_noise"}, 3, 1)
    assert set(a) == {"f", "u"}
    np.testing.assert_array_equal(a["f"], b["f"])
    np.testing.assert_allclose(a["u"], b["u"], rtol=1e-9, atol=1e-12)


def test_system_from_file_rebuilds_the_fv_matrix(condiff_file):
    A, b, info = datasets.system_from_file(condiff_file, index=2)
    ds = datasets.open(condiff_file)
    assert abs(A - condiff_operator(ds["k"][2].values)).max() == 0
    np.testing.assert_array_equal(b, ds["f"][2].values.reshape(-1))
    assert info["shape"] == (24, 24) and info["method"] == "direct"
    ds.close()


def test_subsampled_condiff_strides_both_grids(tmp_path):
    path = datasets.generate("condiff", n=1, resolution=23, subsample=2, seed=0, out=tmp_path / "s.h5",
                             progress=False)
    ds = datasets.open(path)
    assert ds["k"].shape == (1, 12, 12) and ds["u"].shape == (1, 12, 12)
    np.testing.assert_allclose(ds["xk"].values, (np.arange(0, 24, 2) + 0.5) / 24, rtol=1e-15)
    np.testing.assert_allclose(ds["x"].values, np.arange(1, 24, 2) / 24, rtol=1e-15)
    ds.close()


def test_summary_shows_the_contrast_distribution(condiff_file):
    info = datasets.summary(condiff_file)
    ds = datasets.open(condiff_file)
    q = np.quantile(ds["contrast"].values, [0, 0.25, 0.5, 0.75, 1])
    ds.close()
    assert [info["contrast"][k] for k in ("min", "q25", "median", "q75", "max")] == pytest.approx(q, rel=1e-12)
    text = datasets.format_summary(info)
    assert f"contrast  min {q[0]:.4g}" in text and f"max {q[4]:.4g}" in text
