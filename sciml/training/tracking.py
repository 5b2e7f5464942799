"""Experiment tracking: a training run's numbers where users already look (``--logger``).

Besides the run directory's own files, a run can send to TensorBoard and/or MLflow:

- per epoch, every number of its ``metrics.jsonl`` row (train/val/test loss, learning rate,
  seconds) at step = epoch, under the same names;
- at the start, the resolved config: flattened to ``key`` / ``model_config.key`` as TensorBoard
  hyperparameters (HParams) and MLflow params, and ``config.yaml`` itself (MLflow artifact,
  TensorBoard text);
- at the end, the final summary as ``final/<name>`` (a sweep adds the evaluation as ``eval/<name>``)
  and the figures the run wrote (``loss.png``: TensorBoard images, MLflow artifacts in ``figures/``).

Where they write: TensorBoard event files in ``RUN/tensorboard``; MLflow to ``tracking_uri``, else
``MLFLOW_TRACKING_URI``, else a local file store ``RUN/mlruns`` (no network; view it with
``MLFLOW_ALLOW_FILE_STORE=true mlflow ui --backend-store-uri RUN/mlruns``). The MLflow run id is
kept in ``RUN/tracking.json``, so ``--resume`` continues the same MLflow run (and TensorBoard the
same folder, dropping the steps after the checkpoint that the interrupted run had logged).

Both packages are optional (``pip install 'sciml[tracking]'``) and imported only when asked for;
their start-up messages and warnings are kept off the terminal.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import math
import os
import time
import warnings
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

from .. import runs
from ..config import load_yaml
from ..errors import ConfigError, Preempted, SciMLError
from ..io import atomic_write_text, read_text

LOGGERS = ("tensorboard", "mlflow")
INSTALL = "pip install 'sciml[tracking]'"
STATE = "tracking.json"
DEFAULT_EXPERIMENT = "sciml"
#: the module each logger needs, and the package that provides it
_NEEDS = {"tensorboard": ("tensorboard", "tensorboard"), "mlflow": ("mlflow", "mlflow-skinny")}


def parse_loggers(value: str | Iterable[str] | None) -> tuple[str, ...]:
    """Logger names from ``"tensorboard,mlflow"``, a list of such strings, or None (no logger);
    an unknown name lists the valid ones."""
    items = [value] if isinstance(value, str) else list(value or ())
    names: list[str] = []
    for item in items:
        if not isinstance(item, str):
            raise ConfigError(f"logger must be a name ({', '.join(LOGGERS)}) or a list of names, got {item!r}")
        for name in (part.strip().lower() for part in item.split(",")):
            if name and name not in LOGGERS:
                raise ConfigError(f"unknown logger {name!r}; valid loggers are: {', '.join(LOGGERS)} "
                                  "(repeat --logger or give a comma list)")
            if name and name not in names:
                names.append(name)
    return tuple(names)


def require(loggers: str | Iterable[str] | None) -> tuple[str, ...]:
    """Import the packages of ``loggers`` (parsed as :func:`parse_loggers`); a missing one is one
    ConfigError naming the extra that installs it."""
    names = parse_loggers(loggers)
    for name in names:
        module, package = _NEEDS[name]
        try:
            with _quiet():
                __import__(module)
        except ImportError:
            raise ConfigError(f"--logger {name} needs the {package} package, which is not installed: "
                              f"{INSTALL}") from None
    return names


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Keep the trackers' own warnings, log records and printed links off the terminal."""
    loggers = [logging.getLogger(n) for n in ("mlflow", "tensorboard", "absl")]
    levels = [lg.level for lg in loggers]
    try:
        for lg in loggers:
            lg.setLevel(logging.ERROR)
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def flatten(config: dict, prefix: str = "") -> dict[str, str | int | float]:
    """The config as flat ``key`` / ``section.key`` -> number or string (lists as JSON, None and
    booleans as text): the form of TensorBoard hyperparameters and MLflow params."""
    flat: dict[str, str | int | float] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(flatten(value, name + "."))
        elif isinstance(value, (bool, type(None))):
            flat[name] = str(value)
        elif isinstance(value, (int, float, str)):
            flat[name] = value
        else:
            flat[name] = json.dumps(value, default=str)
    return flat


def _numbers(metrics: dict, skip: Sequence[str] = ()) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.items()
            if k not in skip and isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)}


# ----------------------------------------------------------------------------- the interface


class Tracker:
    """Where a run's numbers go besides its directory; this base class sends them nowhere.

    start(config): the resolved config; log_epoch(epoch, metrics): one ``metrics.jsonl`` row;
    log_final(metrics, figures): the final numbers (as ``prefix<name>``) and PNG figures;
    close(status): ``FINISHED``, ``FAILED`` or ``KILLED`` (stopped by a job signal, to be resumed).
    """

    def start(self, config: dict, config_file: Path | None = None, step: int = 0) -> None:
        pass

    def log_epoch(self, epoch: int, metrics: dict) -> None:
        pass

    def log_final(self, metrics: dict, figures: Sequence[Path] = (), step: int = 0, prefix: str = "final/") -> None:
        pass

    def close(self, status: str = "FINISHED") -> None:
        pass


class _Group(Tracker):
    """Several trackers as one."""

    def __init__(self, trackers: list[Tracker]):
        self.trackers = trackers

    def start(self, config, config_file=None, step=0):
        for t in self.trackers:
            t.start(config, config_file, step)

    def log_epoch(self, epoch, metrics):
        for t in self.trackers:
            t.log_epoch(epoch, metrics)

    def log_final(self, metrics, figures=(), step=0, prefix="final/"):
        for t in self.trackers:
            t.log_final(metrics, figures, step, prefix)

    def close(self, status="FINISHED"):
        for t in self.trackers:
            t.close(status)


class TensorBoardTracker(Tracker):
    """Event files in ``RUN/tensorboard`` (``tensorboard --logdir RUN``, or the folder of many runs).

    ``purge_step``: a resumed run's first epoch; TensorBoard drops the interrupted run's later steps.
    """

    def __init__(self, run_dir: Path, purge_step: int | None = None):
        with _quiet():
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(log_dir=str(run_dir / "tensorboard"), purge_step=purge_step)

    def start(self, config, config_file=None, step=0):
        from torch.utils.tensorboard.summary import hparams

        with _quiet():
            for summary in hparams(flatten(config), {}):  # into this run's folder, not a sub-run as add_hparams does
                self.writer.file_writer.add_summary(summary)
            if config_file is not None:
                text = "".join(f"    {line}\n" for line in read_text(config_file).splitlines())  # a markdown code block
                self.writer.add_text("config", text, step)
            self.writer.flush()

    def log_epoch(self, epoch, metrics):
        with _quiet():
            for key, value in _numbers(metrics, ("epoch",)).items():
                self.writer.add_scalar(key, value, epoch)
            self.writer.flush()  # a TensorBoard watching the run sees each epoch as it ends

    def log_final(self, metrics, figures=(), step=0, prefix="final/"):
        from matplotlib.image import imread

        with _quiet():
            for key, value in _numbers(metrics).items():
                self.writer.add_scalar(prefix + key, value, step)
            for path in figures:
                self.writer.add_image(f"figures/{Path(path).stem}", imread(path), step, dataformats="HWC")
            self.writer.flush()

    def close(self, status="FINISHED"):
        with _quiet():
            self.writer.close()


class MLflowTracker(Tracker):
    """One MLflow run per run directory, through ``MlflowClient`` (no global active run, so cells
    of a sweep in threads do not mix); continued when ``RUN/tracking.json`` names it in this store."""

    def __init__(self, run_dir: Path, tracking_uri: str | None = None, experiment: str | None = None):
        uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or (run_dir / "mlruns").resolve().as_uri()
        if uri.startswith("file:") or "://" not in uri:
            # MLflow 3 refuses its file store unless asked: a local store is what we want here
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        self.run_dir, self.uri = run_dir, uri
        experiment = experiment or os.environ.get("MLFLOW_EXPERIMENT_NAME") or DEFAULT_EXPERIMENT
        try:
            with _quiet():
                from mlflow.tracking import MlflowClient

                self.client = MlflowClient(tracking_uri=uri)
                self.run_id = self._continued() or self._new(experiment)
        except SciMLError:
            raise
        except Exception as exc:  # MlflowException, connection errors: a store that cannot be used
            raise ConfigError(f"MLflow cannot log to {uri} ({_first_line(exc)}); set MLFLOW_TRACKING_URI to a "
                              "reachable server or a local folder (file:PATH), or drop --logger mlflow") from None
        atomic_write_text(run_dir / STATE, json.dumps({"mlflow": {"tracking_uri": uri, "run_id": self.run_id}}, indent=2) + "\n")

    def _continued(self) -> str | None:
        try:
            saved = json.loads(read_text(self.run_dir / STATE))["mlflow"]
        except (OSError, ValueError, KeyError, TypeError):
            return None
        if saved.get("tracking_uri") != self.uri:
            return None
        try:
            run = self.client.get_run(saved["run_id"])
        except Exception:  # deleted, or another store: start a new run
            return None
        if run.info.lifecycle_stage != "active":
            return None
        self.client.update_run(run.info.run_id, status="RUNNING")
        return run.info.run_id

    def _new(self, experiment: str) -> str:
        found = self.client.get_experiment_by_name(experiment)
        if found is None:
            try:
                experiment_id = self.client.create_experiment(experiment)
            except Exception:  # made meanwhile by another cell of a sweep
                experiment_id = self.client.get_experiment_by_name(experiment).experiment_id
        else:
            experiment_id = found.experiment_id
        return self.client.create_run(experiment_id, run_name=self.run_dir.resolve().name).info.run_id

    def _call(self, what: str, fn, *args, **kwargs):
        try:
            with _quiet():
                return fn(*args, **kwargs)
        except Exception as exc:
            raise ConfigError(f"MLflow failed to {what} at {self.uri} ({_first_line(exc)}); the run directory "
                              f"{self.run_dir} holds everything, continue without --logger mlflow") from None

    def start(self, config, config_file=None, step=0):
        from mlflow.entities import Param

        have = self._call("read the run", self.client.get_run, self.run_id).data.params
        # a resumed run keeps its first values: MLflow params cannot change (config.yaml has the new ones)
        params = [Param(k, str(v)) for k, v in flatten(config).items() if k not in have]
        for i in range(0, len(params), 100):  # the store's batch limit
            self._call("log the config", self.client.log_batch, self.run_id, params=params[i:i + 100])
        if config_file is not None:
            self._call("store the config", self.client.log_artifact, self.run_id, str(config_file))

    def _log(self, values: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric

        stamp = int(time.time() * 1000)
        metrics = [Metric(k, v, stamp, step) for k, v in values.items()]
        self._call("log metrics", self.client.log_batch, self.run_id, metrics=metrics)

    def log_epoch(self, epoch, metrics):
        self._log(_numbers(metrics, ("epoch",)), epoch)

    def log_final(self, metrics, figures=(), step=0, prefix="final/"):
        self._log({prefix + k: v for k, v in _numbers(metrics).items()}, step)
        for path in figures:
            self._call("store a figure", self.client.log_artifact, self.run_id, str(path), "figures")
        if (self.run_dir / runs.METRICS).is_file():
            self._call("store the metrics", self.client.log_artifact, self.run_id, str(self.run_dir / runs.METRICS))

    def close(self, status="FINISHED"):
        self._call("end the run", self.client.set_terminated, self.run_id, status)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return (text.splitlines()[0][:200] if text else type(exc).__name__)


# ----------------------------------------------------------------------------- opening


def open_tracker(loggers: str | Iterable[str] | None, run_dir: str | Path, *, tracking_uri: str | None = None,
                 experiment: str | None = None, purge_step: int | None = None) -> Tracker:
    """The trackers ``loggers`` of the run directory ``run_dir`` as one :class:`Tracker` (one that
    logs nothing when ``loggers`` is empty). See the module docstring for where each writes."""
    names = require(loggers)
    run_dir = Path(run_dir)
    trackers: list[Tracker] = []
    for name in names:
        if name == "tensorboard":
            trackers.append(TensorBoardTracker(run_dir, purge_step))
        else:
            trackers.append(MLflowTracker(run_dir, tracking_uri, experiment))
    return _Group(trackers) if trackers else Tracker()


@contextlib.contextmanager
def session(opts, run_dir: Path, world, start_epoch: int = 0) -> Iterator[Tracker]:
    """The trackers of a training run (``opts.logger``), started with its ``config.yaml``; rank 0's
    only under DDP (the others get a silent one). A failure to open them fails every rank. When the
    block raises they are closed (``KILLED`` for a job signal, ``FAILED`` otherwise); on success the
    caller logs the final numbers and closes them."""
    tracker = Tracker()
    with world.agree("starting the experiment trackers"):
        if world.is_main and opts.logger:
            tracker = open_tracker(opts.logger, run_dir, tracking_uri=opts.tracking_uri, experiment=opts.experiment,
                                   purge_step=start_epoch + 1 if start_epoch else None)
            config_file = run_dir / runs.CONFIG
            tracker.start(load_yaml(config_file), config_file, start_epoch)
    try:
        yield tracker
    except BaseException as exc:
        with contextlib.suppress(SciMLError):  # the error that stopped training is the one to report
            tracker.close("KILLED" if isinstance(exc, (Preempted, KeyboardInterrupt)) else "FAILED")
        raise


def log_scores(run_dir: str | Path, options: dict, scores: dict, step: int) -> None:
    """Add evaluation ``scores`` (``eval/<name>``) to the trackers of a finished run trained with
    ``options`` (its ``logger``, ``tracking_uri``, ``experiment``): the same TensorBoard folder and
    MLflow run."""
    if not options.get("logger"):
        return
    tracker = open_tracker(options["logger"], run_dir, tracking_uri=options.get("tracking_uri"),
                           experiment=options.get("experiment"))
    try:
        tracker.log_final(scores, step=step, prefix="eval/")
    finally:
        tracker.close()
