"""The training loop: minibatch Adam(W) on the decoded relative L2 loss, checkpoints, resume.

The protocol follows FNO (Li et al. 2021, ``fourier_2d.py``): inputs and outputs are normalised
with statistics of the training set, the model maps normalised inputs to normalised outputs,
the loss compares the decoded prediction with the raw target, the scheduler steps per epoch.
Under torchrun the same loop trains data-parallel (see :mod:`sciml.training.ddp`): every rank takes
its share of each global batch and only rank 0 writes the run directory.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..config import dump_yaml
from ..errors import CheckpointError, ConfigError, ModelError, Preempted
from ..io import atomic_write_text, output_lock, read_text
from .. import runs, runtime
from . import checkpoint as ckpt, tracking
from .build import build_model
from .data import DatasetSignature
from .ddp import World, shard_batches, world as ddp_world
from .stream import Samples, epoch_order, fit_normaliser, iterate, open_samples, ranges
from .losses import get_loss, rel_l2_loss
from .normalisers import DataNormaliser
from .options import RUNTIME_KEYS, TrainOptions, resolve_options


# ----------------------------------------------------------------------------- helpers


def _optimizer(opts: TrainOptions, params) -> torch.optim.Optimizer:
    cls = torch.optim.Adam if opts.optimizer == "adam" else torch.optim.AdamW
    return cls(params, lr=opts.lr, weight_decay=opts.weight_decay)


def _scheduler(opts: TrainOptions, optimizer: torch.optim.Optimizer):
    if opts.scheduler == "step":
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=opts.step_size, gamma=opts.gamma)
    if opts.scheduler == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=opts.epochs)
    if opts.scheduler == "onecycle":
        return torch.optim.lr_scheduler.LambdaLR(optimizer, _one_cycle(opts.epochs))
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda epoch: 1.0)


def _one_cycle(epochs: int, warmup: float = 0.2, start: float = 0.5, end: float = 0.005):
    """LR factor per epoch of a one-cycle schedule: cosine from ``start`` up to 1 over the first
    ``warmup`` of the epochs, then cosine down to ``end`` at the last epoch (MgNO's Darcy setting,
    OneCycleLR stepped per epoch with div_factor 2, final_div_factor 100, pct_start 0.2). Written
    out because torch's OneCycleLR fails for runs of a few epochs."""
    up = max(1, round(warmup * epochs))
    down = max(1, epochs - 1 - up)

    def cosine(a: float, b: float, t: float) -> float:
        return b + (a - b) * (1 + math.cos(math.pi * min(t, 1.0))) / 2

    def factor(epoch: int) -> float:
        return cosine(start, 1.0, epoch / up) if epoch < up else cosine(1.0, end, (epoch - up) / down)

    return factor


def _fits_on(device: torch.device, *tensors: torch.Tensor) -> bool:
    """Whether the training tensors take under a quarter of the GPU's free memory."""
    if device.type != "cuda":
        return False
    free, _ = torch.cuda.mem_get_info(device)
    return sum(t.numel() * t.element_size() for t in tensors) < 0.25 * free


def _precision(precision: str, device: torch.device):
    """``(autocast context factory, gradient scaler)`` for ``fp32`` (neither), ``bf16`` or ``fp16``
    (autocast on the device; fp16 scales the loss). Losses are computed in float32."""
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16" and device.type == "cuda")
    if dtype is None:
        return contextlib.nullcontext, scaler
    return (lambda: torch.autocast(device.type, dtype=dtype)), scaler


def _compiled(grid: nn.Module, opts: TrainOptions) -> nn.Module:
    """``torch.compile(grid)`` with ``opts.compile``; a model it cannot compile is one clear error."""
    if not opts.compile:
        return grid
    if not hasattr(torch, "compile"):
        raise ConfigError(f"--compile needs torch >= 2.0 (this is {torch.__version__}); drop --compile")
    return _CheckedCompile(grid, torch.compile(grid))


class _CheckedCompile(nn.Module):
    """Runs the compiled module; the first call's failure (compilation is lazy) becomes a ModelError."""

    def __init__(self, plain: nn.Module, compiled):
        super().__init__()
        self.plain = plain
        self._compiled = [compiled]  # not a submodule: the parameters are the plain module's
        self._checked = False

    def forward(self, x):
        if self._checked:
            return self._compiled[0](x)
        try:
            out = self._compiled[0](x)
        except Exception as exc:  # torch._dynamo / inductor errors have no common public base
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ModelError(f"torch.compile cannot compile this model here ({type(exc).__name__}: {first[:200]}); "
                             "train without --compile") from None
        self._checked = True
        return out


def _epoch_generator(seed: int, epoch: int) -> torch.Generator:
    # the shuffle of epoch e depends on (seed, e) only, so a resumed run draws the same batches
    return torch.Generator().manual_seed(int(seed) * 1_000_003 + int(epoch))


@torch.no_grad()
def _mean_loss(net: nn.Module, normaliser: DataNormaliser, samples: Samples, loss_fn, batch_size: int,
               device: torch.device, world: World = World(), workers: int | None = None, autocast=None) -> float:
    """Sample-weighted mean of ``loss_fn`` over a whole split; under DDP each rank scores its
    contiguous share and the sums are reduced, so every rank gets the mean."""
    net.eval()
    total = 0.0
    start, stop = world.span(len(samples))
    for xb, yb in iterate(samples, ranges(len(samples), batch_size, start, stop), workers):
        xb, yb = xb.to(device), yb.to(device)
        with autocast() if autocast is not None else contextlib.nullcontext():
            out = net(normaliser.encode_inputs(xb))
        pred = normaliser.decode_outputs(out.float())
        total += float(loss_fn(pred, yb)) * xb.shape[0]
    return world.sum(total)[0] / len(samples)


def _read_metrics(run_dir: Path, upto: int) -> list[dict]:
    """The metrics rows of the epochs up to ``upto`` (those of a resumed run's checkpoint)."""
    return [row for row in runs.read_metrics(run_dir) if int(row.get("epoch", 0)) <= upto]


# ----------------------------------------------------------------------------- the loop


@dataclasses.dataclass
class _Run:
    """Everything the loop needs (kept together so ``train`` and ``resume`` share the loop)."""

    out: Path
    opts: TrainOptions
    operator: nn.Module
    normaliser: DataNormaliser
    train: Samples
    val: Samples | None
    test: Samples | None
    start_epoch: int = 0
    start_step: int = 0  # batches of epoch start_epoch + 1 already done (a run stopped by a job signal)
    start_total: float = 0.0  # their summed loss (times batch sizes)
    optimizer_state: dict | None = None
    scheduler_state: dict | None = None
    scaler_state: dict | None = None
    best_loss: float = math.inf
    metrics: list = dataclasses.field(default_factory=list)


def _loop(run: _Run, world: World = World()) -> dict:
    """Train ``run`` to ``opts.epochs`` on this process's share of each global batch (all of it in a
    world of one); only rank 0 writes metrics, checkpoints and figures and shows progress."""
    opts, out = run.opts, run.out
    device = world.device
    operator = run.operator.to(device)
    grid = ckpt.as_grid(operator).to(device)
    net = world.wrap(_compiled(grid, opts))  # DDP under torchrun: averages the gradients of the ranks
    normaliser = run.normaliser.to(device)
    optimizer = _optimizer(opts, operator.parameters())
    scheduler = _scheduler(opts, optimizer)
    if run.optimizer_state is not None:
        optimizer.load_state_dict(run.optimizer_state)
        scheduler.load_state_dict(run.scheduler_state)
    loss_fn = get_loss(opts.loss)
    sig = run.train.signature
    autocast, scaler = _precision(opts.precision, device)

    # the model sees encoded inputs; the loss compares decoded predictions (float32) with raw targets
    train = run.train
    if train.cached and _fits_on(device, train.x, train.y):  # saves a host-to-device copy per batch
        train = train.to(device)
    n = len(train)

    def checkpoint(epoch: int, train_loss: float, step: int = 0, total: float = 0.0) -> None:
        # weights, then the training state, each written atomically; the state carries its own
        # copy of the weights, so a kill between the two writes leaves a consistent state to
        # resume from (``--resume`` of a run without a state trains it again from its config).
        # A stop inside an epoch (a job signal) saves the state only, with the batches done.
        if not step:
            extra = {"train_loss": train_loss, "n_train": n}
            if opts.model != operator.name:
                extra["preset"] = opts.model
            ckpt.save_model(out, operator, normaliser=normaliser, signature=sig, epoch=epoch, extra=extra)
        state = {
            "epoch": epoch,
            "model": {k: v.detach().cpu() for k, v in operator.state_dict().items()},
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "rng": ckpt.rng_state(),
            "best_loss": run.best_loss,
            "seed": opts.seed,
        }
        if step:
            state.update(step=step, total=total)
        if scaler.is_enabled():
            state["scaler"] = scaler.state_dict()
        ckpt.save_train_state(out, state)

    def batch_loss(loss: torch.Tensor, mine: int, batch: int, signalled: bool) -> tuple[float, bool]:
        """The global batch's mean loss from this rank's mean over ``mine`` of its ``batch`` samples,
        and whether any rank got a job signal (a collective under DDP, so every rank takes the same
        divergence and stop decisions)."""
        if not world.distributed:
            return float(loss.detach()), signalled
        value, flag = world.sum(float(loss.detach()) * mine if mine else 0.0, float(signalled))
        return value / batch, flag > 0

    def mean_loss(samples: Samples, fn) -> float:
        return _mean_loss(grid, normaliser, samples, fn, opts.batch_size, device, world, opts.workers, autocast)

    if run.scaler_state is not None and scaler.is_enabled():
        scaler.load_state_dict(run.scaler_state)
    t_start = time.perf_counter()
    train_loss = math.nan
    n_batches = math.ceil(n / opts.batch_size)
    with runtime.progress(opts.epochs * n_batches, "train", enabled=opts.progress and world.is_main,
                          text=f"epoch {{task.fields[epoch]}}/{opts.epochs}  {{task.fields[losses]}}",
                          fields={"epoch": run.start_epoch, "losses": ""},
                          completed=run.start_epoch * n_batches + run.start_step,
                          counts=False) as advance, runtime.job_signals("flag") as signalled, \
            tracking.session(opts, out, world, run.start_epoch) as tracker:
        for epoch in range(run.start_epoch + 1, opts.epochs + 1):
            t0 = time.perf_counter()
            net.train()
            perm = epoch_order(n, _epoch_generator(opts.seed, epoch), train.block, opts.batch_size)
            skip = run.start_step if epoch == run.start_epoch + 1 else 0
            total = run.start_total if skip else 0.0
            shares = list(shard_batches(perm, opts.batch_size, world.rank, world.size))[skip:]
            # a rank without a share (a last batch shorter than the world) joins DDP's gradient
            # average with a zero-weighted sample of the batch
            reads = [mine if mine.shape[0] else batch[:1] for mine, batch in shares]
            for step, ((mine, batch), (xb, yb)) in enumerate(zip(shares, iterate(train, reads, opts.workers)), skip + 1):
                share = mine.shape[0]
                xb, yb = xb.to(device, non_blocking=True), yb.to(device, non_blocking=True)
                optimizer.zero_grad(set_to_none=True)
                with autocast():
                    out_b = net(normaliser.encode_inputs(xb))
                pred = normaliser.decode_outputs(out_b.float())
                loss = loss_fn(pred, yb)
                value, stop = batch_loss(loss, share, batch.shape[0], signalled.signum is not None)
                if not math.isfinite(value):
                    saved = _saved_epoch(out)
                    kept = f"the last good checkpoint (epoch {saved}) is kept in {out}" if saved else f"no checkpoint was written to {out}"
                    raise ModelError(
                        f"training diverged: the {opts.loss} loss is {value} at epoch {epoch}, batch {step}; "
                        f"{kept}; lower the learning rate (lr={opts.lr:g}) or check the data"
                    )
                if world.distributed:
                    # DDP averages over the ranks: weight share/batch * size makes that the global mean
                    loss = loss * (share * world.size / batch.shape[0])
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
                total += value * batch.shape[0]
                advance(epoch=epoch)
                if stop and step < n_batches:  # at this batch boundary: save, then stop
                    if world.is_main:
                        checkpoint(epoch - 1, math.nan, step, total)
                    world.barrier()
                    raise Preempted(
                        f"stopped by {signalled.name or 'a job signal'} at epoch {epoch}, batch {step} of {n_batches}; "
                        f"the state is saved in {out}: continue with `sciml train --resume {out}`"
                    )
            lr = optimizer.param_groups[0]["lr"]
            scheduler.step()
            train_loss = total / n
            row: dict[str, Any] = {"epoch": epoch, "train_loss": train_loss}
            if run.val is not None:
                row["val_loss"] = mean_loss(run.val, loss_fn)
            if run.test is not None:
                row["test_loss"] = mean_loss(run.test, loss_fn)
                if opts.loss != "rel_l2":
                    row["test_rel_l2"] = mean_loss(run.test, rel_l2_loss)
            row["lr"] = lr
            row["seconds"] = time.perf_counter() - t0
            run.best_loss = min(run.best_loss, row.get("val_loss", train_loss))
            run.metrics.append(row)
            stop = world.sum(float(signalled.signum is not None))[0] > 0 if world.distributed else signalled.signum is not None
            if world.is_main:
                runs.write_metrics(out, run.metrics)
                tracker.log_epoch(epoch, row)
                if epoch % opts.checkpoint_every == 0 or epoch == opts.epochs or stop:
                    checkpoint(epoch, train_loss)
            advance(0, losses="  ".join(
                f"{k} {row[k]:.4g}" for k in ("train_loss", "val_loss", "test_loss") if k in row))
            if stop and epoch < opts.epochs:
                world.barrier()
                raise Preempted(
                    f"stopped by {signalled.name or 'a job signal'} after epoch {epoch} of {opts.epochs}; "
                    f"the state is saved in {out}: continue with `sciml train --resume {out}`"
                )

    if opts.figures and run.metrics and world.is_main:
        from ..plots import plot_loss

        plot_loss(out, out / "loss.png")
    world.barrier()  # every rank returns once rank 0's files are complete
    final = run.metrics[-1] if run.metrics else {}
    result = {
        "run_dir": str(out),
        "model": operator.name,
        "epochs": int(final.get("epoch", run.start_epoch)),
        "epochs_run": len(run.metrics) - sum(1 for r in run.metrics if r["epoch"] <= run.start_epoch),
        "train_loss": final.get("train_loss", math.nan),
        "val_loss": final.get("val_loss"),
        "test_loss": final.get("test_loss"),
        "best_loss": run.best_loss,
        "seconds": time.perf_counter() - t_start,
        "n_train": n,
        "n_parameters": sum(p.numel() for p in operator.parameters()),
        "device": str(device),
    }
    tracker.log_final({**final, **result}, sorted(out.glob("*.png")), step=result["epochs"])  # rank 0's; a no-op elsewhere
    tracker.close()
    return result


def _saved_epoch(out: Path) -> int:
    try:
        return int(runs.read_meta(out).get("epoch", 0))
    except CheckpointError:
        return 0


def _statistics(normaliser: DataNormaliser) -> list[torch.Tensor]:
    """The fitted tensors of a normaliser (none for ``none``), for broadcasting in place."""
    return [t for part in (normaliser.inputs, normaliser.outputs) for t in (part.mean, part.std) if t is not None]


def _split(data: Samples, val_fraction: float) -> tuple[Samples, Samples | None]:
    n = len(data)
    n_val = int(round(val_fraction * n))
    if val_fraction > 0 and (n_val < 1 or n - n_val < 2):
        raise ConfigError(
            f"val_fraction={val_fraction} of {n} samples leaves {n - n_val} for training and {n_val} for validation; "
            "use more samples or another fraction"
        )
    if n_val == 0:
        return data, None
    return data.subset(0, n - n_val), data.subset(n - n_val, n)


def _samples(path, opts: TrainOptions, world: World, n: int | None = None) -> Samples:
    """The first ``n`` samples of ``path``, cached or streamed by ``opts.cache_gb`` (the budget is
    shared by the processes of this machine)."""
    local = int(os.environ.get("LOCAL_WORLD_SIZE", world.size if world.distributed else 1))
    return open_samples(path, n, cache_gb=opts.cache_gb, processes=local)


def _load_test(test_data, sig: DatasetSignature, opts: TrainOptions, world: World) -> Samples | None:
    if test_data is None:
        return None
    test = _samples(test_data, opts, world)
    sig.check_same_problem(test.signature, str(test_data))
    if test.signature.shape != sig.shape:
        raise ConfigError(
            f"test data {test_data} has grid {test.signature.shape}, the training data {sig.shape}; "
            "per-epoch test losses need the training resolution (use `sciml evaluate` for other resolutions)"
        )
    return test


def _config_yaml(opts: TrainOptions, operator: nn.Module, data, test_data) -> dict:
    d = opts.to_dict()
    d["model_config"] = operator.config_dict()
    d["data"] = str(Path(data).resolve())
    d["test_data"] = str(Path(test_data).resolve()) if test_data is not None else None
    return d


# ----------------------------------------------------------------------------- public API


def train_operator(
    model_or_name: str | nn.Module | None = None,
    *,
    data: str | Path | None = None,
    out: str | Path,
    resume: bool = False,
    test_data: str | Path | None = None,
    config: dict | None = None,
    **options: Any,
) -> dict:
    """Train a model on the dataset ``data`` and write the run directory ``out``.

    ``model_or_name`` is a registry name, a preset name or a registered operator (default: the
    ``model`` option, ``fno``). ``config`` (e.g. a YAML mapping) is merged under ``options``
    (see :class:`TrainOptions`); unknown keys raise ConfigError. With ``resume=True`` the existing
    run ``out`` continues (see :func:`resume`). ``test_data`` is evaluated after every epoch.

    Returns a summary: run_dir, model, epochs, train_loss, val_loss, test_loss, best_loss,
    seconds, n_train, n_parameters, device.
    """
    config = dict(config or {})
    data = data if data is not None else config.pop("data", None)
    test_data = test_data if test_data is not None else config.pop("test_data", None)
    config.pop("data", None)
    config.pop("test_data", None)
    if resume:
        if isinstance(model_or_name, str):
            options.setdefault("model", model_or_name)
        return _resume(out, data=data, test_data=test_data, config=config, options=options)
    if isinstance(model_or_name, str):
        options["model"] = model_or_name
    elif isinstance(model_or_name, nn.Module) and (options.get("model_config") or config.get("model_config")):
        raise ConfigError("model_config applies to a model name; the given model is already built, pass its name instead")
    opts = resolve_options(config, options)
    tracking.require(opts.logger)  # a missing package fails before the data are read
    if opts.model == "coral" or getattr(model_or_name, "name", "") == "coral":
        raise ConfigError("coral trains in two stages (neural fields, then processor): use "
                          "sciml.training.coral.train_coral(data, out, ...) or `sciml train coral --data D.h5 --out RUN`")
    if data is None:
        raise ConfigError("no training data given; pass data=PATH (--data) of a dataset written by `sciml generate`")
    out = runs.check_new(out, resumable=True)
    with runtime.limit_threads(opts.num_threads), ddp_world(opts.device) as world, contextlib.ExitStack() as lock:
        with world.agree("preparing the run"):
            if world.is_main:  # inside the agreement: a refused lock stops every rank
                lock.enter_context(output_lock(out, "--out"))
            full = _samples(data, opts, world, opts.n_train)
            train_part, val_part = _split(full, opts.val_fraction)
            test = _load_test(test_data, full.signature, opts, world)
            model = model_or_name if isinstance(model_or_name, nn.Module) else opts.model
            operator = build_model(model, opts.model_config, full.signature, opts.seed)
            if isinstance(model_or_name, nn.Module):
                opts = opts.replace(model=operator.name)
            torch.manual_seed(opts.seed)
            # rank 0 fits (one streaming pass); the others take its statistics below, so a streamed
            # rank reads only its own shares (two samples here give the statistics' shapes)
            fit_on = train_part if world.is_main or train_part.cached else train_part.subset(0, min(2, len(train_part)))
            normaliser = fit_normaliser(opts.normalise, fit_on, opts.workers)
        # rank 0's statistics on every rank
        world.broadcast_(_statistics(normaliser))
        if world.is_main:
            out.mkdir(parents=True, exist_ok=True)
            dump_yaml(_config_yaml(opts, operator, data, test_data), out / runs.CONFIG)
        run = _Run(out=out, opts=opts, operator=operator, normaliser=normaliser,
                   train=train_part, val=val_part, test=test)
        return _loop(run, world)


def resume(run_dir: str | Path, *, data: str | Path | None = None, test_data: str | Path | None = None,
           config: dict | None = None, **options: Any) -> dict:
    """Continue the run in ``run_dir`` from its last checkpoint with the same optimiser, scheduler
    and RNG state, up to ``epochs`` (which may be raised). Only ``epochs``, ``device``,
    ``num_threads``, ``progress``, ``checkpoint_every`` and ``figures`` may change (a cosine
    schedule keeps its original length); ``data`` and ``test_data`` default to the run's files."""
    return _resume(run_dir, data=data, test_data=test_data, config=dict(config or {}), options=options)


def _same(a: Any, b: Any) -> bool:
    """Equal as plain YAML data (tuples and lists compare equal)."""
    return json.dumps(a, sort_keys=True, default=str) == json.dumps(b, sort_keys=True, default=str)


def _restart(out: Path, data, test_data, config: dict, options: dict) -> dict:
    """``--resume`` of a run killed before its first complete checkpoint (no training state):
    train it again from its saved ``config.yaml`` (same options and seed, hence the result of
    an uninterrupted run)."""
    import yaml

    try:
        saved = yaml.safe_load(read_text(out / runs.CONFIG)) or {}
    except yaml.YAMLError:
        raise CheckpointError(f"{out / runs.CONFIG} is damaged; cannot resume this run, start a new one") from None
    if not isinstance(saved, dict) or "model" not in saved:
        raise CheckpointError(f"{out / runs.CONFIG} does not describe a run; cannot resume it, start a new one")
    asked = {**config, **options}
    changed = [k for k in asked if k not in RUNTIME_KEYS]
    if changed:
        raise ConfigError(f"cannot change {changed[0]!r} when resuming; start a new run with --out instead")
    data = _dataset_to_resume(out, data, saved)
    test_data = test_data if test_data is not None else saved.pop("test_data", None)
    saved.pop("data", None)
    saved.pop("test_data", None)
    model = saved.pop("model")
    for stale in [out / runs.META, out / runs.WEIGHTS, out / runs.METRICS, *out.glob(".*.tmp")]:
        if stale.exists():  # written by the killed run before its first complete checkpoint
            stale.unlink()
    return train_operator(model, data=data, out=out, test_data=test_data, config=saved, **asked)


def _dataset_to_resume(out: Path, data, saved: dict):
    """The dataset a resumed run trains on: ``data`` if given, else the one its config.yaml names."""
    data = data if data is not None else saved.get("data")
    if not isinstance(data, (str, Path)):
        raise CheckpointError(f"{out / runs.CONFIG} names no dataset (the run is damaged); pass --data D.h5 "
                              "or start a new run")
    return data


def _resume(run_dir, *, data, test_data, config: dict, options: dict) -> dict:
    out = Path(run_dir)
    if runs.holds_run(out) and runs.kind(out) == "coral":  # before a retrain
        raise ConfigError(f"{out} is a coral run; its two-stage training cannot be resumed yet, train a new run with --out")
    if out.is_dir() and (out / runs.CONFIG).exists() and not (out / runs.TRAIN_STATE).exists():
        return _restart(out, data, test_data, config, options)
    operator, info = ckpt.load_operator(out)
    state = ckpt.load_train_state(out)
    saved = dict(info.config)
    if not saved:
        raise CheckpointError(f"{out / runs.CONFIG} not found; cannot resume this run, start a new one")
    data = _dataset_to_resume(out, data, saved)
    test_data = test_data if test_data is not None else saved.get("test_data")
    saved_opts = {k: v for k, v in saved.items() if k not in ("data", "test_data")}
    base = resolve_options(saved_opts, {})
    given = resolve_options({}, {**config, **options})
    asked = {**config, **options}
    for key, value in asked.items():
        if key in RUNTIME_KEYS:
            continue
        if key == "model" and value == saved.get("model"):
            continue
        if key == "model_config" and all(_same(saved.get("model_config", {}).get(k), v) for k, v in value.items()):
            continue
        if getattr(given, key) != getattr(base, key):
            raise ConfigError(
                f"cannot change {key!r} when resuming (the run has {getattr(base, key)!r}, got {getattr(given, key)!r}); "
                "start a new run with --out instead"
            )
    opts = base.replace(**{k: getattr(given, k) for k in asked if k in RUNTIME_KEYS})
    if opts.scheduler == "onecycle" and opts.epochs != base.epochs:
        raise ConfigError(
            f"cannot change 'epochs' when resuming a onecycle run (its schedule spans {base.epochs} epochs); "
            "start a new run with --out instead"
        )
    epoch = int(state["epoch"])
    if "model" in state:  # the weights that go with the optimiser state (see ``checkpoint``)
        try:
            operator.load_state_dict(state["model"])
        except (RuntimeError, KeyError) as exc:
            raise CheckpointError(f"{out / runs.TRAIN_STATE} does not fit the run's model ({str(exc).splitlines()[0]}); "
                                  "the run is damaged, start a new run") from None
    elif epoch != info.epoch:
        raise CheckpointError(
            f"{out}: the training state is at epoch {epoch} but the weights at epoch {info.epoch}; the run is damaged, start a new run"
        )
    # under DDP every rank reads rank 0's checkpoint (the run directory is on a shared filesystem)
    with runtime.limit_threads(opts.num_threads), ddp_world(opts.device) as world, contextlib.ExitStack() as lock:
        with world.agree("resuming the run"):
            if world.is_main:  # inside the agreement: a refused lock stops every rank
                lock.enter_context(output_lock(out, "--out"))
                for stale in out.glob(".*.tmp"):  # half-written files of a killed run
                    stale.unlink()
            full = _samples(data, opts, world, opts.n_train)
            info.signature.check_same_problem(full.signature, str(data))
            if full.signature.shape != info.signature.shape:
                raise ConfigError(f"{data} has grid {full.signature.shape}, the run was trained on {info.signature.shape}; resume with the same data")
            train_part, val_part = _split(full, opts.val_fraction)
            test = _load_test(test_data, full.signature, opts, world)
            metrics = _read_metrics(out, epoch)
            operator.train()
            ckpt.set_rng_state(state["rng"])
        if world.is_main:  # after the agreement: no rank is still reading the run's files
            dump_yaml(_config_yaml(opts, operator, data, test_data), out / runs.CONFIG)
        run = _Run(out=out, opts=opts, operator=operator, normaliser=info.normaliser,
                   train=train_part, val=val_part, test=test, start_epoch=epoch,
                   start_step=int(state.get("step", 0)), start_total=float(state.get("total", 0.0)),
                   optimizer_state=state["optimizer"], scheduler_state=state["scheduler"],
                   scaler_state=state.get("scaler"),
                   best_loss=float(state.get("best_loss", math.inf)), metrics=metrics)
        return _loop(run, world)


@torch.no_grad()
def predict(model: nn.Module, normaliser: DataNormaliser, x: torch.Tensor, batch_size: int | None = None) -> torch.Tensor:
    """Decoded prediction ``(B, C_out, *S)`` for raw inputs ``x`` ``(B, C_in, *S)``.

    Runs on the model's device in eval mode and returns a tensor on ``x``'s device. A pointwise
    normaliser must match the grid of ``x`` (see :meth:`DataNormaliser.resample`).
    """
    if normaliser.shape is not None and tuple(x.shape[2:]) != normaliser.shape:
        raise ModelError(
            f"the pointwise normaliser was fitted on a {'x'.join(map(str, normaliser.shape))} grid, got inputs of "
            f"shape {tuple(x.shape)}; resample it first with normaliser.resample(shape) (evaluate does this)"
        )
    model.eval()
    try:
        device = next(model.parameters()).device
    except StopIteration:
        device = x.device
    normaliser.to(device)
    outs = []
    step = batch_size or x.shape[0]
    for i in range(0, x.shape[0], step):
        xb = normaliser.encode_inputs(x[i : i + step].to(device, torch.float32))
        outs.append(normaliser.decode_outputs(model(xb)).to(x.device))
    return torch.cat(outs) if outs else x.new_zeros((0,))
