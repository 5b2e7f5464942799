"""2-D Poisson on non-rectangular domains (L-shape, square with holes): matrix, mask, order, data."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse.linalg as spla
import xarray as xr

from sciml import datasets
from sciml.datasets.poisson import HOLES, PoissonConfig, domain_laplacian, outside_mask
from sciml.errors import ConfigError
from sciml.solvers import discretisation
from sciml.testing import relative_residual


def _nodes(n: int) -> np.ndarray:
    return np.arange(1, n + 1) / (n + 1)


def test_square_default_is_unchanged():
    """The default assembles exactly the plain Laplacian and the drawn f, and stores no mask."""
    gen = datasets.create("poisson", resolution=12)
    assert gen.config.domain == "square" and gen.inputs == ("f",)
    assert set(gen.variables()) == {"f", "u"}
    A, b, info = datasets.system("poisson", resolution=12, seed=3, index=1)
    L = discretisation.laplacian(12, 2)
    assert (A != L).nnz == 0 and np.array_equal(A.data, L.data) and np.array_equal(A.indices, L.indices)
    assert np.array_equal(b, info["inputs"]["f"].reshape(-1))
    assert set(info["inputs"]) == {"f"}
    # same forcing draws as before: the domains reuse them, cut to the domain
    lshape = datasets.create("poisson", resolution=12, domain="lshape")
    f_l = lshape.draw_inputs(np.random.default_rng([3, 1]))["f"]
    inside = ~outside_mask("lshape", _nodes(12))
    assert np.array_equal(f_l[inside], info["inputs"]["f"][inside])
    # with no outside node the domain matrix is the Laplacian, bit for bit
    D = domain_laplacian(np.zeros((12, 12), dtype=bool))
    assert np.array_equal(D.toarray(), L.toarray())


def test_domain_matrix_is_spd_with_dirichlet_rows():
    n = 15
    out = outside_mask("lshape", _nodes(n))
    A = domain_laplacian(out)
    assert (A - A.T).nnz == 0
    assert np.linalg.eigvalsh(A.toarray()).min() > 0
    Ad = A.toarray() / (n + 1) ** 2  # units of 1 / h^2
    idx = lambda i, j: i * n + j  # noqa: E731
    # node (6, 7) = (7/16, 8/16) has its neighbour (7, 7) = (0.5, 0.5) on the corner: Dirichlet
    row = Ad[idx(6, 7)]
    assert out[7, 7] and not out[6, 7]
    assert row[idx(6, 7)] == 4 and row[idx(7, 7)] == 0 and np.count_nonzero(row) == 4
    # an outside row is the decoupled u = 0
    row = Ad[idx(10, 10)]
    assert row[idx(10, 10)] == 4 and np.count_nonzero(row) == 1


def test_lshape_mask_outside_zero_and_residual():
    n = 31
    gen = datasets.create("poisson", resolution=n, domain="lshape", tol=1e-10)
    inputs = gen.draw_inputs(np.random.default_rng([0, 0]))
    mask = inputs["mask"]
    assert mask.shape == (n, n) and set(np.unique(mask)) == {0.0, 1.0}
    h = 1.0 / (n + 1)
    inside_fraction = 1.0 - mask.mean()
    assert abs(inside_fraction - 0.75) < 2 * h  # 705 / 961 = 0.734 at n = 31
    solved = gen.solve(inputs)
    u = solved.outputs["u"]
    assert np.all(u[mask == 1] == 0.0) and np.all(inputs["f"][mask == 1] == 0.0)
    assert np.abs(u[mask == 0]).max() > 0
    A, b = gen.assemble(inputs)
    assert relative_residual(A, u.reshape(-1), b) <= 1e-10
    assert solved.residual <= 1e-10


def test_holes_geometry_is_fixed():
    n = 63
    gen = datasets.create("poisson", resolution=n, domain="holes")
    m0 = gen.draw_inputs(np.random.default_rng([0, 0]))["mask"]
    m1 = gen.draw_inputs(np.random.default_rng([5, 7]))["mask"]
    assert np.array_equal(m0, m1)
    removed = sum(np.pi * r**2 for _, _, r in HOLES)
    assert abs(m0.mean() - removed) < 0.02
    solved = gen.solve(gen.draw_inputs(np.random.default_rng([0, 0])))
    assert np.all(solved.outputs["u"][m0 == 1] == 0.0)


def _lshape_error(n: int) -> float:
    """Max nodal error for u* = e^(x+y) sin(2 pi x) sin(2 pi y), zero on the L's boundary."""
    gen = datasets.create("poisson", resolution=n, domain="lshape")
    X, Y = np.meshgrid(_nodes(n), _nodes(n), indexing="ij")
    g, s = np.exp(X + Y), np.sin(2 * np.pi * X) * np.sin(2 * np.pi * Y)
    mixed = np.cos(2 * np.pi * X) * np.sin(2 * np.pi * Y) + np.sin(2 * np.pi * X) * np.cos(2 * np.pi * Y)
    exact = g * s
    f = -g * ((2 - 8 * np.pi**2) * s + 4 * np.pi * mixed)  # -Laplace(g s)
    A, b = gen.assemble({"f": f})
    u = spla.spsolve(A.tocsc(), b).reshape(n, n)
    inside = ~outside_mask("lshape", _nodes(n))
    assert np.all(u[~inside] == 0)
    return float(np.abs(u - np.where(inside, exact, 0.0)).max())


def test_lshape_manufactured_solution_converges_second_order():
    e31, e63 = _lshape_error(31), _lshape_error(63)
    ratio = e31 / e63
    assert e63 < 1e-2
    assert ratio > 3.5, f"error ratio {ratio:.3f} (e31={e31:.3e}, e63={e63:.3e})"


def test_generated_lshape_file_has_mask_and_reproduces(tmp_path):
    kw = dict(n=3, resolution=16, seed=0, domain="lshape", progress=False)
    p1 = datasets.generate("poisson", out=tmp_path / "x.h5", **kw)
    p2 = datasets.generate("poisson", out=tmp_path / "y.h5", **kw)
    with xr.open_dataset(p1) as a, xr.open_dataset(p2) as b:
        assert a["mask"].dims == ("sample", "x", "y")
        assert a.attrs["inputs"] == "mask f"
        assert np.array_equal(a["mask"].values[0], outside_mask("lshape", _nodes(16)).astype(float))
        for v in ("mask", "f", "u"):
            assert np.array_equal(a[v].values, b[v].values)
        assert np.all(a["u"].values[a["mask"].values == 1] == 0)
        assert not np.array_equal(a["f"].values[0], a["f"].values[1])


def test_invalid_domains_are_rejected():
    with pytest.raises(ConfigError, match="circle") as err:
        datasets.create("poisson", resolution=8, domain="circle")
    assert all(name in str(err.value) for name in ("square", "lshape", "holes"))
    with pytest.raises(ConfigError, match="square, lshape, holes"):
        PoissonConfig(resolution=8, domain="circle")  # the dataclass's own check
    with pytest.raises(ConfigError, match="2-D only"):
        datasets.create("poisson", resolution=8, dim=3, domain="lshape")
