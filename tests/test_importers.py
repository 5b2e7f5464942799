"""Importers: tiny files in each source format round-trip with their values and axis order.

Fields are asymmetric (and grids non-square where the format allows), so a transposed or
reversed axis changes the numbers and fails the comparison.
"""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
import scipy.io
import scipy.sparse as sp
import scipy.sparse.linalg as spla

from sciml.cli.app import main
from sciml.datasets import importers
from sciml.datasets.format import open_dataset
from sciml.errors import ConfigError, DataError, UnknownNameError


def field(*shape: int) -> np.ndarray:
    """Values that differ under any permutation of the axes: sum of index * 10^k + noise."""
    grids = np.meshgrid(*[np.arange(s) for s in shape], indexing="ij")
    value = sum(g * 10.0 ** (len(shape) - 1 - k) for k, g in enumerate(grids))
    return value + np.random.default_rng(len(shape)).uniform(0, 0.5, shape)


def write_mat73(path, arrays: dict[str, np.ndarray]) -> None:
    """A file as MATLAB's ``save -v7.3`` writes it: HDF5 after a 512-byte text header,
    every array stored column-major (so HDF5 sees its axes reversed)."""
    with h5py.File(path, "w", userblock_size=512) as f:
        for key, value in arrays.items():
            dset = f.create_dataset(key, data=np.ascontiguousarray(value.T))
            dset.attrs["MATLAB_class"] = np.bytes_("double")
    text = b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: Mon Jan  1 00:00:00 2024 HDF5 schema 1.00 ."
    header = text.ljust(116) + bytes(8) + b"\x00\x02" + b"IM"
    with open(path, "r+b") as fh:
        fh.write(header)


def write_mat(path, arrays: dict[str, np.ndarray], version: str) -> None:
    if version == "7.3":
        write_mat73(path, arrays)
    else:
        scipy.io.savemat(path, arrays)


def load(path):
    ds = open_dataset(path)
    return ds, json.loads(ds.attrs["params"])


# ---------------------------------------------------------------- FNO .mat


@pytest.mark.parametrize("version", ["5", "7.3"])
def test_fno_darcy_keeps_values_and_axis_order(tmp_path, version):
    coeff, sol = field(3, 4, 5), -field(3, 4, 5) / 7
    write_mat(tmp_path / "darcy.mat", {"coeff": coeff, "sol": sol}, version)
    out = importers.convert("fno-mat", tmp_path / "darcy.mat", tmp_path / "darcy.h5")
    ds, params = load(out)
    with ds:
        assert ds["a"].dims == ("sample", "x", "y") and ds["u"].dims == ("sample", "x", "y")
        np.testing.assert_array_equal(ds["a"].values, coeff)
        np.testing.assert_array_equal(ds["u"].values, sol)
        np.testing.assert_allclose(ds["x"].values, [0, 1 / 3, 2 / 3, 1])
        np.testing.assert_allclose(ds["y"].values, [0, 0.25, 0.5, 0.75, 1])
        assert (ds.attrs["pde"], ds.attrs["inputs"], ds.attrs["outputs"]) == ("darcy", "a", "u")
        assert int(ds.attrs["seed"]) == -1 and "cell-centre" in ds.attrs["grid"]
        assert json.loads(ds.attrs["solver"])["name"] == "imported"
        assert ds["a"].dtype == np.float64
    assert params["source"] == "darcy.mat" and params["format"] == "fno-mat"
    assert params["keys"] == {"a": "coeff", "u": "sol"} and params["mat_version"] == version


@pytest.mark.parametrize("version", ["5", "7.3"])
def test_fno_burgers_keeps_values_on_periodic_grid(tmp_path, version):
    a, u = field(3, 8), field(3, 8) ** 2
    write_mat(tmp_path / "burgers.mat", {"a": a, "u": u}, version)
    ds, params = load(importers.convert("fno-mat", tmp_path / "burgers.mat", tmp_path / "b.h5"))
    with ds:
        assert (ds.attrs["pde"], ds.attrs["inputs"], ds.attrs["outputs"]) == ("burgers", "u0", "u")
        np.testing.assert_array_equal(ds["u0"].values, a)
        np.testing.assert_array_equal(ds["u"].values, u)
        np.testing.assert_allclose(ds["x"].values, np.arange(8) / 8)
    assert params["keys"] == {"u0": "a", "u": "u"}


def test_fno_named_keys_subsample_and_first_n(tmp_path):
    x_in, y_out = field(4, 9, 9), field(4, 9, 9) + 1000
    write_mat73(tmp_path / "custom.mat", {"input": x_in, "output": y_out, "grid": np.ones((1, 9))})
    out = importers.convert("fno-mat", tmp_path / "custom.mat", tmp_path / "c.h5", key_in="input",
                            key_out="output", pde="my-darcy", subsample=2, n=3, dtype="float32")
    ds, params = load(out)
    with ds:
        assert ds.attrs["pde"] == "my-darcy" and ds["a"].shape == (3, 5, 5) and ds["a"].dtype == np.float32
        np.testing.assert_allclose(ds["a"].values, x_in[:3, ::2, ::2], rtol=1e-6)
        np.testing.assert_allclose(ds["u"].values, y_out[:3, ::2, ::2], rtol=1e-6)
        np.testing.assert_allclose(ds["x"].values, np.linspace(0, 1, 9)[::2])
    assert params["keys"] == {"a": "input", "u": "output"} and params["n_source"] == 4


def test_fno_missing_key_names_the_keys_in_the_file(tmp_path):
    scipy.io.savemat(tmp_path / "m.mat", {"coeff": field(2, 3, 3), "other": field(2, 3, 3)})
    with pytest.raises(DataError, match="holds coeff, other"):
        importers.convert("fno-mat", tmp_path / "m.mat", tmp_path / "m.h5")
    with pytest.raises(DataError, match="no dataset 'sol'; the file holds: coeff, other"):
        importers.convert("fno-mat", tmp_path / "m.mat", tmp_path / "m.h5", key_in="coeff", key_out="sol")
    assert not (tmp_path / "m.h5").exists()


def test_fno_rejects_non_mat_files(tmp_path):
    (tmp_path / "notes.mat").write_text("these are not arrays\n" * 20)
    with pytest.raises(DataError, match="not a MATLAB .mat file"):
        importers.convert("fno-mat", tmp_path / "notes.mat", tmp_path / "o.h5")
    with h5py.File(tmp_path / "plain.h5", "w") as f:
        f["coeff"], f["sol"] = field(2, 3, 3), field(2, 3, 3)
    with pytest.raises(DataError, match="without the 'MATLAB 7.3 MAT-file' header"):
        importers.convert("fno-mat", tmp_path / "plain.h5", tmp_path / "o.h5")
    with pytest.raises(DataError, match="file not found"):
        importers.convert("fno-mat", tmp_path / "absent.mat", tmp_path / "o.h5")


# ---------------------------------------------------------------- PDEBench


def cell_centres(s: int) -> np.ndarray:
    return (np.arange(s) + 0.5) / s


def test_pdebench_darcy_keeps_values_axis_order_and_float32(tmp_path):
    nu, u = field(3, 4, 5).astype("f4"), (field(3, 4, 5) / 3).astype("f4")
    with h5py.File(tmp_path / "2D_DarcyFlow_beta0.1_Train.hdf5", "w") as f:
        f["nu"], f["tensor"] = nu, u[:, None]
        f["x-coordinate"], f["y-coordinate"] = cell_centres(4).astype("f4"), cell_centres(5).astype("f4")
        f.attrs["beta"] = 0.1
    ds, params = load(importers.convert("pdebench", tmp_path / "2D_DarcyFlow_beta0.1_Train.hdf5", tmp_path / "d.h5"))
    with ds:
        assert (ds.attrs["pde"], ds.attrs["inputs"], ds.attrs["outputs"]) == ("darcy-pdebench", "nu", "u")
        assert ds["nu"].dims == ("sample", "x", "y") and ds["u"].dtype == np.float32
        np.testing.assert_array_equal(ds["nu"].values, nu)
        np.testing.assert_array_equal(ds["u"].values, u)
        np.testing.assert_allclose(ds["x"].values, cell_centres(4), rtol=1e-6)
        np.testing.assert_allclose(ds["y"].values, cell_centres(5), rtol=1e-6)
    assert params["attrs"] == {"beta": 0.1} and params["keys"] == {"nu": "nu", "u": "tensor[:, 0]"}


def write_pdebench_burgers(path, tensor: np.ndarray, attrs: dict) -> np.ndarray:
    t = np.arange(tensor.shape[1] + 1) * 0.01  # one entry more than frames, as PDEBench writes it
    with h5py.File(path, "w") as f:
        f["tensor"] = tensor
        f["x-coordinate"] = cell_centres(tensor.shape[2]).astype("f4")
        f["t-coordinate"] = t.astype("f4")
        f.attrs.update(attrs)
    return t


def test_pdebench_burgers_splits_trajectory_into_u0_and_later_frames(tmp_path):
    tensor = field(3, 5, 8).astype("f4")
    t = write_pdebench_burgers(tmp_path / "1D_Burgers_Sols_Nu0.01.hdf5", tensor, {"Nu": 0.01})
    ds, params = load(importers.convert("pdebench", tmp_path / "1D_Burgers_Sols_Nu0.01.hdf5", tmp_path / "b.h5"))
    with ds:
        assert (ds.attrs["pde"], ds.attrs["inputs"], ds.attrs["outputs"]) == ("burgers-pdebench", "u0", "u")
        assert ds["u0"].dims == ("sample", "x") and ds["u"].dims == ("sample", "t", "x")
        np.testing.assert_array_equal(ds["u0"].values, tensor[:, 0])
        np.testing.assert_array_equal(ds["u"].values, tensor[:, 1:])
        np.testing.assert_allclose(ds["t"].values, t[1:5], rtol=1e-6)
        np.testing.assert_allclose(ds["x"].values, cell_centres(8), rtol=1e-6)
    assert params["attrs"] == {"Nu": pytest.approx(0.01)} and params["t0"] == 0.0


def test_pdebench_other_1d_files_need_a_pde_name(tmp_path):
    tensor = field(2, 3, 4).astype("f4")
    write_pdebench_burgers(tmp_path / "adv.hdf5", tensor, {"beta": 0.4})
    with pytest.raises(DataError, match=r"attributes \['beta'\].*--pde"):
        importers.convert("pdebench", tmp_path / "adv.hdf5", tmp_path / "a.h5")
    ds, _ = load(importers.convert("pdebench", tmp_path / "adv.hdf5", tmp_path / "a.h5", pde="advection-pdebench"))
    with ds:
        assert ds.attrs["pde"] == "advection-pdebench"
        np.testing.assert_array_equal(ds["u"].values, tensor[:, 1:])


# ---------------------------------------------------------------- ConDiff


def condiff_matrix_fortran(k: np.ndarray) -> sp.csr_matrix:
    """ConDiff's 5-point matrix with unknown p = i + n j (Fortran order), built entry by entry.

    The edge between nodes (i, j) and (i+1, j) has coefficient (k[i+1, j] + k[i+1, j+1]) / 2,
    the edge between (i, j) and (i, j+1) has (k[i, j+1] + k[i+1, j+1]) / 2; the diagonal is
    the sum of the four cells around the node; all scaled by (n + 1)^2.
    """
    n = k.shape[0] - 1
    A = sp.lil_matrix((n * n, n * n))
    for j in range(n):
        for i in range(n):
            p = i + n * j
            A[p, p] = k[i, j] + k[i + 1, j] + k[i, j + 1] + k[i + 1, j + 1]
            if i + 1 < n:
                A[p, p + 1] = A[p + 1, p] = -0.5 * (k[i + 1, j] + k[i + 1, j + 1])
            if j + 1 < n:
                A[p, p + n] = A[p + n, p] = -0.5 * (k[i, j + 1] + k[i + 1, j + 1])
    return (A * (n + 1) ** 2).tocsr()


def stencil_residual(k: np.ndarray, f: np.ndarray, u: np.ndarray) -> float:
    """||f - A u|| / ||f|| with A applied on the grid u[i, j] at ((i+1)h, (j+1)h)."""
    n = u.shape[0]
    up = np.pad(u, 1)  # zero Dirichlet values around the interior nodes
    c = up[1:-1, 1:-1]
    # coefficient of the edge from node (i, j) to its neighbour in each direction
    to_i_plus = 0.5 * (k[1:, :-1] + k[1:, 1:])
    to_i_minus = 0.5 * (k[:-1, :-1] + k[:-1, 1:])
    to_j_plus = 0.5 * (k[:-1, 1:] + k[1:, 1:])
    to_j_minus = 0.5 * (k[:-1, :-1] + k[1:, :-1])
    Au = (to_i_plus * (c - up[2:, 1:-1]) + to_i_minus * (c - up[:-2, 1:-1])
          + to_j_plus * (c - up[1:-1, 2:]) + to_j_minus * (c - up[1:-1, :-2])) * (n + 1) ** 2
    return float(np.linalg.norm(f - Au) / np.linalg.norm(f))


def write_condiff(path, n: int, samples: int, diffusion: bool) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(7)
    ks, rhs, xs = [], [], []
    for _ in range(samples):
        k = np.exp(rng.normal(size=(n + 1, n + 1))) if diffusion else np.ones((n + 1, n + 1))
        b = rng.normal(size=n * n)
        ks.append(k), rhs.append(b), xs.append(spla.spsolve(condiff_matrix_fortran(k).tocsc(), b))
    data = {"rhs": np.array(rhs), "x": np.array(xs)}
    if diffusion:
        data["k"] = np.array(ks)
    with h5py.File(path, "w") as f:
        for key, value in data.items():
            f[key] = value
    return data


def test_condiff_fortran_vectors_become_grids_that_satisfy_the_pde(tmp_path):
    n = 5
    data = write_condiff(tmp_path / "gaussian0.4_grid5_train.h5", n, samples=3, diffusion=True)
    ds, params = load(importers.convert("condiff", tmp_path / "gaussian0.4_grid5_train.h5", tmp_path / "c.h5"))
    with ds:
        assert (ds.attrs["pde"], ds.attrs["inputs"], ds.attrs["outputs"]) == ("condiff", "k f", "u")
        assert ds["k"].dims == ("sample", "xk", "yk") and ds["u"].dims == ("sample", "x", "y")
        assert ds["u"].dtype == np.float64
        np.testing.assert_allclose(ds["x"].values, np.arange(1, n + 1) / (n + 1))
        np.testing.assert_allclose(ds["xk"].values, (np.arange(n + 1) + 0.5) / (n + 1))
        k, f, u = ds["k"].values, ds["f"].values, ds["u"].values
        np.testing.assert_array_equal(k, data["k"])
        # node (i, j) = (2, 1) is unknown p = i + n j = 7 of the Fortran-ordered vectors
        assert u[1, 2, 1] == data["x"][1, 7] and f[0, 2, 1] == data["rhs"][0, 7]
        for s in range(3):
            assert stencil_residual(k[s], f[s], u[s]) < 1e-12
            # the residual check has teeth: the C-order reading (a transpose) fails it
            assert stencil_residual(k[s], f[s].T, u[s].T) > 1e-2
        np.testing.assert_allclose(ds["contrast"].values, data["k"].max(axis=(1, 2)) / data["k"].min(axis=(1, 2)))
        assert ds["residual"].values.max() < 1e-12
        assert json.loads(ds.attrs["solver"])["max_residual"] < 1e-12
    assert params["n"] == n and params["keys"]["u"].startswith("x")


def test_condiff_poisson_file_has_only_f_as_input(tmp_path):
    data = write_condiff(tmp_path / "poisson_grid4_test.h5", 4, samples=2, diffusion=False)
    ds, _ = load(importers.convert("condiff", tmp_path / "poisson_grid4_test.h5", tmp_path / "p.h5"))
    with ds:
        assert (ds.attrs["pde"], ds.attrs["inputs"], ds.attrs["outputs"]) == ("condiff-poisson", "f", "u")
        assert "k" not in ds and "contrast" not in ds
        np.testing.assert_array_equal(ds["u"].values[1], data["x"][1].reshape(4, 4, order="F"))
        assert ds["residual"].values.max() < 1e-12


def test_condiff_missing_key_names_the_keys_in_the_file(tmp_path):
    with h5py.File(tmp_path / "bad.h5", "w") as f:
        f["k"], f["rhs"] = np.ones((2, 4, 4)), np.ones((2, 9))
    with pytest.raises(DataError, match="no dataset 'x'; the file holds: k, rhs"):
        importers.convert("condiff", tmp_path / "bad.h5", tmp_path / "o.h5")


# ---------------------------------------------------------------- common behaviour


def test_nonfinite_samples_are_refused_unless_allowed(tmp_path):
    coeff = field(3, 4, 4)
    coeff[1, 2, 3] = np.nan
    scipy.io.savemat(tmp_path / "nan.mat", {"coeff": coeff, "sol": field(3, 4, 4)})
    out = tmp_path / "nan.h5"
    with pytest.raises(DataError, match=r"sample 1 of 'a' \(from coeff\) contains NaN.*--allow-nonfinite"):
        importers.convert("fno-mat", tmp_path / "nan.mat", out)
    assert not out.exists() and not (tmp_path / "nan.h5.partial").exists()
    importers.convert("fno-mat", tmp_path / "nan.mat", out, allow_nonfinite=True)
    with open_dataset(out, check_finite=False) as ds:
        assert np.isnan(ds["a"].values[1, 2, 3]) and np.isfinite(ds["a"].values[0]).all()


def test_existing_output_is_kept_unless_overwrite(tmp_path):
    scipy.io.savemat(tmp_path / "b.mat", {"a": field(2, 4), "u": field(2, 4)})
    out = tmp_path / "b.h5"
    importers.convert("fno-mat", tmp_path / "b.mat", out, n=1)
    with pytest.raises(DataError, match="exists.*--overwrite"):
        importers.convert("fno-mat", tmp_path / "b.mat", out)
    importers.convert("fno-mat", tmp_path / "b.mat", out, overwrite=True)
    with open_dataset(out) as ds:
        assert ds.sizes["sample"] == 2


def test_bad_format_option_and_count_are_config_errors(tmp_path):
    scipy.io.savemat(tmp_path / "b.mat", {"a": field(2, 4), "u": field(2, 4)})
    with pytest.raises(UnknownNameError, match="condiff, fno-mat, neuralop, pdebench, the-well"):
        importers.convert("netcdf", tmp_path / "b.mat", tmp_path / "o.h5")
    with pytest.raises(ConfigError, match=r"'condiff' takes no option key_in \(--key-in\); it takes none"):
        importers.convert("condiff", tmp_path / "b.mat", tmp_path / "o.h5", key_in="a")
    with pytest.raises(ConfigError, match="n must be an integer from 1 to 2"):
        importers.convert("fno-mat", tmp_path / "b.mat", tmp_path / "o.h5", n=5)
    assert sorted(importers.available()) == ["condiff", "fno-mat", "neuralop", "pdebench", "the-well"]


def run_cli(args, capsys):
    with pytest.raises(SystemExit) as exc:
        main([str(a) for a in args])
    out = capsys.readouterr()
    return exc.value.code, out.out, out.err


def test_cli_import_writes_file_and_errors_in_one_line(tmp_path, capsys):
    write_mat73(tmp_path / "d.mat", {"coeff": field(2, 3, 4), "sol": field(2, 3, 4)})
    code, out, err = run_cli(["import", "fno-mat", tmp_path / "d.mat", "--out", tmp_path / "d.h5",
                              "--no-progress"], capsys)
    assert code == 0, err
    assert "wrote" in out
    with open_dataset(tmp_path / "d.h5") as ds:
        np.testing.assert_array_equal(ds["u"].values, field(2, 3, 4))
    code, _, err = run_cli(["import", "pdebench", tmp_path / "d.mat", "--out", tmp_path / "p.h5"], capsys)
    lines = err.strip().splitlines()
    assert code == 1 and len(lines) == 1 and lines[0].startswith("error: ") and "no dataset 'tensor'" in lines[0]
