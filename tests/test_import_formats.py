"""``sciml import neuralop`` and ``sciml import the-well``: tiny files written in each layout by
an independent writer (a plain ``torch.save`` dict of tensors, plain ``h5py``) go through the
CLI and land with their values on the right axes.

Values are ``field(...)`` (a different number under any permutation of the axes) on non-square
grids, so a transposed, reversed or misplaced axis fails the comparison.
"""

from __future__ import annotations

import json
import pickle

import h5py
import numpy as np
import pytest
import torch

from sciml.datasets.format import open_dataset
from sciml.datasets.importers import neuralop
from test_cli import assert_one_line_error, run_cli

pytestmark = pytest.mark.usefixtures("one_thread")


def field(*shape: int) -> np.ndarray:
    """sum_k index_k * 10^(rank-1-k) + a fraction: no two axes can be swapped unnoticed."""
    grids = np.meshgrid(*[np.arange(s) for s in shape], indexing="ij")
    value = sum(g * 10.0 ** (len(shape) - 1 - k) for k, g in enumerate(grids))
    return (value + np.random.default_rng(len(shape)).uniform(0, 0.5, shape)).astype(np.float32)


def imported(tmp_path, capsys, fmt, src, *options):
    out = tmp_path / "out.h5"
    code, stdout, err = run_cli(["import", fmt, src, "--out", out, "--no-progress", *options], capsys)
    assert code == 0, err
    assert "wrote" in stdout
    ds = open_dataset(out, check_finite="--allow-nonfinite" not in options)
    return ds, json.loads(ds.attrs["params"])


def assert_refused(tmp_path, capsys, fmt, cases):
    """Each ``([file, *options], needle)`` is refused in one line naming ``needle``, leaving no file."""
    for args, needle in cases:
        code, _, err = run_cli(["import", fmt, tmp_path / args[0], "--out", tmp_path / "o.h5", "--no-progress",
                                *args[1:]], capsys)
        assert_one_line_error(code, err, needle)
        assert not (tmp_path / "o.h5").exists() and not (tmp_path / "o.h5.partial").exists()


# ---------------------------------------------------------------- neuraloperator .pt


def save_pt(path, **arrays):
    torch.save({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in arrays.items()}, path)


@pytest.mark.parametrize("channel", [False, True])
def test_neuralop_darcy_keeps_values_axes_and_node_grid(tmp_path, capsys, channel):
    x, y = field(5, 3, 4), -field(5, 3, 4) / 7
    src = tmp_path / "darcy_train_16.pt"
    save_pt(src, x=x[:, None] if channel else x, y=y[:, None] if channel else y)
    ds, params = imported(tmp_path, capsys, "neuralop", src)
    with ds:
        assert ds["a"].dims == ("sample", "x", "y") and ds["u"].dims == ("sample", "x", "y")
        np.testing.assert_array_equal(ds["a"].values, x)
        np.testing.assert_array_equal(ds["u"].values, y)
        np.testing.assert_allclose(ds["x"].values, [0, 0.5, 1])
        np.testing.assert_allclose(ds["y"].values, [0, 1 / 3, 2 / 3, 1])
        assert (ds.attrs["pde"], ds.attrs["inputs"], ds.attrs["outputs"]) == ("darcy", "a", "u")
        assert "boundary included" in ds.attrs["grid"] and ds["a"].dtype == np.float32
    assert params["format"] == "neuralop" and params["source"] == "darcy_train_16.pt"
    assert params["keys"]["a"].startswith("x") and params["source_shapes"]["x"][0] == 5


@pytest.mark.parametrize("where", ["last", "first"])
def test_neuralop_navier_stokes_time_axis_first_or_last(tmp_path, capsys, where):
    u0, traj = field(2, 3, 4), field(2, 3, 4, 6)  # traj (N, x, y, T), sciml order (N, T, x, y)
    stored = traj if where == "last" else np.moveaxis(traj, -1, 1)
    src = tmp_path / "ns_V1e-3_N2.pt"
    save_pt(src, x=u0, y=stored)
    ds, params = imported(tmp_path, capsys, "neuralop", src)
    with ds:
        assert ds.attrs["pde"] == "navier-stokes" and (ds.attrs["inputs"], ds.attrs["outputs"]) == ("u0", "u")
        assert ds["u"].dims == ("sample", "t", "x", "y")
        np.testing.assert_array_equal(ds["u"].values, np.moveaxis(traj, -1, 1))
        np.testing.assert_array_equal(ds["u0"].values, u0)
        np.testing.assert_allclose(ds["x"].values, [0, 1 / 3, 2 / 3])  # periodic: j/s
        np.testing.assert_allclose(ds["t"].values, np.arange(6))
        assert "periodic" in ds.attrs["grid"] and "frame index" in ds.attrs["grid"]
    assert f"time axis {where}" in params["keys"]["u"]


def test_neuralop_ambiguous_time_axis_needs_the_option(tmp_path, capsys):
    x, y = field(2, 4), field(2, 4, 4)  # (N, s) and (N, 4, 4): time first or last?
    save_pt(tmp_path / "burgers_train_4.pt", x=x, y=y)
    code, _, err = run_cli(["import", "neuralop", tmp_path / "burgers_train_4.pt", "--out", tmp_path / "o.h5"], capsys)
    assert_one_line_error(code, err, "--time-axis first")
    ds, _ = imported(tmp_path, capsys, "neuralop", tmp_path / "burgers_train_4.pt", "--time-axis", "first")
    with ds:
        assert ds.attrs["pde"] == "burgers" and ds["u"].dims == ("sample", "t", "x")
        np.testing.assert_array_equal(ds["u"].values, y)
        np.testing.assert_allclose(ds["x"].values, [0, 0.25, 0.5, 0.75])


def test_neuralop_single_trajectory_and_named_keys(tmp_path, capsys):
    traj = field(2, 5, 3, 4)  # (N, T, x, y): vorticity, time first
    save_pt(tmp_path / "flow.pt", vorticity=traj, other=field(2, 3))
    ds, params = imported(tmp_path, capsys, "neuralop", tmp_path / "flow.pt", "--key-in", "vorticity",
                          "--key-out", "vorticity", "--time-axis", "first", "--pde", "kolmogorov")
    with ds:
        assert (ds.attrs["pde"], ds.attrs["inputs"], ds.attrs["outputs"]) == ("kolmogorov", "u0", "u")
        np.testing.assert_array_equal(ds["u0"].values, traj[:, 0])
        np.testing.assert_array_equal(ds["u"].values, traj[:, 1:])
        np.testing.assert_allclose(ds["t"].values, [1, 2, 3, 4])
        np.testing.assert_allclose(ds["x"].values, [0, 0.5, 1])  # unknown pde: nodes
    assert params["keys"]["u0"].startswith("vorticity")


def test_neuralop_reads_memory_mapped_with_weights_only(tmp_path, capsys, monkeypatch):
    calls = []
    real = torch.load

    def spy(*args, **kwargs):
        calls.append(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(neuralop.torch, "load", spy)
    save_pt(tmp_path / "darcy.pt", x=field(2, 3, 4), y=field(2, 3, 4))
    imported(tmp_path, capsys, "neuralop", tmp_path / "darcy.pt")[0].close()
    assert calls and all(c.get("weights_only") is True and c.get("mmap") is True for c in calls)


def test_neuralop_refuses_a_pickled_payload_without_running_it(tmp_path, capsys):
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    torch.save({"x": torch.zeros(2, 3, 3), "y": Payload()}, tmp_path / "darcy.pt")
    (tmp_path / "plain.pt").write_bytes(pickle.dumps({"x": Payload()}))
    for name, needle in (("darcy.pt", "refusing to unpickle"), ("plain.pt", "not a torch .pt file")):
        code, _, err = run_cli(["import", "neuralop", tmp_path / name, "--out", tmp_path / "o.h5"], capsys)
        assert_one_line_error(code, err, name, needle)
    assert not marker.exists() and not (tmp_path / "o.h5").exists()


def test_neuralop_bad_inputs_are_one_line_errors(tmp_path, capsys):
    y = field(3, 4, 5)
    y[1, 2, 3] = np.nan
    save_pt(tmp_path / "darcy.pt", x=field(3, 4, 5), y=y)
    save_pt(tmp_path / "mismatch.pt", x=field(3, 4, 5), y=field(3, 5, 4))
    torch.save({"x": torch.zeros(2, 3)}, tmp_path / "legacy.pt", _use_new_zipfile_serialization=False)
    cases = [
        (["darcy.pt"], "sample 1 of 'u'"),
        (["darcy.pt", "--key-in", "a", "--key-out", "y"], "no dataset 'a'; the file holds: x, y"),
        (["mismatch.pt"], "(4, 5) and 'y' (5, 4) differ; expected the same grid"),
        (["legacy.pt"], "pre-1.6"),
        (["darcy.pt", "--time-axis", "sideways"], "first, last or none"),
        (["darcy.pt", "--fields", "a"], "takes no option fields (--fields)"),
    ]
    assert_refused(tmp_path, capsys, "neuralop", cases)
    ds, _ = imported(tmp_path, capsys, "neuralop", tmp_path / "darcy.pt", "--allow-nonfinite")
    with ds:
        assert np.isnan(ds["u"].values[1, 2, 3])


# ---------------------------------------------------------------- The Well


def attrs(obj, **values):
    for key, value in values.items():
        obj.attrs[key] = value


def write_well(path, B=2, T=5, nx=3, ny=4, nan=False):
    """A 2-D file in The Well's layout (docs/data_format.md), written with h5py alone."""
    rng = np.random.default_rng(0)
    data = {
        "density": field(B, T, nx, ny),
        "velocity": field(B, T, nx, ny, 2),
        "stress": field(B, T, nx, ny, 2, 2),
        "mask": field(nx, ny),                       # constant in time and over samples
        "profile": field(B, T, nx, 1)[..., 0],       # does not vary along y (stored without the axis)
        "ramp": field(B, T, 1, ny),                  # does not vary along x (a length-1 axis, as the reader expects)
    }
    if nan:
        data["density"][1, 3, 0, 0] = np.nan
    with h5py.File(path, "w") as f:
        attrs(f, dataset_name="shear_flow", grid_type="cartesian", n_spatial_dims=2, n_trajectories=B,
              simulation_parameters=["Reynolds", "Schmidt"], Reynolds=1e4, Schmidt=0.5)
        dims = f.create_group("dimensions")
        attrs(dims, spatial_dims=["x", "y"])
        attrs(dims.create_dataset("time", data=np.linspace(0.0, 2.0, T, dtype=np.float32)), sample_varying=False)
        for name, values in (("x", np.linspace(0, 1, nx)), ("y", np.linspace(-1, 1, ny))):
            attrs(dims.create_dataset(name, data=values.astype(np.float32)), sample_varying=False, time_varying=False)
        bcs = f.create_group("boundary_conditions")
        bc = bcs.create_group("x_periodic")
        attrs(bc, associated_dims=["x"], associated_fields=[], bc_type="periodic", sample_varying=False,
              time_varying=False)
        bc.create_dataset("mask", data=np.zeros(nx, bool))
        bc.create_dataset("values", data=np.zeros(0, np.float32))
        scalars = f.create_group("scalars")
        attrs(scalars, field_names=["Reynolds", "energy"])
        attrs(scalars.create_dataset("Reynolds", data=np.float32(1e4)), sample_varying=False, time_varying=False)
        attrs(scalars.create_dataset("energy", data=rng.uniform(size=(B, T)).astype(np.float32)),
              sample_varying=True, time_varying=True)
        groups = {g: f.create_group(g) for g in ("t0_fields", "t1_fields", "t2_fields")}
        attrs(groups["t0_fields"], field_names=["density", "mask", "profile", "ramp"])
        attrs(groups["t1_fields"], field_names=["velocity"])
        attrs(groups["t2_fields"], field_names=["stress"])
        meta = {"density": ("t0_fields", True, True, [True, True]), "mask": ("t0_fields", False, False, [True, True]),
                "profile": ("t0_fields", True, True, [True, False]), "ramp": ("t0_fields", True, True, [False, True]),
                "velocity": ("t1_fields", True, True, [True, True]),
                "stress": ("t2_fields", True, True, [True, True])}
        for name, (group, per_sample, in_time, dim_varying) in meta.items():
            dset = groups[group].create_dataset(name, data=data[name])
            attrs(dset, sample_varying=per_sample, time_varying=in_time, dim_varying=dim_varying)
    return data


def test_the_well_fields_axes_coordinates_and_params(tmp_path, capsys):
    data = write_well(tmp_path / "shear_flow_Re1e4.hdf5")
    ds, params = imported(tmp_path, capsys, "the-well", tmp_path / "shear_flow_Re1e4.hdf5")
    with ds:
        assert ds.attrs["pde"] == "shear_flow"
        assert ds["density"].dims == ("sample", "t", "x", "y") and ds["density0"].dims == ("sample", "x", "y")
        np.testing.assert_array_equal(ds["density0"].values, data["density"][:, 0])
        np.testing.assert_array_equal(ds["density"].values, data["density"][:, 1:])
        assert ds["velocity"].dims == ("sample", "t", "x", "y", "component")
        np.testing.assert_array_equal(ds["velocity"].values, data["velocity"][:, 1:])
        np.testing.assert_array_equal(ds["velocity0"].values, data["velocity"][:, 0])
        for i, d in enumerate("xy"):  # tensor rows: stress_x[..., j] = stress[..., x, j]
            np.testing.assert_array_equal(ds[f"stress_{d}"].values, data["stress"][:, 1:, :, :, i, :])
        assert ds["mask"].dims == ("sample", "x", "y")
        np.testing.assert_array_equal(ds["mask"].values, np.broadcast_to(data["mask"], (2, 3, 4)))
        np.testing.assert_array_equal(ds["profile"].values,
                                      np.broadcast_to(data["profile"][:, 1:, :, None], (2, 4, 3, 4)))
        np.testing.assert_array_equal(ds["ramp0"].values, np.broadcast_to(data["ramp"][:, 0], (2, 3, 4)))
        np.testing.assert_allclose(ds["x"].values, np.linspace(0, 1, 3), rtol=1e-6)
        np.testing.assert_allclose(ds["y"].values, np.linspace(-1, 1, 4), rtol=1e-6)
        np.testing.assert_allclose(ds["t"].values, [0.5, 1.0, 1.5, 2.0])
        assert set(ds.attrs["outputs"].split()) == {"density", "velocity", "stress_x", "stress_y", "profile", "ramp"}
        assert set(ds.attrs["inputs"].split()) == {"density0", "velocity0", "stress_x0", "stress_y0", "mask",
                                                   "profile0", "ramp0"}
        assert "periodic on" in ds.attrs["grid"]
    assert params["scalars"] == {"Reynolds": 1e4} and params["scalars_not_imported"] == ["energy"]
    assert params["simulation_parameters"] == {"Reynolds": 1e4, "Schmidt": 0.5}
    assert params["boundary_conditions"]["x_periodic"]["bc_type"] == "periodic"
    assert params["t0"] == 0.0 and params["keys"]["stress_y"].startswith("t2_fields/stress[..., y, :]")


def test_the_well_field_selection_and_time_window(tmp_path, capsys):
    data = write_well(tmp_path / "w.hdf5")
    ds, params = imported(tmp_path, capsys, "the-well", tmp_path / "w.hdf5", "--fields", "velocity,mask",
                          "--time", "1:4", "--n", "1", "--pde", "shear")
    with ds:
        assert set(ds.data_vars) - {"done", "residual"} == {"velocity0", "velocity", "mask"}
        np.testing.assert_array_equal(ds["velocity0"].values, data["velocity"][:1, 1])
        np.testing.assert_array_equal(ds["velocity"].values, data["velocity"][:1, 2:4])
        np.testing.assert_allclose(ds["t"].values, [1.0, 1.5])
        assert ds.attrs["pde"] == "shear" and ds.sizes["sample"] == 1
    assert params["time_window"] == [1, 4] and params["t0"] == 0.5


def test_the_well_bad_inputs_are_one_line_errors(tmp_path, capsys):
    write_well(tmp_path / "nan.hdf5", nan=True)
    with h5py.File(tmp_path / "plain.hdf5", "w") as f:
        f.create_dataset("u", data=np.zeros(3))
    cases = [
        (["nan.hdf5"], "sample 1 of 'density'"),
        (["nan.hdf5", "--fields", "pressure"], "its fields are: density, mask, profile, ramp, velocity, stress"),
        (["nan.hdf5", "--fields", "mask"], "constant in time"),
        (["nan.hdf5", "--time", "3:4"], "keeps 1 of 5 frames"),
        (["nan.hdf5", "--time", "a:b"], "START:STOP"),
        (["plain.hdf5"], "no group dimensions/"),
        (["nan.hdf5", "--key-in", "x"], "takes no option key_in (--key-in)"),
    ]
    assert_refused(tmp_path, capsys, "the-well", cases)
    ds, _ = imported(tmp_path, capsys, "the-well", tmp_path / "nan.hdf5", "--allow-nonfinite", "--fields", "density")
    with ds:
        assert np.isnan(ds["density"].values[1, 2, 0, 0])
