"""The learned solvers' local coefficient features (sciml.learned.stencil_features)."""

import numpy as np
import pytest
import torch

from sciml import datasets
from sciml.learned.stencil_features import dense_features, feature_count, matrix_features


@pytest.mark.parametrize("pde, resolution, params", [
    ("darcy", 12, {}),
    ("condiff", 16, {"variance": 2.0}),
    ("poisson3d", 6, {"n_boxes": 2}),
])
def test_features_equal_the_pointwise_reference(pde, resolution, params):
    A, _, info = datasets.system(pde, resolution=resolution, seed=3, **params)
    shape = tuple(info["shape"])
    fast = matrix_features(A, shape, dtype=torch.float64).numpy()
    slow = dense_features(A, shape)
    assert fast.shape == (feature_count(len(shape)), *shape)
    np.testing.assert_allclose(fast, slow, rtol=0, atol=1e-14)
    # dimensionless and bounded for these diagonally dominant M-matrices
    np.testing.assert_allclose(matrix_features(7.5 * A, shape).numpy(), fast, atol=1e-6)
    assert slow.max() <= 0.0 and slow.min() >= -1.0
    # the boundary is visible: the coupling to offset -1 along the first axis is zero on the first
    # plane of that axis and nonzero inside
    k = 3 ** (len(shape) - 1) // 2  # (-1, 0, ..., 0) among the offsets without the centre
    assert np.all(slow[k][0] == 0) and np.any(slow[k][1:] < 0)


def test_high_contrast_shows_as_weak_faces():
    A, _, info = datasets.system("condiff", resolution=32, seed=0, variance=2.0)
    f = matrix_features(A, tuple(info["shape"])).numpy()
    faces = f[[1, 3, 4, 6]]  # the four 5-point neighbours among the 8 offsets (-1,0,1)^2 minus the centre
    interior = faces[:, 1:-1, 1:-1]
    assert interior.max() > -0.1 and interior.min() < -0.24  # near-decoupled faces next to ~1/4
