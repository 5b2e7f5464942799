"""Registry-wide properties, so a new generator or solve method is covered the day it is registered.

Generators: sample ``i`` is a pure function of ``(config, seed, i)`` (DESIGN.md: the same file
whatever the worker count, order or interruption): recomputed alone from the file's stored config it
equals the stored sample (inputs bitwise, outputs to the solver tolerance). Solve methods: every name
in ``sciml.solvers.available()``, learned ``NAME:RUN`` methods included, solves a small SPD system to
its tolerance, checked independently of the method's own bookkeeping and against ``spsolve``.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import scipy.sparse.linalg as spla

from sciml import datasets, solvers, training
from sciml.errors import UnknownNameError

# the smallest settings at which each generator makes a genuine sample (a few tenths of a second)
SMALL = {
    "burgers": dict(resolution=256),
    "condiff": dict(resolution=16),
    "condiff-poisson": dict(resolution=16),
    "darcy": dict(resolution=16),
    "poisson": dict(resolution=16),
    "poisson3d": dict(resolution=8),
    "wave": dict(resolution=33),
}


def test_every_generator_has_small_settings_here():
    assert sorted(SMALL) == datasets.available(), "add the new generator to SMALL so the tests below cover it"


@pytest.fixture(scope="module", params=sorted(SMALL))
def generated(request, tmp_path_factory):
    name = request.param
    path = datasets.generate(name, n=3, seed=5, out=tmp_path_factory.mktemp(name) / "d.h5", dtype="float64",
                             progress=False, **SMALL[name])
    ds = datasets.open(path)
    yield name, ds
    ds.close()


def _sample(ds, names, i):
    return {v: np.asarray(ds[v].isel(sample=i).values) for v in names}


def test_sample_depends_only_on_config_seed_and_index(generated):
    name, ds = generated
    inputs, outputs = ds.attrs["inputs"].split(), ds.attrs["outputs"].split()
    params = json.loads(ds.attrs["params"])
    alone, residual, _ = datasets.compute_sample(name, params, int(ds.attrs["seed"]), 2)
    stored_in, stored_out = _sample(ds, inputs, 2), _sample(ds, outputs, 2)
    for v in inputs:
        assert np.array_equal(alone[v], stored_in[v]), f"{name}: input {v} of sample 2 differs when computed alone"
    for v in outputs:
        scale = float(np.abs(stored_out[v]).max())
        np.testing.assert_allclose(alone[v], stored_out[v], rtol=0, atol=1e-8 * scale, err_msg=f"{name}: output {v}")
    assert residual <= 1e-6


def test_seed_and_index_change_the_inputs(generated):
    name, ds = generated
    inputs = ds.attrs["inputs"].split()
    params = json.loads(ds.attrs["params"])
    first, second = _sample(ds, inputs, 0), _sample(ds, inputs, 1)
    other_seed, _, _ = datasets.compute_sample(name, params, int(ds.attrs["seed"]) + 1, 0)
    varying = [v for v in inputs if not np.array_equal(first[v], second[v])]
    assert varying, f"{name}: samples 0 and 1 have identical inputs"
    assert any(not np.array_equal(first[v], other_seed[v]) for v in varying), f"{name}: another seed gives the same sample"


def test_outputs_are_finite_and_declared(generated):
    name, ds = generated
    for v in ds.attrs["inputs"].split() + ds.attrs["outputs"].split():
        assert v in ds.data_vars, f"{name}: declared variable {v} missing"
        assert np.isfinite(ds[v].values).all(), f"{name}: {v} has non-finite values"


# ----------------------------------------------------------------------------- solve methods


@pytest.fixture(scope="module")
def runs_for(tmp_path_factory):
    """A small trained run for every family of NAME:RUN methods."""
    d = tmp_path_factory.mktemp("learned")
    data = datasets.generate("darcy", n=6, resolution=16, seed=0, out=d / "darcy.h5", progress=False)
    # DCDM has no classical fallback yet (issue 21): it needs a network that learned something
    dcdm = training.train("dcdm", pde="poisson", resolution=15, steps=300, log_every=100, out=d / "dcdm", progress=False)
    precond = training.train("fno", task="precond", data=data, epochs=1, batch_size=4, rhs_per_system=2,
                             model_config={"modes": [4, 4], "width": 4}, out=d / "precond", progress=False)
    return {"dcdm": dcdm["run_dir"], "fcg": precond["run_dir"], "fgmres": precond["run_dir"],
            "hints": precond["run_dir"]}


def test_every_run_method_has_a_run_here(runs_for):
    run_methods = [m.split(":")[0] for m in solvers.available() if m.endswith(":RUN")]
    assert sorted(run_methods) == sorted(runs_for), "train a tiny run for the new NAME:RUN method in runs_for"


def _systems():
    A = solvers.laplacian(15, dim=2)
    yield "poisson", A, np.random.default_rng(0).standard_normal(A.shape[0])
    A, b, _ = datasets.system("darcy", resolution=17, seed=0)  # 15^2 unknowns, as the dcdm run's grid
    yield "darcy", A, b


@pytest.mark.parametrize("method", solvers.available())
def test_every_method_solves_to_its_tolerance(method, runs_for):
    name = method.split(":")[0]
    tol = 1e-6 if name == "dcdm" else 1e-8
    for label, A, b in _systems():
        run = f"{name}:{runs_for[name]}" if method.endswith(":RUN") else method
        r = solvers.solve(A, b, method=run, tol=tol)
        true = np.linalg.norm(b - A @ r.x) / np.linalg.norm(b)
        assert r.converged and true <= tol * 1.01, f"{method} on {label}: residual {true:.2e} (tol {tol:g})"
        assert r.converged == (true <= tol * 1.01)
        assert r.iterations >= 1 and np.isclose(r.residuals[0], 1.0) or method == "direct"
        exact = spla.spsolve(A.tocsc(), b)
        # error <= cond(A) * residual; cond of these 15^2 grids is below 2e4 (Darcy's contrast 4 included)
        err = np.linalg.norm(r.x - exact) / np.linalg.norm(exact)
        assert err <= 2e4 * tol, f"{method} on {label}: error {err:.2e} against spsolve"


def test_an_unknown_method_lists_the_valid_ones():
    with pytest.raises(UnknownNameError, match="valid solver methods are: auto"):
        solvers.solve(solvers.laplacian(5, dim=2), np.ones(25), method="pcg-multigird")
