"""Experiment tracking (``--logger tensorboard,mlflow``): what a run sends is read back with each
library's own reader (TensorBoard's EventAccumulator, MLflow's client on the local file store) and
compared with the run directory's own files: the metrics file, the resolved config, the figures."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from matplotlib.image import imread

from sciml import training
from test_cli import assert_one_line_error, run_cli

SMALL_FNO = {"modes": [4, 4], "width": 8, "n_layers": 2, "projection": 16}
OPTIONS = {"epochs": 3, "batch_size": 8, "val_fraction": 0.25, "device": "cpu", "num_threads": 1, "progress": False}
SET = [f"--set={k}={v}".replace(" ", "") for k, v in SMALL_FNO.items()]
INSTALL = "pip install 'sciml[tracking]'"


def rows(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def flat_config(run_dir):
    """``config.yaml`` as ``key`` / ``model_config.key`` -> value (written out here, not sciml's)."""

    def walk(d, prefix=""):
        for k, v in d.items():
            if isinstance(v, dict) and v:
                yield from walk(v, f"{prefix}{k}.")
            else:
                yield f"{prefix}{k}", v

    return dict(walk(yaml.safe_load((run_dir / "config.yaml").read_text())))


def as_param(v):
    """How a config value reads as an MLflow param (text): lists as JSON."""
    return json.dumps(v) if isinstance(v, (list, dict)) else str(v)


def events(run_dir):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"scalars": 0, "images": 0, "tensors": 0})
    acc.Reload()
    return acc


def mlflow_client(uri):
    from mlflow.tracking import MlflowClient

    os.environ["MLFLOW_ALLOW_FILE_STORE"] = "true"  # MLflow 3 reads its file store only when asked
    return MlflowClient(tracking_uri=uri)


def mlflow_run(run_dir):
    saved = json.loads((run_dir / "tracking.json").read_text())["mlflow"]
    client = mlflow_client(saved["tracking_uri"])
    return client, client.get_run(saved["run_id"])


def float32(x):
    return float(np.float32(x))  # TensorBoard stores scalars in float32


@pytest.fixture(scope="module")
def tracked_run(darcy16, tmp_path_factory):
    """A 3-epoch FNO run (validation and test sets) logged to both trackers, MLflow to its default
    store ``RUN/mlruns``."""
    train, test = darcy16
    out = tmp_path_factory.mktemp("tracked") / "fno-run"
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        mp.delenv("MLFLOW_EXPERIMENT_NAME", raising=False)
        summary = training.train("fno", data=train, test_data=test, out=out, model_config=SMALL_FNO,
                                 logger="tensorboard,mlflow", **OPTIONS)
    return out, summary


# ----------------------------------------------------------------------------- TensorBoard


def test_tensorboard_holds_every_number_of_every_epoch(tracked_run):
    out, _ = tracked_run
    acc, written = events(out), rows(out)
    assert len(written) == OPTIONS["epochs"]
    for key in ("train_loss", "val_loss", "test_loss", "lr", "seconds"):
        logged = [(e.step, e.value) for e in acc.Scalars(key)]
        assert logged == [(r["epoch"], float32(r[key])) for r in written], key


def test_tensorboard_holds_the_config_the_final_numbers_and_the_loss_figure(tracked_run):
    from tensorboard.plugins.hparams import plugin_data_pb2

    out, summary = tracked_run
    acc = events(out)
    content = acc.PluginTagToContent("hparams")["_hparams_/session_start_info"]
    hparams = plugin_data_pb2.HParamsPluginData.FromString(content).session_start_info.hparams
    logged = {k: getattr(v, v.WhichOneof("kind")) for k, v in hparams.items()}
    expected = {k: float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else as_param(v)
                for k, v in flat_config(out).items()}
    assert logged == expected
    assert logged["model_config.width"] == 8 and logged["model_config.modes"] == "[4, 4]"
    text = acc.Tensors("config/text_summary")[0].tensor_proto.string_val[0].decode()
    assert [line.removeprefix("    ") for line in text.splitlines()] == (out / "config.yaml").read_text().splitlines()
    last = rows(out)[-1]
    assert [(e.step, e.value) for e in acc.Scalars("final/test_loss")] == [(3, float32(last["test_loss"]))]
    assert acc.Scalars("final/n_parameters")[0].value == summary["n_parameters"]
    png = imread(out / "loss.png")
    image = acc.Images("figures/loss")[0]
    assert (image.height, image.width) == png.shape[:2]


# ----------------------------------------------------------------------------- MLflow


def test_mlflow_writes_a_local_store_in_the_run_directory(tracked_run):
    out, _ = tracked_run
    client, run = mlflow_run(out)
    assert run.info.artifact_uri.startswith((out / "mlruns").resolve().as_uri())
    assert run.info.status == "FINISHED"
    assert run.data.tags["mlflow.runName"] == out.name
    assert client.get_experiment(run.info.experiment_id).name == "sciml"


def test_mlflow_holds_every_number_of_every_epoch(tracked_run):
    out, _ = tracked_run
    client, run = mlflow_run(out)
    written = rows(out)
    for key in ("train_loss", "val_loss", "test_loss", "lr", "seconds"):
        history = sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, key))
        assert history == [(r["epoch"], r[key]) for r in written], key
    assert run.data.metrics["final/test_loss"] == written[-1]["test_loss"]
    assert run.data.metrics["final/best_loss"] == min(r["val_loss"] for r in written)


def test_mlflow_params_are_the_resolved_config_and_the_files_are_artifacts(tracked_run, tmp_path):
    out, _ = tracked_run
    client, run = mlflow_run(out)
    assert run.data.params == {k: as_param(v) for k, v in flat_config(out).items()}
    assert run.data.params["lr"] == "0.001" and run.data.params["model_config.modes"] == "[4, 4]"
    names = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"config.yaml", "metrics.jsonl", "figures"} <= names
    assert [a.path for a in client.list_artifacts(run.info.run_id, "figures")] == ["figures/loss.png"]
    got = client.download_artifacts(run.info.run_id, "config.yaml", str(tmp_path))
    assert Path(got).read_text() == (out / "config.yaml").read_text()
    got = client.download_artifacts(run.info.run_id, "figures/loss.png", str(tmp_path))
    assert np.array_equal(imread(got), imread(out / "loss.png"))


# ----------------------------------------------------------------------------- the command line


def test_resume_continues_the_same_mlflow_run_and_tensorboard_folder(darcy16, tmp_path, capsys, monkeypatch):
    """Repeated --logger, MLFLOW_TRACKING_URI honoured, nothing printed but the summary line, and
    `--resume` logging epoch 2 into the run that holds epoch 1."""
    train, _ = darcy16
    store = (tmp_path / "store").as_uri()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store)
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "darcy-fno")
    out = tmp_path / "run"
    code, stdout, err = run_cli(["train", "fno", "--data", train, "--out", out, "--epochs", "1", "--batch-size", "8",
                                 "--device", "cpu", "--no-progress", "--logger", "tensorboard", "--logger", "mlflow",
                                 *SET], capsys)
    assert code == 0, err
    assert err == "" and stdout.count("\n") == 1 and stdout.startswith(f"run {out}")
    first = json.loads((out / "tracking.json").read_text())["mlflow"]
    assert first["tracking_uri"] == store and not (out / "mlruns").exists()
    code, stdout, err = run_cli(["train", "--resume", out, "--epochs", "2", "--no-progress"], capsys)
    assert code == 0 and err == "", err
    assert json.loads((out / "tracking.json").read_text())["mlflow"] == first
    client, run = mlflow_run(out)
    assert client.get_experiment(run.info.experiment_id).name == "darcy-fno"
    assert run.info.status == "FINISHED"
    written = rows(out)
    assert [r["epoch"] for r in written] == [1, 2]
    history = sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, "train_loss"))
    assert history == [(r["epoch"], r["train_loss"]) for r in written]
    assert len(client.search_runs([run.info.experiment_id])) == 1
    assert len(list((out / "tensorboard").iterdir())) == 2  # one event file per session, one folder
    assert [(e.step, e.value) for e in events(out).Scalars("train_loss")] == \
        [(r["epoch"], float32(r["train_loss"])) for r in written]


@pytest.mark.parametrize("logger, module, package", [("mlflow", "mlflow", "mlflow-skinny"),
                                                     ("tensorboard", "tensorboard", "tensorboard")])
def test_a_missing_package_is_one_line_naming_the_extra(logger, module, package, darcy16, tmp_path, capsys,
                                                        monkeypatch):
    train, test = darcy16
    monkeypatch.setitem(sys.modules, module, None)  # `import module` now fails as if it were not installed
    code, _, err = run_cli(["train", "fno", "--data", train, "--out", tmp_path / "run", "--logger", logger,
                            "--no-progress", *SET], capsys)
    assert_one_line_error(code, err, f"--logger {logger} needs the {package} package", INSTALL)
    assert not (tmp_path / "run").exists()
    config = tmp_path / "sweep.yaml"
    config.write_text(yaml.safe_dump({"models": ["fno"], "datasets": {"d": {"train": str(train), "test": str(test)}}}))
    code, _, err = run_cli(["sweep", config, "--out", tmp_path / "sweep", "--logger", logger, "--no-progress"], capsys)
    assert_one_line_error(code, err, f"--logger {logger} needs", INSTALL)
    assert not (tmp_path / "sweep" / "cells").exists()


def test_an_unknown_logger_or_a_kind_without_trackers_is_one_line(darcy16, tmp_path, capsys):
    train, _ = darcy16
    code, _, err = run_cli(["train", "fno", "--data", train, "--out", tmp_path / "run", "--logger", "tensorboard,wandb"],
                           capsys)
    assert_one_line_error(code, err, "unknown logger 'wandb'", "tensorboard, mlflow")
    code, _, err = run_cli(["train", "dcdm", "--pde", "poisson", "-s", "8", "--out", tmp_path / "d", "--logger", "mlflow"],
                           capsys)
    assert_one_line_error(code, err, "--logger logs operator training", "dcdm training does not", "drop --logger")


# ----------------------------------------------------------------------------- sweeps and DDP


def test_a_sweep_logs_each_cell_to_one_mlflow_experiment_with_its_evaluation(darcy16, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    train, test = darcy16
    config = tmp_path / "sweep.yaml"
    config.write_text(yaml.safe_dump({
        "name": "tiny", "models": {"fno": {"model_config": SMALL_FNO}}, "seeds": [0, 1],
        "datasets": {"darcy": {"train": str(train), "test": str(test)}}, "train": {"epochs": 1, "batch_size": 8}}))
    out = tmp_path / "sweep"
    code, _, err = run_cli(["sweep", config, "--out", out, "--workers", "1", "--no-progress",
                            "--logger", "mlflow,tensorboard"], capsys)
    assert code == 0, err
    client = mlflow_client((out / "mlruns").as_uri())
    experiment = client.get_experiment_by_name("tiny")
    found = {r.data.tags["mlflow.runName"]: r for r in client.search_runs([experiment.experiment_id])}
    assert sorted(found) == ["fno-darcy-s0", "fno-darcy-s1"]
    for name, run in found.items():
        cell = out / "cells" / name
        record = json.loads((cell / "result.json").read_text())
        assert "logger" not in record["spec"]["train"]  # logging does not change what a cell is
        assert run.data.metrics["eval/rel_l2_mean"] == record["rel_l2_mean"]
        assert run.data.metrics["train_loss"] == rows(cell)[0]["train_loss"]
        acc = events(cell)
        assert acc.Scalars("eval/rel_l2_max")[0].value == float32(record["rel_l2_max"])
    code, stdout, err = run_cli(["sweep", config, "--out", out, "--no-progress", "--logger", "mlflow"], capsys)
    assert code == 0 and "skipped 2 finished earlier" in stdout, err  # a re-run with a logger keeps them


def test_only_rank_0_logs_under_ddp(darcy16, tmp_path):
    """A 2-process torchrun: one event file and one MLflow run, holding rank 0's metrics file."""
    train, _ = darcy16
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "sciml",
           "train", "fno", "--data", str(train), "--out", str(out), "--epochs", "1", "--batch-size", "8",
           "--device", "cpu", "--no-progress", "--logger", "tensorboard,mlflow", *SET]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HOME": str(tmp_path)}
    for key in ("WORLD_SIZE", "MLFLOW_TRACKING_URI"):
        env.pop(key, None)
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert len(list((out / "tensorboard").iterdir())) == 1
    client, run = mlflow_run(out)
    assert len(client.search_runs([run.info.experiment_id])) == 1
    history = [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, "train_loss")]
    assert history == [(1, rows(out)[0]["train_loss"])]


def test_a_run_stopped_by_a_job_signal_is_killed_in_mlflow_and_continued_on_resume(tmp_path, monkeypatch):
    from sciml.errors import Preempted
    from sciml.training import tracking
    from sciml.training.ddp import World
    from sciml.training.options import TrainOptions

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "config.yaml").write_text("epochs: 2\n")
    opts = TrainOptions(logger="mlflow")
    with pytest.raises(Preempted), tracking.session(opts, run_dir, World()) as tracker:
        tracker.log_epoch(1, {"epoch": 1, "train_loss": 0.5})
        raise Preempted("stopped by SIGTERM")
    client, run = mlflow_run(run_dir)
    assert run.info.status == "KILLED"
    with tracking.session(opts, run_dir, World(), start_epoch=1) as tracker:
        tracker.log_epoch(2, {"epoch": 2, "train_loss": 0.25})
    tracker.close()
    client, again = mlflow_run(run_dir)
    assert again.info.run_id == run.info.run_id and again.info.status == "FINISHED"
    assert sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, "train_loss")) == [(1, 0.5), (2, 0.25)]
    assert again.data.params == {"epochs": "2"}
