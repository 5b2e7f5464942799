"""Circulant-embedding GRF sampler: exact covariance, empirical statistics, embedding validity."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.fft

from sciml.datasets.covariance import MODELS, CirculantEmbedding, cell_centres, covariance, embedding
from sciml.errors import ConfigError


def _model_matrix(points: np.ndarray, model: str, variance: float, length: float) -> np.ndarray:
    d = np.linalg.norm(points[:, None, :] - points[None, :, :], axis=-1)
    return covariance(model, d, variance, length)


def test_covariance_formulas_at_known_distances():
    s2, l = 0.4, 0.05
    assert covariance("exponential", l, s2, l) == pytest.approx(s2 * np.exp(-1.0), rel=1e-15)
    assert covariance("gaussian", 2 * l, s2, l) == pytest.approx(s2 * np.exp(-4.0), rel=1e-15)
    # 1 - 7/4 + 35/32 - 7/64 + 3/512 at r = 1/2, by hand
    assert covariance("cubic", l / 2, s2, l) == pytest.approx(s2 * 0.240234375, rel=1e-14)
    for model in MODELS:
        assert covariance(model, 0.0, s2, l) == s2
    # the cubic polynomial vanishes at r = 1, so the compact support leaves no jump
    assert abs(float(covariance("cubic", l * (1 - 1e-9), s2, l))) < 1e-7
    assert covariance("cubic", 1.5 * l, s2, l) == 0.0


@pytest.mark.parametrize("model", MODELS)
def test_sampler_covariance_is_exactly_the_model(model):
    # the sampler is linear in its noise: apply it to every unit noise vector to get L, then
    # the joint covariance of the two returned fields is L L^T, which must be diag(C, C)
    shape, h, s2, l = (5, 4), 0.1, 0.7, 0.15
    sampler = CirculantEmbedding(shape, h, model, s2, l)
    size = 2 * int(np.prod(sampler.torus))
    columns = [sampler.fields(e.reshape(2, *sampler.torus)).reshape(-1) for e in np.eye(size)]
    L = np.stack(columns, axis=1)
    joint = L @ L.T
    grid = np.stack(np.meshgrid(*[np.arange(m) * h for m in shape], indexing="ij"), axis=-1).reshape(-1, 2)
    C = _model_matrix(grid, model, s2, l)
    m = C.shape[0]
    np.testing.assert_allclose(joint[:m, :m], C, atol=1e-13)
    np.testing.assert_allclose(joint[m:, m:], C, atol=1e-13)
    np.testing.assert_allclose(joint[:m, m:], 0.0, atol=1e-13)


@pytest.mark.parametrize("model", MODELS)
def test_empirical_covariance_matches_the_model_at_several_lags(model):
    # N = 6000 fields (3000 draws, both fields of each); the sample covariance of one pair of
    # points at correlation rho has standard error s2 sqrt((1 + rho^2) / N) <= 0.018 s2, and
    # the estimates below average many such pairs, so 5 of these errors is a safe bound that
    # still separates the models (e.g. exp(-r^2) vs exp(-r^2 / 2) differ by 0.24 s2 at r = 1)
    m, s2, l = 33, 1.3, 0.1
    h = 1.0 / m
    sampler = CirculantEmbedding((m, m), h, model, s2, l)
    rng = np.random.default_rng(11)
    fields = np.concatenate([sampler.sample_pair(rng) for _ in range(3000)])
    n = fields.shape[0]
    for lag in (0, 1, 3, 6, 10):
        a, b = fields[:, : m - lag, :], fields[:, lag:, :]  # pairs `lag` points apart along x
        empirical = float(np.mean(a * b))  # the mean is zero by construction
        exact = float(covariance(model, lag * h, s2, l))
        bound = 5 * s2 * np.sqrt((1 + (exact / s2) ** 2) / n)
        assert abs(empirical - exact) <= bound, f"lag {lag}: empirical {empirical:.4f}, model {exact:.4f}"
    diagonal = float(np.mean(fields[:, :-4, :-3] * fields[:, 4:, 3:]))  # lag (4, 3) h = 5 h
    assert abs(diagonal - float(covariance(model, 5 * h, s2, l))) <= 5 * s2 * np.sqrt(2 / n)


def test_pointwise_variance_is_s2_on_the_condiff_grid():
    # 2000 fields of the ConDiff grid 64 (65^2 cell centres): the variance estimate at a
    # point has standard error s2 sqrt(2 / 2000) = 0.032 s2; 6 of them bound all 4225 points
    m, s2 = 65, 2.0
    sampler = CirculantEmbedding((m, m), 1.0 / m, "exponential", s2, 0.05)
    rng = np.random.default_rng(3)
    fields = np.concatenate([sampler.sample_pair(rng) for _ in range(1000)])
    variance = np.mean(fields**2, axis=0)
    assert np.max(np.abs(variance - s2)) <= 6 * s2 * np.sqrt(2 / fields.shape[0])
    assert abs(variance.mean() - s2) <= 0.02 * s2


def _raw_eigenvalues(torus, h, model, s2, length):
    """Eigenvalues of the circulant embedding on ``torus`` (unclamped): the DFT of the covariance at
    the wrapped distances."""
    axes = [np.minimum(np.arange(M), M - np.arange(M)) * h for M in torus]
    d = np.sqrt(sum(g**2 for g in np.meshgrid(*axes, indexing="ij")))
    return scipy.fft.fftn(covariance(model, d, s2, length)).real


@pytest.mark.parametrize("model", MODELS)
def test_embedding_eigenvalues_are_non_negative_on_the_condiff_grid(model):
    m = 129  # ConDiff grid 128: 129^2 cell centres
    sampler = CirculantEmbedding((m, m), 1.0 / m, model, 1.0, 0.05)
    assert all(M >= 2 * (m - 1) for M in sampler.torus)
    # the eigenvalues before any clamping, computed here from the covariance on the chosen torus
    raw = _raw_eigenvalues(sampler.torus, 1.0 / m, model, 1.0, 0.05)
    assert raw.min() >= -1e-10 * raw.max(), f"most negative eigenvalue {raw.min() / raw.max():.2e} of the largest"
    assert sampler.clamped <= 1e-10
    # the eigenvalues sum to M C(0): the embedding reproduces the variance
    assert sampler.eigenvalues.sum() / np.prod(sampler.torus) == pytest.approx(1.0, rel=1e-9)


def test_embedding_grows_until_no_eigenvalue_is_negative():
    # a gaussian of length 0.5 on a unit grid has clearly negative eigenvalues on the minimal
    # torus 2 (m - 1); the sampler must enlarge the torus instead of clamping them
    m, h, l = 33, 1.0 / 33, 0.5
    minimal = 2 * (m - 1)
    j = np.minimum(np.arange(minimal), minimal - np.arange(minimal)) * h
    d = np.sqrt(j[:, None] ** 2 + j[None, :] ** 2)
    lam = scipy.fft.fftn(covariance("gaussian", d, 1.0, l)).real
    assert lam.min() < -1e-6 * lam.max()
    sampler = CirculantEmbedding((m, m), h, "gaussian", 1.0, l)
    assert min(sampler.torus) > minimal
    raw = _raw_eigenvalues(sampler.torus, h, "gaussian", 1.0, l)
    assert sampler.clamped <= 1e-10 and raw.min() >= -1e-10 * raw.max()


def test_sample_is_a_pure_function_of_the_rng():
    sampler = embedding((17, 17), 1 / 17, "cubic", 0.4, 0.05)
    a = sampler.sample(np.random.default_rng([4, 2]))
    b = sampler.sample(np.random.default_rng([4, 2]))
    pair = sampler.sample_pair(np.random.default_rng([4, 2]))
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(a, pair[0])
    assert not np.allclose(pair[0], pair[1])
    assert embedding((17, 17), 1 / 17, "cubic", 0.4, 0.05) is sampler  # set-up is shared


def test_cell_centres_are_the_condiff_coefficient_points():
    np.testing.assert_allclose(cell_centres(4), [0.125, 0.375, 0.625, 0.875], rtol=1e-15)


def test_bad_covariance_settings_raise_config_errors():
    with pytest.raises(ConfigError, match="valid models are: cubic, exponential, gaussian"):
        CirculantEmbedding((8, 8), 0.1, "matern", 1.0, 0.05)
    with pytest.raises(ConfigError, match="padding must be at least 2"):
        CirculantEmbedding((8, 8), 0.1, "cubic", 1.0, 0.05, padding=1.5)
    with pytest.raises(ConfigError, match="variance and length > 0"):
        CirculantEmbedding((8, 8), 0.1, "cubic", -1.0, 0.05)
    with pytest.raises(ConfigError, match="noise must have shape"):
        CirculantEmbedding((8, 8), 0.1, "cubic", 1.0, 0.05).fields(np.zeros((8, 8)))
