"""Registry-wide properties, so a new generator or solve method is covered the day it is registered.

Generators (every name in ``sciml.datasets.available()``, at a tiny resolution): sample ``i`` is a
pure function of ``(config, seed, i)`` (DESIGN.md: the same file whatever the order or
interruption): computed alone it equals sample ``i`` of a generated file (inputs bitwise, outputs
to the solver tolerance); another seed and another index change the random inputs; generating in
reverse order, or interrupted and resumed, writes the same file; the file opens with
``sciml.datasets.open`` and holds the declared, finite variables.

Solve methods (every name in ``sciml.solvers.available()``, learned ``NAME:RUN`` methods with tiny
runs trained here): on small SPD systems (2-D Poisson, Darcy) each reaches its tolerance by the true
residual ``||b - A x|| / ||b||`` computed here, agrees with ``scipy.sparse.linalg.spsolve`` within
the bound ``cond(A) * (residual + reference residual)``, and reports consistent ``SolveResult``
fields. A new generator fails until ``SMALL`` gives it tiny settings (so it cannot go untested,
nor be tested at settings nobody chose); a new ``NAME:RUN`` method fails until ``RUN_FIXTURES``
names a fixture that trains a run for it.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import scipy.sparse.linalg as spla

from sciml import datasets, solvers, training
from sciml.datasets import generators
from sciml.datasets.generators import GenerationInterrupted
from sciml.datasets.random_fields import neumann_grf
from sciml.errors import ConfigError, UnknownNameError

pytestmark = pytest.mark.usefixtures("one_thread")

# ----------------------------------------------------------------------------- generators

#: tiny settings of every registered generator (a few ms per sample); a generator missing here
#: fails ``test_every_generator_has_small_settings`` and each of its parametrised tests
SMALL = {
    "burgers": {"resolution": 64},  # 16 points: 0.15 s per sample (stiffer ODE), 64: 0.01 s
    "condiff": {"resolution": 16},
    "condiff-poisson": {"resolution": 16},
    "darcy": {"resolution": 16},
    "poisson": {"resolution": 16},
    "poisson3d": {"resolution": 8},  # 8^3 unknowns
    "wave": {"resolution": 17, "modes": 8},  # the cno mode needs resolution >= modes + 2
}
#: further configurations whose sample takes another code path than the default one
VARIANTS = [
    ("darcy", {"resolution": 17, "subsample": 2}),  # stored arrays strided from the solve grid
    ("poisson", {"resolution": 16, "domain": "lshape"}),  # masked domain: a constant input
    ("wave", {"resolution": 17, "mode": "variable"}),  # leapfrog solve instead of the sine series
]
CASES = [(name, SMALL.get(name)) for name in datasets.available()]
CASES += [(name, params) for name, params in VARIANTS if name in datasets.available()]
IDS = [name if i < len(datasets.available()) else f"{name}-" + "-".join(f"{k}={v}" for k, v in p.items() if k != "resolution")
       for i, (name, p) in enumerate(CASES)]
N, SEED = 4, 5


def test_every_generator_has_small_settings():
    missing = set(datasets.available()) - set(SMALL)
    assert not missing, f"generators without tiny settings: {sorted(missing)}; add them to SMALL in {__name__}"
    stale = (set(SMALL) | {name for name, _ in VARIANTS}) - set(datasets.available())
    assert not stale, f"settings for generators that are not registered: {sorted(stale)}"


@pytest.fixture(scope="module", params=CASES, ids=IDS)
def generated(request, tmp_path_factory):
    """``(name, params, path)``: a float64 file of ``N`` samples of one case."""
    name, params = request.param
    if params is None:
        pytest.fail(f"generator {name!r} has no tiny settings: add it to SMALL in {__name__}")
    path = datasets.generate(name, n=N, seed=SEED, out=tmp_path_factory.mktemp(name) / "d.h5", dtype="float64",
                             progress=False, **params)
    return name, params, path


def _arrays(path) -> tuple[dict[str, np.ndarray], dict]:
    """Every variable (``done`` and ``residual`` included) and every attribute but ``created``."""
    with datasets.open(path) as ds:
        data = {v: ds[v].values for v in ds.variables}
        attrs = {k: v for k, v in ds.attrs.items() if k != "created"}
    return data, attrs


def _output_tolerance(config) -> float:
    """Relative error of a solve to relative residual ``tol``: at most ``cond(A) tol``, and the
    matrices here (16^2 Laplacian: cond 100, times the coefficient contrast) have cond < 1e4."""
    return 1e4 * getattr(config, "tol", 1e-12)


def test_file_opens_and_holds_the_declared_finite_variables(generated):
    name, params, path = generated
    gen = datasets.create(name, **params)
    with datasets.open(path) as ds:  # validates the format (and refuses NaN/Inf)
        assert (ds.attrs["pde"], ds.attrs["inputs"].split(), ds.attrs["outputs"].split()) == \
            (name, list(gen.inputs), list(gen.outputs))
        assert json.loads(ds.attrs["params"])["resolution"] == params["resolution"]
        assert int(ds.attrs["seed"]) == SEED and ds.sizes["sample"] == N
        assert ds["done"].values.tolist() == [1] * N
        for v, dims in gen.variables().items():
            assert v in ds.data_vars, f"{name}: declared variable {v!r} missing"
            assert ds[v].dims == ("sample", *dims), f"{name}: {v} has dims {ds[v].dims}"
            assert np.isfinite(ds[v].values).all(), f"{name}: {v} has non-finite values"
        for v in gen.outputs:  # a solver that returned zeros (or nothing) would still be finite
            assert np.abs(ds[v].values).max() > 0, f"{name}: output {v} is identically zero"
        residuals = ds["residual"].values  # what each generator reports (time integrators: an error estimate)
        assert np.all(np.isfinite(residuals) & (residuals >= 0)), residuals
        if isinstance(gen, datasets.LinearGenerator):  # a linear solve's relative residual
            assert np.all(residuals <= gen.config.tol), residuals


@pytest.mark.parametrize("index", [0, N - 1])
def test_sample_alone_equals_the_sample_in_the_file(generated, index):
    name, _, path = generated
    with datasets.open(path) as ds:
        params = json.loads(ds.attrs["params"])  # the full config as stored
        stored = {v: ds[v].isel(sample=index).values for v in ds.data_vars if v not in ("done", "residual")}
        stored_residual = float(ds["residual"][index])
    gen = datasets.create(name, **params)
    alone, residual, _ = datasets.compute_sample(name, params, SEED, index)
    assert set(alone) == set(stored), f"{name}: computed {sorted(alone)}, stored {sorted(stored)}"
    rtol = _output_tolerance(gen.config)
    for v in alone:
        if v in gen.inputs:
            assert np.array_equal(alone[v], stored[v]), f"{name}: input {v} of sample {index} differs when computed alone"
        else:
            scale = float(np.abs(stored[v]).max())
            np.testing.assert_allclose(alone[v], stored[v], rtol=0, atol=rtol * scale, err_msg=f"{name}: {v}")
    assert residual == pytest.approx(stored_residual, rel=1e-6, abs=1e-15)


def test_another_seed_or_index_changes_the_random_inputs(generated):
    name, params, _ = generated
    gen = datasets.create(name, **params)
    base, _, _ = datasets.compute_sample(name, params, SEED, 1)
    by_index, _, _ = datasets.compute_sample(name, params, SEED, 2)
    by_seed, _, _ = datasets.compute_sample(name, params, SEED + 1, 1)
    index_varies = {v for v in gen.inputs if not np.array_equal(base[v], by_index[v])}
    seed_varies = {v for v in gen.inputs if not np.array_equal(base[v], by_seed[v])}
    assert index_varies, f"{name}: samples 1 and 2 have identical inputs"
    # an input drawn from the index alone (or the seed alone) would vary with one and not the other
    assert index_varies == seed_varies, f"{name}: varies with the index {index_varies}, with the seed {seed_varies}"


def test_reverse_order_and_resume_write_the_same_file(generated, tmp_path, monkeypatch):
    name, params, path = generated
    reference, reference_attrs = _arrays(path)
    kw = dict(n=N, seed=SEED, dtype="float64", progress=False, **params)

    in_order = generators._in_process
    monkeypatch.setattr(generators, "_in_process", lambda gen, seed, todo, *rest: in_order(gen, seed, todo[::-1], *rest))
    reverse = datasets.generate(name, out=tmp_path / "reverse.h5", **kw)
    monkeypatch.setattr(generators, "_in_process", in_order)

    cls = type(datasets.create(name, **params))
    sample = cls.sample

    def interrupt_at_two(self, seed, index):
        if index == 2:
            raise KeyboardInterrupt
        return sample(self, seed, index)

    monkeypatch.setattr(cls, "sample", interrupt_at_two)
    with pytest.raises(GenerationInterrupted) as info:
        datasets.generate(name, out=tmp_path / "resumed.h5", **kw)
    assert info.value.done == 2 and info.value.partial.exists()
    monkeypatch.setattr(cls, "sample", sample)
    resumed = datasets.generate(name, out=tmp_path / "resumed.h5", resume=True, **kw)

    for other in (reverse, resumed):
        data, attrs = _arrays(other)
        assert attrs == reference_attrs
        assert sorted(data) == sorted(reference)
        for v in reference:
            assert np.array_equal(data[v], reference[v]), f"{name}: {v} differs in {other.name}"


# ----------------------------------------------------------------------------- solve methods

TOL = 1e-8

#: the fixture that trains a tiny run for each family of ``NAME:RUN`` methods
RUN_FIXTURES = {"dcdm": "dcdm_run", "dcdm-mg": "dcdm_run", "fcg": "precond_run", "fgmres": "precond_run", "hints": "precond_run",
                "nmg": "nmg_run"}


@pytest.fixture(scope="module")
def dcdm_run(tmp_path_factory):
    # DCDM has no classical fallback: 150 steps at 16^2 (about 3 s) reach 1e-8 on the systems
    # below in at most ~70 of its 500 iterations (100 steps: 96 on Poisson 31^2; 20 steps: stalls,
    # residual 0.2 on Poisson 15^2 and 1.5 on Darcy 16 after all 500 iterations)
    out = tmp_path_factory.mktemp("dcdm") / "run"
    return training.train("dcdm", pde="poisson", resolution=16, steps=150, log_every=50, out=out,
                          progress=False)["run_dir"]


@pytest.fixture(scope="module")
def precond_run(tmp_path_factory):
    # one epoch of a tiny FNO (2.5 s): fcg/fgmres hand over to their AMG fallback when it stops helping
    d = tmp_path_factory.mktemp("precond")
    data = datasets.generate("darcy", n=8, resolution=16, seed=0, out=d / "darcy.h5", progress=False)
    return training.train("fno", task="precond", data=data, epochs=1, batch_size=4, rhs_per_system=2,
                          model_config={"modes": [4, 4], "width": 4}, out=d / "run", progress=False)["run_dir"]


@pytest.fixture(scope="module")
def nmg_run(tmp_path_factory):
    # 20 steps on 8 Darcy matrices of 14^2 unknowns (about 2 s)
    d = tmp_path_factory.mktemp("nmg")
    data = datasets.generate("darcy", n=8, resolution=16, seed=0, out=d / "darcy.h5", progress=False)
    return training.train("nmg", data=data, steps=20, batch_size=4, log_every=10, out=d / "run",
                          progress=False)["run_dir"]


def _darcy():
    a = np.where(neumann_grf(np.random.default_rng(3), (19, 19)) >= 0, 12.0, 3.0)  # contrast 4
    A = solvers.darcy_operator(a)
    return A, np.ones(A.shape[0])


def _poisson(n):
    A = solvers.laplacian(n, dim=2)
    return A, np.random.default_rng(n).standard_normal(A.shape[0])


@pytest.fixture(scope="module")
def systems():
    """``label -> (A, b, x_ref, its residual, cond(A))`` with the reference by ``spsolve``."""
    out = {}
    A16, b16, _ = datasets.system("darcy", resolution=16, seed=0)  # the generator's own matrix, 14^2 unknowns
    cases = {"poisson15": _poisson(15), "poisson31": _poisson(31), "darcy16": (A16, b16), "darcy19": _darcy()}
    for label, (A, b) in cases.items():
        x_ref = spla.spsolve(A.tocsc(), b)
        eig = np.linalg.eigvalsh(A.toarray())
        assert eig[0] > 0  # SPD
        out[label] = (A, b, x_ref, _true_residual(A, x_ref, b), eig[-1] / eig[0])
    return out


def _true_residual(A, x, b) -> float:
    return float(np.linalg.norm(b - A @ x) / np.linalg.norm(b))


def _method(method: str, request) -> str:
    """``method`` with ``RUN`` replaced by the run its fixture trained."""
    if not method.endswith(":RUN"):
        return method
    kind = method.split(":")[0]
    if kind not in RUN_FIXTURES:
        pytest.fail(f"no fixture trains a run for {method}: add one to RUN_FIXTURES in {__name__}")
    return f"{kind}:{request.getfixturevalue(RUN_FIXTURES[kind])}"


def test_every_run_method_has_a_run_fixture():
    kinds = {m.split(":")[0] for m in solvers.available() if m.endswith(":RUN")}
    assert kinds == set(RUN_FIXTURES), f"NAME:RUN methods {sorted(kinds)}, fixtures for {sorted(RUN_FIXTURES)}"


@pytest.mark.parametrize("label", ["poisson15", "poisson31", "darcy16", "darcy19"])
@pytest.mark.parametrize("method", solvers.available())
def test_every_method_converges_and_agrees_with_spsolve(method, label, systems, request):
    A, b, x_ref, ref_residual, cond = systems[label]
    run = _method(method, request)
    r = solvers.solve(A, b, method=run, tol=TOL)
    true = _true_residual(A, r.x, b)
    assert true <= TOL, f"{method} on {label}: true residual {true:.2e} > tol {TOL:g} after {r.iterations} iterations"
    assert r.converged == (true <= TOL)
    assert r.residual == pytest.approx(true, rel=1e-6, abs=1e-15), "the last history entry is not the true residual"
    assert r.residuals[0] == pytest.approx(1.0, rel=1e-12)  # x0 = 0
    assert r.iterations >= 1 and len(r.residuals) >= 2
    assert r.setup_time >= 0 and r.solve_time >= 0 and np.isfinite(r.total_time)
    assert r.method == (solvers.choose_method(A) if method == "auto" else run)
    # x - x_ref = A^-1 (r_ref - r), ||x_ref|| >= ||b|| / ||A||: the relative error is at most
    # cond(A) (residual + reference residual), whatever the method did
    err = np.linalg.norm(r.x - x_ref) / np.linalg.norm(x_ref)
    bound = 1.01 * cond * (true + ref_residual)
    assert err <= bound, f"{method} on {label}: error {err:.2e} against spsolve above cond * residual = {bound:.2e}"


@pytest.mark.parametrize("method", solvers.available())
def test_history_starts_at_the_residual_of_the_initial_guess(method, systems, request):
    A, b, x_ref, _, _ = systems["darcy19"]
    x0 = x_ref + 0.01 * np.abs(x_ref).max() * np.random.default_rng(1).standard_normal(b.size)
    r = solvers.solve(A, b, method=_method(method, request), tol=TOL, x0=x0)
    assert r.residuals[0] == pytest.approx(_true_residual(A, x0, b), rel=1e-9)
    assert 0.01 < r.residuals[0] < 100  # neither the zero guess's 1 nor a solved system's 0 by accident
    assert _true_residual(A, r.x, b) <= TOL and r.converged


@pytest.mark.parametrize("method", solvers.available())
def test_converged_flag_is_the_true_residual_test_under_an_iteration_cap(method, systems, request):
    A, b, _, _, _ = systems["poisson31"]
    tol = 1e-10
    r = solvers.solve(A, b, method=_method(method, request), tol=tol, maxiter=2)
    true = _true_residual(A, r.x, b)
    assert r.converged == (true <= tol), f"{method}: converged={r.converged} with true residual {true:.2e}"
    assert r.residual == pytest.approx(true, rel=1e-6, abs=1e-15)
    if r.method != "direct":  # the direct solve ignores maxiter; two steps of anything else cannot reach 1e-10
        assert not r.converged


def test_an_unknown_method_lists_the_valid_ones():
    A, b = _poisson(5)
    for bad in ("pcg-multigird", "nope:runs/x"):
        with pytest.raises(UnknownNameError) as info:
            solvers.solve(A, b, method=bad)
        assert info.value.valid == sorted(solvers.available())
        message = str(info.value)
        assert "\n" not in message and repr(bad) in message
        assert all(name in message for name in solvers.available()), message
    with pytest.raises(ConfigError, match="needs a trained run directory: dcdm:RUN"):
        solvers.solve(A, b, method="dcdm")
