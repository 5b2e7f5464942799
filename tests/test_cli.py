"""The command line: help, version, the dataset contract, and one-line errors for bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest

from sciml import __version__
from sciml.cli.app import main


def run_cli(args, capsys):
    with pytest.raises(SystemExit) as exc:
        main([str(a) for a in args])
    out = capsys.readouterr()
    return exc.value.code, out.out, out.err


def assert_one_line_error(code, err, *needles):
    assert code == 1, err
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert len(lines) == 1, f"expected one error line, got:\n{err}"
    assert lines[0].startswith("error: ")
    assert "Traceback" not in err
    for needle in needles:
        assert needle in lines[0], f"{needle!r} not in {lines[0]!r}"


def test_help_lists_every_command(capsys):
    code, out, _ = run_cli(["--help"], capsys)
    assert code == 0
    for cmd in ("generate", "train", "evaluate", "solve", "run", "info", "plot", "models"):
        assert cmd in out


def test_version_is_printed(capsys):
    code, out, _ = run_cli(["--version"], capsys)
    assert code == 0 and out.strip() == f"sciml {__version__}"


def test_generate_writes_the_design_dataset_contract(tmp_path, capsys):
    import xarray as xr

    path = tmp_path / "d.h5"
    code, out, err = run_cli(["generate", "darcy", "--n", 4, "--resolution", 32, "--seed", 0, "--out", path,
                              "--no-progress"], capsys)
    assert code == 0, err
    with xr.open_dataset(path, engine="h5netcdf") as ds:
        assert set(ds.data_vars) >= {"a", "u"}
        assert ds["a"].dims == ("sample", "x", "y") and ds["u"].dims == ("sample", "x", "y")
        assert ds["a"].shape == (4, 32, 32)
        assert "x" in ds.coords and "y" in ds.coords
        for key in ("pde", "inputs", "outputs", "params", "seed", "sciml_format"):
            assert key in ds.attrs
        assert ds.attrs["pde"] == "darcy" and int(ds.attrs["seed"]) == 0
        params = json.loads(ds.attrs["params"])
        assert params["tau"] == 3 and params["alpha"] == 2
        assert set(np.unique(ds["a"].values)) <= {params["low"], params["high"]}
    code, out, err = run_cli(["info", path], capsys)
    assert code == 0, err
    assert "darcy" in out and "residual" in out.lower() and "(4, 32, 32)" in out.replace("4 x 32 x 32", "(4, 32, 32)")


def test_unknown_pde_lists_valid_names(tmp_path, capsys):
    code, _, err = run_cli(["generate", "darcyy", "--n", 2, "--out", tmp_path / "x.h5"], capsys)
    assert_one_line_error(code, err, "darcyy", "darcy", "poisson")
    assert not (tmp_path / "x.h5").exists()


def test_unknown_generator_parameter_is_named(tmp_path, capsys):
    code, _, err = run_cli(["generate", "darcy", "--n", 2, "-s", 16, "-p", "tua=3", "--out", tmp_path / "x.h5"], capsys)
    assert_one_line_error(code, err, "tua", "tau")


def test_existing_output_is_not_overwritten(tmp_path, capsys):
    path = tmp_path / "keep.h5"
    path.write_bytes(b"precious")
    code, _, err = run_cli(["generate", "darcy", "--n", 2, "-s", 16, "--out", path], capsys)
    assert_one_line_error(code, err, "exists", "--overwrite")
    assert path.read_bytes() == b"precious"


def test_unknown_model_lists_valid_names(darcy16, tmp_path, capsys):
    train, _ = darcy16
    code, _, err = run_cli(["train", "fnoo", "--data", train, "--out", tmp_path / "r"], capsys)
    assert_one_line_error(code, err, "fnoo", "fno", "deeponet")


def test_missing_data_file(tmp_path, capsys):
    code, _, err = run_cli(["train", "fno", "--data", tmp_path / "nope.h5", "--out", tmp_path / "r"], capsys)
    assert_one_line_error(code, err, "nope.h5", "not found")


def test_corrupt_data_file(tmp_path, capsys):
    bad = tmp_path / "bad.h5"
    bad.write_bytes(b"\x89HDF\r\n\x1a\n" + b"\x00" * 100)
    code, _, err = run_cli(["info", bad], capsys)
    assert_one_line_error(code, err, "bad.h5")
    code, _, err = run_cli(["train", "fno", "--data", bad, "--out", tmp_path / "r"], capsys)
    assert_one_line_error(code, err, "bad.h5")


def test_truncated_data_file(darcy16, tmp_path, capsys):
    train, _ = darcy16
    cut = tmp_path / "cut.h5"
    cut.write_bytes(train.read_bytes()[: train.stat().st_size // 2])
    code, _, err = run_cli(["info", cut], capsys)
    assert_one_line_error(code, err, "cut.h5")


def test_config_typo_is_named(darcy16, tmp_path, capsys):
    train, _ = darcy16
    cfg = tmp_path / "c.yaml"
    cfg.write_text("epochs: 1\nbatch_sise: 4\n")
    code, _, err = run_cli(["train", "fno", "--data", train, "--out", tmp_path / "r", "--config", cfg], capsys)
    assert_one_line_error(code, err, "batch_sise", "batch_size")


def test_resolution_too_small_for_modes(darcy16, tmp_path, capsys):
    train, _ = darcy16  # 16 x 16 grid
    code, _, err = run_cli(["train", "fno", "--data", train, "--out", tmp_path / "r", "--epochs", 1,
                            "--set", "modes=[12,12]", "--no-progress"], capsys)
    assert_one_line_error(code, err, "modes")


def test_model_dataset_mismatch(darcy16, tmp_path, capsys):
    train, _ = darcy16
    run = tmp_path / "r"
    code, _, err = run_cli(["train", "fno", "--data", train, "--out", run, "--epochs", 1, "--set", "modes=[4,4]",
                            "--set", "width=8", "--no-progress"], capsys)
    assert code == 0, err
    poisson = tmp_path / "p.h5"
    code, _, err = run_cli(["generate", "poisson", "--n", 2, "-s", 16, "--out", poisson, "--no-progress"], capsys)
    assert code == 0, err
    code, _, err = run_cli(["evaluate", run, "--data", poisson], capsys)
    assert_one_line_error(code, err, "darcy", "poisson")


def test_models_lists_registry(capsys):
    code, out, _ = run_cli(["models"], capsys)
    assert code == 0
    assert "fno" in out and "deeponet" in out and "fno-darcy-paper" in out


def test_solve_reports_every_method_converged_and_plots(tmp_path, capsys):
    png = tmp_path / "res.png"
    code, out, err = run_cli(["solve", "poisson", "-s", 24, "--method", "direct,cg,pcg-amg", "--tol", "1e-8",
                              "--plot", png], capsys)
    assert code == 0, err
    rows = [ln for ln in out.splitlines() if any(m in ln for m in ("direct", " cg ", "pcg-amg"))]
    assert len(rows) == 3 and all("yes" in r for r in rows), out
    residuals = [float(r.split("│")[4]) for r in rows]
    assert max(residuals) <= 1e-8
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_unknown_solve_method_lists_valid_names(capsys):
    code, _, err = run_cli(["solve", "poisson", "-s", 16, "--method", "magic"], capsys)
    assert_one_line_error(code, err, "magic", "pcg-amg")


def test_train_config_flags_override_and_resume_continues(darcy16, tmp_path, capsys):
    train, test = darcy16
    cfg = tmp_path / "opts.yaml"
    cfg.write_text("epochs: 5\nbatch_size: 8\nlr: 0.003\nmodel_config: {modes: [4, 4], width: 8}\n")
    run = tmp_path / "run"
    code, out, err = run_cli(["train", "fno", "--data", train, "--out", run, "--config", cfg, "--epochs", 2,
                              "--no-progress"], capsys)
    assert code == 0, err
    import yaml

    saved = yaml.safe_load((run / "config.yaml").read_text())
    flat = {**saved, **saved.get("options", {})}
    assert flat["epochs"] == 2 and flat["batch_size"] == 8 and flat["lr"] == 0.003  # flag beat the file
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 2
    code, out, err = run_cli(["train", "--resume", run, "--epochs", 4, "--no-progress"], capsys)
    assert code == 0, err
    epochs = [json.loads(x)["epoch"] for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert epochs == [1, 2, 3, 4]
    code, out, err = run_cli(["evaluate", run, "--data", test, "--solver-samples", 2], capsys)
    assert code == 0, err
    ev = json.loads((run / "eval.json").read_text())
    r = ev["datasets"][0]
    assert 0 < r["rel_l2_mean"] < 1 and r["rel_l2_max"] >= r["rel_l2_mean"]
    assert r["solver_s_per_sample"] > 0 and r["model_s_per_sample"] > 0
    code, out, err = run_cli(["info", run], capsys)
    assert code == 0, err
    assert "fno" in out and "epoch 4" in out and f"{r['rel_l2_mean']:.4g}" in out
    code, out, err = run_cli(["plot", run, "--out", tmp_path / "loss.png"], capsys)
    assert code == 0, err
    assert (tmp_path / "loss.png").read_bytes()[:4] == b"\x89PNG"


def test_nan_in_data_is_refused_naming_variable_and_sample(darcy16, tmp_path, capsys):
    import shutil

    import h5py

    train, _ = darcy16
    bad = tmp_path / "nan.h5"
    shutil.copy(train, bad)
    with h5py.File(bad, "a") as f:
        f["u"][5, 3, 3] = np.nan
    code, _, err = run_cli(["train", "fno", "--data", bad, "--out", tmp_path / "r"], capsys)
    assert_one_line_error(code, err, "nan.h5", "'u'", "NaN", "sample 5")
    assert not (tmp_path / "r").exists()


def test_solve_a_stored_sample(tmp_path, capsys):
    from sciml import datasets

    path = datasets.generate("poisson3d", n=3, resolution=10, seed=2, out=tmp_path / "p.h5", progress=False)
    A, b, info = datasets.system_from_file(path, 2)
    A2, b2, _ = datasets.system("poisson3d", resolution=10, seed=2, index=2)
    assert (A != A2).nnz == 0 and np.allclose(b, b2, rtol=1e-6, atol=1e-6) and info["index"] == 2  # b stored as float32
    code, out, err = run_cli(["solve", "--data", path, "--index", 2, "--method", "direct,pcg-ic", "--tol", "1e-9"], capsys)
    assert code == 0, err
    rows = [ln for ln in out.splitlines() if "direct" in ln or "pcg-ic" in ln]
    assert len(rows) == 2 and all("yes" in r for r in rows) and "1000 unknowns" in out
    code, _, err = run_cli(["solve", "--data", path, "--index", 7], capsys)
    assert_one_line_error(code, err, "7")


def test_command_line_mistakes_are_one_line_errors(capsys):
    """Unknown options or commands and missing values: one line naming the problem, exit 1."""
    code, _, err = run_cli(["generate", "darcy", "-n", "3"], capsys)
    assert_one_line_error(code, err, "No such option: -n", "sciml generate --help")
    code, _, err = run_cli(["bogus"], capsys)
    assert_one_line_error(code, err, "No such command 'bogus'")
    code, _, err = run_cli(["solve", "darcy", "--method"], capsys)
    assert_one_line_error(code, err, "--method", "requires an argument")
    code, out, err = run_cli(["train"], capsys)
    assert code == 0 and "Usage: sciml train" in out + err and "Traceback" not in err
