"""Where tasks run: SLURM/PBS job scripts rendered by dask-jobqueue, a job script's worker doing real
work, batch evaluation on 2 local workers, and one-line errors for every bad cluster option."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap

import pytest
import yaml

from sciml.distributed import cluster_spec, job_script
from sciml.errors import ConfigError
from test_cli import assert_one_line_error, run_cli

SECTION = {
    "queue": "short",
    "account": "proj42",
    "cores": 8,
    "memory": "16GB",
    "walltime": "02:30:00",
    "job-extra-directives": ["--constraint=skylake"],  # hyphens as in jobqueue.yaml
    "local_directory": "$TMPDIR",
}


@pytest.fixture(autouse=True)
def _private_home(tmp_path, monkeypatch):
    """dask-jobqueue writes ~/.config/dask/jobqueue.yaml on import: never into the real HOME."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))


def test_slurm_job_script_from_a_cluster_section():
    script = job_script(cluster_spec("slurm", 16, settings=SECTION))
    lines = script.splitlines()
    for line in ("#SBATCH -p short", "#SBATCH -A proj42", "#SBATCH --cpus-per-task=8", "#SBATCH --mem=15G",
                 "#SBATCH -t 02:30:00", "#SBATCH --constraint=skylake"):
        assert line in lines, f"{line!r} not in\n{script}"
    worker = next(ln for ln in lines if "distributed.cli.dask_worker" in ln)
    # processes default to cores: 8 single-threaded workers per job
    assert "--nthreads 1" in worker and "--nworkers 8" in worker and "--local-directory $TMPDIR" in worker
    assert any("MALLOC_TRIM_THRESHOLD_': None" in ln for ln in lines)


def test_a_cluster_leaves_ctrl_c_as_python_has_it():
    """dask-jobqueue's import sets SIGINT's handler to ``sys.exit()``: Ctrl-C would then end a sweep
    on a SLURM cluster with exit 0, as if it had finished. A fresh process, so the import runs here."""
    code = ("import signal; from sciml.distributed import cluster_spec, job_script; "
            "job_script(cluster_spec('slurm', 2, settings={'cores': 2, 'memory': '4GB'})); "
            "print(signal.getsignal(signal.SIGINT) is signal.default_int_handler)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "True", done.stderr


def test_pbs_job_script_from_a_cluster_section():
    section = {**SECTION, "job-extra-directives": [], "resource_spec": "select=1:ncpus=8:mem=16GB", "processes": 4}
    script = job_script(cluster_spec("pbs", settings=section))
    lines = script.splitlines()
    for line in ("#PBS -q short", "#PBS -A proj42", "#PBS -l select=1:ncpus=8:mem=16GB", "#PBS -l walltime=02:30:00"):
        assert line in lines, f"{line!r} not in\n{script}"
    assert "--nthreads 2" in script and "--nworkers 4" in script and "--memory-limit 3.73GiB" in script


def test_unset_job_settings_come_from_the_jobqueue_yaml(tmp_path, darcy16):
    """A fresh `sciml` process reads ~/.config/dask/jobqueue.yaml for what the section leaves out."""
    home = tmp_path / "home"
    (home / ".config" / "dask").mkdir(parents=True)
    (home / ".config" / "dask" / "jobqueue.yaml").write_text(textwrap.dedent("""\
        jobqueue:
          slurm:
            account: from-yaml
            cores: 4
            memory: 8GB
            walltime: '00:45:00'
        """))
    config = tmp_path / "sweep.yaml"
    config.write_text(yaml.safe_dump({
        "models": ["fno"], "datasets": {"d": {"train": str(darcy16[0]), "test": str(darcy16[1])}},
        "cluster": {"kind": "slurm", "workers": 8, "queue": "from-section", "walltime": "03:00:00"},
    }))
    env = {**os.environ, "HOME": str(home)}
    done = subprocess.run([sys.executable, "-m", "sciml", "sweep", str(config), "--out", str(tmp_path / "out"), "--dry-run"],
                          capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert "1 of 1 cells to run on 8 SLURM Dask workers" in done.stdout
    for line in ("#SBATCH -p from-section", "#SBATCH -A from-yaml", "#SBATCH --cpus-per-task=4", "#SBATCH -t 03:00:00"):
        assert line in lines, f"{line!r} not in\n{done.stdout}"
    assert any("--nworkers 4" in ln for ln in lines)


def test_a_rendered_job_script_runs_a_worker_that_generates_data(tmp_path):
    """Run the SLURM job script with bash, as sbatch would on a node: its worker joins the
    scheduler, and `sciml generate --cluster ADDRESS` solves there (the serial file results)."""
    import distributed
    import h5py
    import numpy as np

    from sciml import datasets
    from sciml.distributed.cluster import jobqueue_cluster

    spec = cluster_spec("slurm", settings={"cores": 1, "memory": "2GB", "walltime": "00:05:00"})
    with jobqueue_cluster(spec) as jobs:
        script = tmp_path / "job.sh"
        script.write_text(jobs.job_script())
        job = subprocess.Popen(["bash", str(script)], start_new_session=True,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            with distributed.Client(jobs) as client:
                client.wait_for_workers(1, timeout=90)
                env = client.submit(lambda: os.environ.get("MALLOC_TRIM_THRESHOLD_", "unset"), pure=False).result()
                assert env == "unset"  # the job exported the Dask setting that drops it
            out = tmp_path / "cluster.h5"
            code = _cli(["generate", "poisson", "--n", "4", "-s", "12", "--seed", "3", "--out", out,
                         "--cluster", jobs.scheduler_address, "--no-progress"])
            assert code == 0
        finally:
            os.killpg(job.pid, signal.SIGTERM)
            job.wait(timeout=30)
    ref = datasets.generate("poisson", n=4, resolution=12, seed=3, out=tmp_path / "ref.h5", progress=False)
    with h5py.File(out, "r") as a, h5py.File(ref, "r") as b:
        np.testing.assert_array_equal(a["u"][()], b["u"][()])


def _cli(args):
    from sciml.cli.app import main

    with pytest.raises(SystemExit) as exit_:
        main([str(a) for a in args])
    return exit_.value.code


def test_batch_evaluation_on_two_workers_equals_the_serial_one(tmp_path, darcy16, capsys, one_thread):
    from sciml import training

    train, test = darcy16
    runs = [tmp_path / f"run{seed}" for seed in (0, 1)]
    for seed, run in zip((0, 1), runs):
        training.train("fno", data=train, out=run, epochs=1, batch_size=8, seed=seed, progress=False, figures=False,
                       model_config={"modes": [4, 4], "width": 8, "n_layers": 2, "projection": 16})
    results = {}
    for name, workers in (("serial", "1"), ("parallel", "2")):
        code, out, err = run_cli(["evaluate", *runs, "--data", test, "--solver-samples", "0", "--workers", workers,
                                  "--out", tmp_path / f"{name}.json", "--no-progress"], capsys)
        assert code == 0, err
        assert "run0" in out and "run1" in out
        results[name] = json.loads((tmp_path / f"{name}.json").read_text())
    serial, parallel = results["serial"], results["parallel"]
    assert [r["run"] for r in parallel] == [str(r) for r in runs]
    for s, p in zip(serial, parallel):
        assert (s["model"], s["epoch"]) == (p["model"], p["epoch"]) == ("fno", 1)
        (ds,), (dp,) = s["datasets"], p["datasets"]
        assert 0 < dp["rel_l2_mean"] < 2 and dp["n"] == 8
        for key in ("rel_l2_mean", "rel_l2_std", "rel_l2_max", "rel_l2_median"):
            assert dp[key] == pytest.approx(ds[key], rel=1e-6), key
    assert serial[0]["datasets"][0]["rel_l2_mean"] != serial[1]["datasets"][0]["rel_l2_mean"]
    assert json.loads((runs[1] / "eval.json").read_text())["datasets"][0]["rel_l2_mean"] == parallel[1]["datasets"][0]["rel_l2_mean"]


@pytest.mark.parametrize("kind, command", [("slurm", "sbatch"), ("pbs", "qsub")])
def test_a_batch_cluster_without_its_submit_command_is_one_line(tmp_path, monkeypatch, capsys, kind, command):
    monkeypatch.setenv("PATH", str(tmp_path))  # no sbatch/qsub here (nor on this machine)
    settings = tmp_path / "cluster.yaml"
    settings.write_text(yaml.safe_dump({"cluster": {"cores": 2, "memory": "4GB"}}))
    out = tmp_path / "x.h5"
    code, _, err = run_cli(["generate", "darcy", "--n", "2", "-s", "9", "--out", out, "--cluster", kind,
                            "--cluster-config", settings, "--no-progress"], capsys)
    assert_one_line_error(code, err, f"--cluster {kind}", f"`{command}`", "not on PATH")
    assert not out.exists() and not (tmp_path / "x.h5.partial").exists()


@pytest.mark.parametrize("args, needles", [
    (["--cluster", "slrum"], ["unknown cluster 'slrum'", "did you mean 'slurm'"]),
    (["--cluster", "tcp://127.0.0.1:8786", "--workers", "2"], ["either workers (2) or a scheduler address"]),
    (["--workers", "0"], ["workers must be a positive integer"]),
    (["--cluster", "local", "--scheduler", "tcp://127.0.0.1:8786"], ["either --cluster local or --scheduler"]),
])
def test_bad_cluster_options_are_one_line(tmp_path, capsys, args, needles):
    code, _, err = run_cli(["generate", "darcy", "--n", "2", "-s", "9", "--out", tmp_path / "x.h5", *args], capsys)
    assert_one_line_error(code, err, *needles)


def test_unknown_keys_in_the_cluster_section_name_the_valid_ones(tmp_path, capsys):
    settings = tmp_path / "cluster.yaml"
    settings.write_text(yaml.safe_dump({"cluster": {"queue": "q", "walltme": "01:00:00"}}))
    code, _, err = run_cli(["generate", "darcy", "--n", "2", "--out", tmp_path / "x.h5", "--cluster", "slurm",
                            "--cluster-config", settings], capsys)
    assert_one_line_error(code, err, "unknown key 'walltme' in the cluster section", "did you mean 'walltime'",
                          "valid keys: account, cores")
    with pytest.raises(ConfigError, match="'resource_spec' in the cluster section is a PBS setting"):
        cluster_spec("slurm", settings={"resource_spec": "select=1"})
    with pytest.raises(ConfigError, match="cannot set up the slurm cluster"):
        job_script(cluster_spec("slurm", settings={"cores": 2}))  # memory unset here and in jobqueue.yaml


def test_an_unreachable_scheduler_is_one_line_for_sweep_and_evaluate(tmp_path, darcy16, capsys):
    import dask

    config = tmp_path / "sweep.yaml"
    config.write_text(yaml.safe_dump({"models": ["fno"], "seeds": [0],
                                      "datasets": {"d": {"train": str(darcy16[0]), "test": str(darcy16[1])}}}))
    with dask.config.set({"distributed.comm.timeouts.connect": "0.5s"}):
        code, _, err = run_cli(["sweep", config, "--out", tmp_path / "out", "--cluster", "tcp://127.0.0.1:9"], capsys)
    assert_one_line_error(code, err, "cannot reach the Dask scheduler at tcp://127.0.0.1:9")
    code, _, err = run_cli(["evaluate", tmp_path / "no-run", "--data", darcy16[1], "--workers", "2"], capsys)
    assert_one_line_error(code, err, "no-run is not a run directory")
