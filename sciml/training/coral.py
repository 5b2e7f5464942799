"""``sciml train coral``: CORAL's two training stages on a grid dataset seen as point sets.

Each sample of the dataset becomes a point cloud: the grid points (coordinates ``linspace(0, 1)``
per axis, as :class:`sciml.operators.adapters.PointsOnGrid` uses at evaluation) inside the domain
(where a dataset has a ``mask`` input, 1 marks the points outside, which are left out), of which a
random fraction ``points`` is kept per sample (``default_rng([seed, i])``), the same points for
the input and the output function, as in CORAL's irregular-grid experiments. Values are
normalised per channel (global Gaussian statistics of the training set); the run directory is the
standard one (:mod:`sciml.runs`: ``run.json`` of kind ``coral``, weights, ``config.yaml``, ``metrics.jsonl``), so
``sciml evaluate`` scores it on full grids, and :func:`evaluate_on_points` on other samplings.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
from torch import nn

from ..config import dump_yaml, from_dict, to_dict
from ..errors import ConfigError, DataError
from ..io import atomic_write_text
from .. import runs, runtime
from . import checkpoint as ckpt
from .data import GridData, inside_domain, load_grid_data
from .normalisers import DataNormaliser


@dataclasses.dataclass(frozen=True)
class CoralTrainOptions:
    """Options of :func:`train_coral` (defaults: the paper's design-task settings, shortened).

    inr_epochs, processor_epochs: epochs of stage 1 (the two neural fields, meta-learned
        auto-decoding) and stage 2 (the processor on frozen codes); default 300 and 1000.
    epochs: passes over the training data of each stage, as for every other kind of training:
        sets whichever of ``inr_epochs`` and ``processor_epochs`` is not given.
    batch_size, lr_inr (fields' weights, AdamW), lr_code (learned inner step sizes),
        lr_processor (Adam), weight_decay.
    points: fraction of each sample's points used for training (``1.0``: all of them).
    n_train: first samples of the file (all when None); seed; device; num_threads.
    checkpoint_every: save the model every this many epochs of either stage (and at each stage's end).
    """

    inr_epochs: Optional[int] = None
    processor_epochs: Optional[int] = None
    epochs: Optional[int] = None
    batch_size: int = 32
    lr_inr: float = 1e-4
    lr_code: float = 1e-4
    lr_processor: float = 1e-3
    weight_decay: float = 0.0
    points: float = 1.0
    n_train: Optional[int] = None
    seed: int = 0
    device: str = "auto"
    num_threads: Optional[int] = None
    checkpoint_every: int = 50
    model_config: dict = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        for key, default in (("inr_epochs", 300), ("processor_epochs", 1000)):
            if getattr(self, key) is None:  # frozen: the resolved count is set once, here
                object.__setattr__(self, key, default if self.epochs is None else self.epochs)
        if not 0 < self.points <= 1:
            raise ConfigError(f"points must be a fraction in (0, 1] of each sample's grid points, got {self.points}")
        for key in ("inr_epochs", "processor_epochs"):
            v = getattr(self, key)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise ConfigError(f"coral training option {key!r} must be an integer >= 0, got {v!r}")
        for key in ("batch_size", "checkpoint_every"):
            v = getattr(self, key)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ConfigError(f"coral training option {key!r} must be an integer >= 1, got {v!r}")
        if self.n_train is not None and self.n_train < 2:
            raise ConfigError(f"n_train must be >= 2 (or null for all samples), got {self.n_train}")
        if self.device not in ("auto", "cpu", "cuda"):
            raise ConfigError(f"device must be auto, cpu or cuda, got {self.device!r}")


def point_samples(data: GridData, fraction: float, seed: int) -> torch.Tensor:
    """Indices ``(N, K)`` of the points kept per sample: a random ``fraction`` of the points inside
    the domain (``default_rng([seed, i])`` for sample ``i``), sorted; ``K`` is the same for all."""
    inside = inside_domain(data).reshape(len(data), -1)
    counts = inside.sum(1)
    k = max(1, int(round(fraction * int(counts.min()))))
    out = []
    for i in range(inside.shape[0]):
        candidates = torch.nonzero(inside[i]).squeeze(1).numpy()
        if fraction >= 1 and counts[i] == k:
            out.append(candidates)
            continue
        pick = np.random.default_rng([seed, i]).choice(candidates, size=k, replace=False)
        out.append(np.sort(pick))
    return torch.from_numpy(np.stack(out)).long()


def _gather(field: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """``field (N, C, *S)`` at flat point indices ``idx (N, K)`` -> ``(N, K, C)``."""
    n, c = field.shape[:2]
    flat = field.reshape(n, c, -1)
    return torch.gather(flat, 2, idx.unsqueeze(1).expand(n, c, idx.shape[1])).transpose(1, 2)


def _decode_points(norm, pred: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """Undo an output normaliser on point values ``pred (B, K, C)`` at flat grid indices ``idx (B, K)``:
    global statistics broadcast per channel, pointwise ones are read at the points."""
    if getattr(norm, "mean", None) is None:
        return pred
    c = pred.shape[-1]
    if norm.kind != "pointwise":  # (1, C, 1, ...): one mean and std per channel
        return pred * (norm.std.reshape(1, 1, c) + norm.eps) + norm.mean.reshape(1, 1, c)
    mean, std = norm.mean.reshape(c, -1), norm.std.reshape(c, -1) + norm.eps  # (C, *S) statistics
    return pred * std[:, idx].permute(1, 2, 0) + mean[:, idx].permute(1, 2, 0)


def _coords(shape: tuple[int, ...], idx: torch.Tensor) -> torch.Tensor:
    from ..operators.adapters import grid_points

    return grid_points(shape)[idx]  # (N, K, d)


def _built_or_new(model: Optional[nn.Module], config: dict, opts: CoralTrainOptions) -> nn.Module:
    from ..operators import base

    if model is None:
        return base.create("coral", **config)
    if opts.model_config:
        raise ConfigError("model_config applies to a model name; the given coral model is already built")
    need = {k: config[k] for k in ("in_channels", "out_channels", "coord_dim")}
    have = {k: model.config_dict().get(k) for k in need}
    if getattr(model, "name", "") != "coral" or have != need:
        raise ConfigError(f"the given model does not fit the data: the data need a coral model with {need}, got "
                          f"{getattr(model, 'name', type(model).__name__)} with {have}")
    return model


def train_coral(data: str | Path, out: str | Path, progress: bool = True, model: Optional[nn.Module] = None,
                **options: Any) -> dict:
    """Fit CORAL on ``data`` (a sciml dataset) and write the run directory ``out``.

    ``options``: :class:`CoralTrainOptions` (``model_config`` holds CORAL's architecture keys).
    ``model``: a CORAL module built by :func:`sciml.operators.create`, trained as given (its
    channel counts must match the data); default: built from ``model_config``.
    Returns a summary: run_dir, model, epochs per stage, final losses, parameters, seconds, points.
    """
    from ..operators.coral import fit_coral

    opts = from_dict(CoralTrainOptions, options, "coral training options")
    out = runs.check_new(out)
    device = runtime.device(opts.device)
    with runtime.limit_threads(opts.num_threads):
        full = load_grid_data(data, opts.n_train)
        sig = full.signature
        normaliser = DataNormaliser.fit("global", full.x, full.y)
        x, y = normaliser.encode_inputs(full.x), normaliser.encode_outputs(full.y)
        idx = point_samples(full, opts.points, opts.seed)
        coords = _coords(sig.shape, idx)
        v_in, v_out = _gather(x, idx), _gather(y, idx)
        config = {"in_channels": sig.in_channels, "out_channels": sig.out_channels, "coord_dim": len(sig.dims),
                  **opts.model_config}
        torch.manual_seed(opts.seed)
        model = _built_or_new(model, config, opts).to(device)
        out.mkdir(parents=True, exist_ok=True)
        dump_yaml({**to_dict(opts), "model": "coral", "model_config": model.config_dict(),
                   "data": str(Path(data).resolve())}, out / runs.CONFIG)
        rows: list[dict] = []
        t0 = time.perf_counter()
        stage_epochs = {"inr": opts.inr_epochs, "processor": opts.processor_epochs}
        labels = {"inr": "coral stage 1: neural fields", "processor": "coral stage 2: processor"}

        def save(stage: str, epoch: int, loss: float) -> None:
            ckpt.save_model(out, model, normaliser=normaliser, signature=sig, epoch=len(rows),
                            extra={"stage": stage, "stage_epoch": epoch, "train_loss": loss, "points": opts.points,
                                   "n_train": int(x.shape[0])})

        def report(stage: str, epoch: int, loss: float) -> None:
            if not math.isfinite(loss):
                raise DataError(f"coral training diverged in stage {stage} at epoch {epoch + 1} (loss {loss}); "
                                f"lower lr_inr / lr_processor")
            rows.append({"epoch": len(rows) + 1, "stage": stage, "stage_epoch": epoch + 1, "train_loss": loss,
                         "seconds": time.perf_counter() - t0})
            runs.write_metrics(out, rows)
            advance(stage=labels[stage], loss=f"{loss:.3g}")
            if (epoch + 1) % opts.checkpoint_every == 0 or epoch + 1 == stage_epochs[stage]:
                save(stage, epoch + 1, loss)

        with runtime.progress({labels[k]: n for k, n in stage_epochs.items()}, enabled=progress,
                              text="loss {task.fields[loss]}", fields={"loss": "-"}) as advance:
            history = fit_coral(model, v_in, coords, v_out, coords, inr_epochs=opts.inr_epochs,
                                processor_epochs=opts.processor_epochs, batch_size=opts.batch_size,
                                lr_inr=opts.lr_inr, lr_code=opts.lr_code, lr_processor=opts.lr_processor,
                                weight_decay=opts.weight_decay, seed=opts.seed, progress=report)
        if not rows:
            save("none", 0, math.nan)
    return {"run_dir": str(out), "model": "coral", "inr_epochs": opts.inr_epochs,
            "processor_epochs": opts.processor_epochs,
            "inr_loss": (history["inr_in"][-1] + history["inr_out"][-1]) if history["inr_in"] else None,
            "processor_loss": history["processor"][-1] if history["processor"] else None,
            "parameters": sum(p.numel() for p in model.parameters()), "points": int(idx.shape[1]),
            "seconds": time.perf_counter() - t0, "n_train": int(x.shape[0])}


@torch.no_grad()
def evaluate_on_points(run_dir: str | Path, data: str | Path, fraction: float, seed: int = 1,
                       batch_size: int = 16) -> dict:
    """Relative L2 of a point operator on a random ``fraction`` of each test sample's points.

    The inputs are observed at those points and the outputs predicted there (the sampling of
    sample ``i`` is ``default_rng([seed, i])``, a different one from training's for ``seed != 0``
    or another file). Returns ``{"fraction", "points", "n", "rel_l2_mean", "rel_l2_std", "rel_l2_max"}``.
    """
    from .losses import relative_l2

    model, info = ckpt.load_operator(run_dir)
    if getattr(model, "input_kind", "grid") != "points":
        raise ConfigError(f"{run_dir} holds a grid operator ({info.model_name}); --points evaluates point operators "
                          "(coral, gno, deeponet) on random point samplings")
    if not 0 < fraction <= 1:
        raise ConfigError(f"points must be a fraction in (0, 1], got {fraction}")
    test = load_grid_data(data)
    info.signature.check_same_problem(test.signature, str(data))
    normaliser, _ = ckpt.normaliser_for(info, test)
    idx = point_samples(test, fraction, seed)
    coords = _coords(test.signature.shape, idx)
    x = normaliser.encode_inputs(test.x)
    v_in, y = _gather(x, idx), _gather(test.y, idx)
    errors = []
    for i in range(0, len(test), batch_size):
        pred = model(v_in[i: i + batch_size], coords[i: i + batch_size], coords[i: i + batch_size])
        pred = _decode_points(normaliser.outputs, pred, idx[i: i + batch_size])
        errors.append(relative_l2(pred, y[i: i + batch_size]))
    e = torch.cat(errors).double()
    return {"fraction": fraction, "points": int(idx.shape[1]), "n": len(test), "rel_l2_mean": float(e.mean()),
            "rel_l2_std": float(e.std()) if len(e) > 1 else 0.0, "rel_l2_max": float(e.max())}
