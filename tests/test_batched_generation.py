"""Generation with batched multigrid solves (``generate(..., device=)``, ``sciml generate --device``).

The batched path draws the inputs on the host exactly as the per-sample path does, so they are
bitwise equal; it solves ``batch`` systems at once with ``pcg-mg``, so the outputs agree with
the per-sample solver's to the solve tolerance (checked here through the true residual of the
batched answer in the per-sample matrix, and the solution difference).
"""

from __future__ import annotations

import numpy as np
import pytest

from sciml import datasets, solvers
from sciml.errors import ConfigError

pytestmark = pytest.mark.usefixtures("one_thread")

CASES = [
    ("darcy", {"resolution": 33}),
    ("condiff", {"resolution": 31, "variance": 2.0}),
    ("poisson", {"resolution": 33, "domain": "lshape"}),
    ("poisson3d", {"resolution": 12}),
]


@pytest.mark.parametrize("name,params", CASES, ids=[c[0] for c in CASES])
def test_batched_samples_equal_the_per_sample_path(name, params):
    gen = datasets.create(name, tol=1e-10, **params)
    indices = [3, 0, 7]
    batched = gen.samples(5, indices, device="cpu")
    for i, (arrays, solved) in zip(indices, batched):
        want, want_solved = gen.sample(5, i)
        assert set(arrays) == set(want)
        for key in gen.inputs:
            np.testing.assert_array_equal(arrays[key], want[key])  # inputs bitwise
        assert solved.method == "pcg-mg" and solved.residual <= 1e-10
        A, b, _ = datasets.system(name, seed=5, index=i, **params)
        x = solvers.solve(A, b, method="direct").x
        for key in gen.outputs:
            scale = np.abs(want[key]).max()
            np.testing.assert_allclose(arrays[key], want[key], rtol=0, atol=1e-7 * scale)
        assert np.abs(x).max() > 0


def test_generated_file_with_device_matches_the_serial_file(tmp_path):
    serial = datasets.generate("darcy", n=5, resolution=33, out=tmp_path / "a.h5", progress=False, dtype="float64")
    batched = datasets.generate("darcy", n=5, resolution=33, out=tmp_path / "b.h5", progress=False, dtype="float64",
                                device="cpu", batch=2)
    with datasets.open(serial) as a, datasets.open(batched) as b:
        np.testing.assert_array_equal(a["a"].values, b["a"].values)
        u, v = a["u"].values, b["u"].values
        assert np.abs(u - v).max() <= 1e-6 * np.abs(u).max()
        assert "pcg-mg" in str(b.attrs["solver"])


def test_device_is_refused_where_it_cannot_apply(tmp_path):
    with pytest.raises(ConfigError, match="drop --device"):
        datasets.generate("burgers", n=2, resolution=64, out=tmp_path / "b.h5", progress=False, device="cpu")
    with pytest.raises(ConfigError, match="batch must be"):
        datasets.generate("darcy", n=2, resolution=33, out=tmp_path / "d.h5", progress=False, device="cpu", batch=0)
    with pytest.raises(ConfigError, match="drop --workers"):
        datasets.generate("darcy", n=2, resolution=33, out=tmp_path / "d.h5", progress=False, device="cpu", workers=2)
    assert not (tmp_path / "d.h5").exists() and not (tmp_path / "b.h5").exists()


def test_default_batch_keeps_about_a_million_unknowns_on_a_cpu():
    from sciml.datasets.generators import default_batch

    assert default_batch(datasets.create("condiff", resolution=128), "cpu") == 64  # 2^20 / 128^2
    assert default_batch(datasets.create("darcy", resolution=421), "cpu") == 5     # 2^20 / 419^2
    assert default_batch(datasets.create("darcy", resolution=421), "cuda") == 95
    assert default_batch(datasets.create("darcy", resolution=33), "cuda") == 256   # capped


def test_cli_generate_with_device(tmp_path, capsys):
    from test_cli import assert_one_line_error, run_cli

    out = tmp_path / "c.h5"
    code, _, err = run_cli(["generate", "condiff", "--n", "3", "-s", "15", "--out", out, "--device", "cpu",
                            "--batch", "2", "--no-progress"], capsys)
    assert code in (0, None), err
    with datasets.open(out) as ds:
        assert ds["u"].shape == (3, 15, 15) and "pcg-mg" in str(ds.attrs["solver"])
    code, _, err = run_cli(["generate", "burgers", "--n", "2", "-s", "64", "--out", tmp_path / "w.h5", "--device", "cpu"], capsys)
    assert_one_line_error(code, err, "drop --device")
