"""3-D Poisson with obstacles: SPD matrix, no-flux stencil, order, generated data, system()."""

from __future__ import annotations

import numpy as np
import pytest

import sciml.datasets.poisson3d  # noqa: F401  (registers poisson3d)
from sciml import datasets
from sciml.datasets.poisson3d import random_obstacles, seal_pockets
from sciml.errors import ConfigError
from sciml.solvers import laplacian, solve
from sciml.solvers.discretisation import ORDER, masked_laplacian
from sciml.testing import assert_convergence_order, relative_residual


def _index(n: int, i: int, j: int, k: int) -> int:
    return (i * n + j) * n + k


def test_operator_is_symmetric_positive_definite():
    gen = datasets.create("poisson3d", resolution=7, n_boxes=2, n_spheres=2)
    inputs = gen.draw_inputs(np.random.default_rng([1, 0]))
    A, _ = gen.assemble(inputs)
    solid = inputs["mask"].reshape(-1) > 0.5
    assert 0 < solid.sum() < solid.size  # a real obstacle, and fluid left
    assert (A - A.T).nnz == 0  # exactly symmetric
    assert np.linalg.eigvalsh(A.toarray()).min() > 0
    fluid_block = A[~solid][:, ~solid].toarray()
    assert np.linalg.eigvalsh(fluid_block).min() > 0


def test_fluid_rows_next_to_an_obstacle_have_the_no_flux_stencil():
    n = 5
    solid = np.zeros((n,) * 3, dtype=bool)
    solid[2, 2, 2] = True
    A = masked_laplacian(solid).toarray() / (n + 1) ** 2  # in units of 1 / h^2
    centre = _index(n, 2, 2, 2)
    row = A[centre]
    assert row[centre] == 6 and np.count_nonzero(row) == 1  # decoupled p = 0
    assert np.count_nonzero(A[:, centre]) == 1
    for i, j, k in [(1, 2, 2), (3, 2, 2), (2, 1, 2), (2, 3, 2), (2, 2, 1), (2, 2, 3)]:
        row = A[_index(n, i, j, k)]
        assert row[_index(n, i, j, k)] == 5  # five conducting faces, none into the solid
        assert row[centre] == 0
        assert sorted(row[row < 0]) == [-1.0] * 5
    corner = A[_index(n, 0, 0, 0)]  # three Dirichlet faces still count on the diagonal
    assert corner[0] == 6 and sorted(corner[corner < 0]) == [-1.0] * 3


def test_without_obstacles_it_is_the_dirichlet_laplacian():
    assert abs(masked_laplacian(np.zeros((6, 6, 6), dtype=bool)) - laplacian(6, 3)).max() == 0
    A, b, info = datasets.system("poisson3d", resolution=6, n_boxes=0, n_spheres=0)
    assert abs(A - laplacian(6, 3)).max() == 0
    assert not info["inputs"]["mask"].any()


@pytest.mark.parametrize("wall", [False, True])
def test_order_two_on_a_manufactured_solution(wall):
    # u = sin(pi x) sin(pi y) sin(pi z): zero on the boundary and du/dx = 0 at x = 1/2, so
    # with solids at x > 1/2 (the face midway between x_{n/2-1} and x_{n/2} is at 1/2
    # exactly when n is even) it solves the no-flux problem in the fluid half
    hs, errors = [], []
    for n in (8, 16, 32):
        h = 1.0 / (n + 1)
        x = np.arange(1, n + 1) * h
        X = np.meshgrid(x, x, x, indexing="ij")
        exact = np.sin(np.pi * X[0]) * np.sin(np.pi * X[1]) * np.sin(np.pi * X[2])
        solid = np.zeros((n,) * 3, dtype=bool)
        if wall:
            solid[n // 2:] = True
        A = masked_laplacian(solid)
        b = np.where(solid, 0.0, 3 * np.pi**2 * exact).reshape(-1)
        u = solve(A, b, "pcg-amg", tol=1e-12).x.reshape(solid.shape)
        hs.append(h)
        errors.append(np.abs(u - exact)[~solid].max())
        assert np.all(u[solid] == 0)
    assert_convergence_order(hs, errors, ORDER, tol=0.15)


def test_generated_solutions_meet_the_tolerance(tmp_path):
    path = datasets.generate("poisson3d", n=2, resolution=12, seed=4, out=tmp_path / "p.h5",
                             dtype="float64", progress=False)
    ds = datasets.open(path)
    assert ds["u"].dims == ("sample", "x", "y", "z") and ds.attrs["inputs"] == "mask f"
    for i in range(2):
        mask, f, u = ds["mask"][i].values, ds["f"][i].values, ds["u"][i].values
        solid = mask > 0.5
        assert set(np.unique(mask)) <= {0.0, 1.0} and solid.any()
        assert np.all(f[solid] == 0) and np.all(u[solid] == 0)
        assert relative_residual(masked_laplacian(solid), u.reshape(-1), f.reshape(-1)) <= 1e-9
        assert float(ds["residual"][i]) <= 1e-10
    ds.close()


def test_two_dimensional_obstacles(tmp_path):
    path = datasets.generate("poisson3d", n=2, resolution=20, seed=4, out=tmp_path / "p2.h5", dtype="float64",
                             progress=False, dim=2)
    ds = datasets.open(path)
    assert ds["u"].dims == ("sample", "x", "y")
    for i in range(2):
        solid = ds["mask"][i].values > 0.5
        assert solid.any() and not solid.all()
        u, f = ds["u"][i].values.reshape(-1), ds["f"][i].values.reshape(-1)
        assert relative_residual(masked_laplacian(solid), u, f) <= 1e-9
        assert masked_laplacian(solid).shape == (400, 400)
    ds.close()
    with pytest.raises(ConfigError, match="dim must be 2 or 3"):
        datasets.system("poisson3d", resolution=8, dim=4)


def test_enclosed_fluid_pockets_are_filled():
    solid = np.zeros((9, 9, 9), dtype=bool)
    solid[2:7, 2:7, 2:7] = True
    solid[3:6, 3:6, 3:6] = False  # a hollow box: 27 sealed fluid cells
    solid[0, 0, 0] = True  # a solid on the rim leaves its neighbours connected
    sealed = seal_pockets(solid)
    assert sealed[3:6, 3:6, 3:6].all()
    assert (sealed ^ solid).sum() == 27
    A = masked_laplacian(sealed)
    assert np.all(A.diagonal() > 0)


def test_box_obstacle_covers_exactly_the_points_inside():
    x = np.arange(1, 11) / 11
    solid = random_obstacles(np.random.default_rng(2), x, 1, 0, (0.2, 0.5), (0.1, 0.1))
    replay = np.random.default_rng(2)  # the documented draw order: centre, then edge lengths
    centre, size = replay.uniform(0, 1, 3), replay.uniform(0.2, 0.5, 3)
    inside = [np.abs(x - centre[d]) <= size[d] / 2 for d in range(3)]
    np.testing.assert_array_equal(solid, inside[0][:, None, None] & inside[1][None, :, None] & inside[2])


def test_system_returns_the_generated_matrix():
    A, b, info = datasets.system("poisson3d", resolution=10, seed=1, index=3)
    again, _, _ = datasets.compute_sample("poisson3d", {"resolution": 10}, 1, 3)
    np.testing.assert_array_equal(info["inputs"]["mask"], again["mask"])
    assert abs(A - masked_laplacian(again["mask"] > 0.5)).max() == 0
    np.testing.assert_array_equal(b, again["f"].reshape(-1))
    assert info["shape"] == (10, 10, 10) and info["method"] == "pcg-jacobi"


def test_bad_obstacle_settings_raise_config_errors():
    with pytest.raises(ConfigError, match="box_size must be"):
        datasets.create("poisson3d", box_size=[0.5, 0.2])
    with pytest.raises(ConfigError, match="n_boxes and n_spheres must be >= 0"):
        datasets.create("poisson3d", n_spheres=-1)
