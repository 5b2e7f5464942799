"""Figures (a leaf of the core): predicted samples against the truth, loss curves, residual histories.

Drawn on ``matplotlib.figure.Figure`` with the Agg canvas (no pyplot, no global backend
change), written atomically as PNG.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from .io import atomic_path, read_text
from .runs import read_metrics


def figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def save(fig, path: str | Path, dpi: int = 100) -> Path:
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi)
    return path


def as_numpy(a) -> np.ndarray:
    if hasattr(a, "detach"):
        a = a.detach().cpu().numpy()
    return np.asarray(a, dtype=np.float64)


def as_field(a: np.ndarray, cut: tuple[int, int] | None = None) -> np.ndarray:
    """First channel of one sample ``(C, *S)``: 1-D or 2-D; of a 3-D field the plane ``cut``
    ``(spatial axis, index)``, by default the middle of the last axis (:func:`plane`)."""
    f = a[0]
    if f.ndim > 2:
        axis, index = cut if cut is not None else (f.ndim - 1, f.shape[-1] // 2)
        f = np.take(f, index, axis=axis)
    return f


def plane(dims: Sequence[str], coords: dict, spec: str | None = None) -> tuple[int, int, str]:
    """The plane of a 3-D grid to draw: ``(axis, index, label)``. ``spec`` ``AXIS=VALUE`` names an
    axis and a coordinate value on it (the nearest grid point is drawn; values up to one spacing
    beyond the outermost points are taken, so ``z=0`` is the first plane of a grid without its
    boundary); None: the middle of the last axis. ``label`` reads ``z = 0.5 (index 6 of 0..12)``."""
    from .errors import ConfigError

    if spec is None:
        axis = len(dims) - 1
        index = len(np.asarray(coords[dims[axis]])) // 2
    else:
        name, _, value = spec.partition("=")
        name = name.strip()
        if name not in dims:
            raise ConfigError(f"--slice {spec!r}: the axis must be one of {', '.join(dims)}, e.g. --slice {dims[-1]}=0.5")
        try:
            target = float(value)
        except ValueError:
            raise ConfigError(f"--slice {spec!r}: give AXIS=VALUE with a coordinate value, e.g. --slice {name}=0.5") from None
        axis = list(dims).index(name)
        points = np.asarray(coords[name], dtype=np.float64)
        step = float(np.ptp(points)) / max(points.size - 1, 1)
        if not points.min() - step <= target <= points.max() + step:
            raise ConfigError(f"--slice {spec!r}: {name} runs from {points.min():.4g} to {points.max():.4g} on this "
                              f"grid; give a value in that range")
        index = int(np.argmin(np.abs(points - target)))
    points = np.asarray(coords[dims[axis]])
    return axis, index, f"{dims[axis]} = {float(points[index]):.4g} (index {index} of 0..{points.size - 1})"


def show_field(fig, ax, f: np.ndarray, title: str, vmin=None, vmax=None, cmap="viridis") -> None:
    """A 1-D field as a line, a 2-D one as an image with its colour bar. A constant image (to 1e-12) gets
    the scale ``value +- 1 %`` (``+- 0.5`` around 0), a colour bar whose one tick is the value and
    "constant VALUE" in its title, rather than matplotlib's default range around the value."""
    if f.ndim == 1:
        ax.set_title(title, fontsize=9)
        ax.plot(np.linspace(0, 1, f.size), f, lw=1)
        return
    lo = np.nanmin(f) if vmin is None else vmin
    hi = np.nanmax(f) if vmax is None else vmax
    # constant up to rounding (|pred - truth| of a prediction off by a constant varies in the 17th digit)
    constant = bool(np.isfinite(lo) and np.isfinite(hi) and hi - lo <= 1e-12 * max(abs(lo), abs(hi)))
    if constant:
        value = float(lo + hi) / 2
        half = 0.01 * abs(value) or 0.5
        vmin, vmax = value - half, value + half
        title = f"{title}: constant {value:.4g}"
    ax.set_title(title, fontsize=9)
    im = ax.imshow(f.T, origin="lower", extent=(0, 1, 0, 1), vmin=vmin, vmax=vmax, cmap=cmap)
    ax.set_xticks([])
    ax.set_yticks([])
    bar = fig.colorbar(im, ax=ax, shrink=0.85)
    if constant:
        bar.set_ticks([value], labels=[f"{value:.4g}"])


def plot_samples(inputs, truth, pred, path: str | Path, n: int = 3,
                 names: Sequence[str] = ("input", "truth", "prediction", "|error|")) -> Path:
    """One row per sample: input, truth, prediction (same colour scale) and ``|pred - truth|``.

    ``inputs`` ``(B, C_in, *S)``, ``truth`` and ``pred`` ``(B, C_out, *S)``, tensors or arrays;
    the first channel of each is shown (the middle slice for 3-D fields).
    """
    x, y, p = as_numpy(inputs), as_numpy(truth), as_numpy(pred)
    n = max(1, min(int(n), x.shape[0]))
    fig = figure(12, 2.8 * n)
    axes = fig.subplots(n, 4, squeeze=False)
    for i in range(n):
        fx, fy, fp = as_field(x[i]), as_field(y[i]), as_field(p[i])
        lo, hi = min(fy.min(), fp.min()), max(fy.max(), fp.max())
        show_field(fig, axes[i, 0], fx, f"{names[0]} {i}")
        if fy.ndim == 1:
            show_field(fig, axes[i, 1], fy, names[1])
            axes[i, 2].plot(np.linspace(0, 1, fy.size), fy, lw=1, label="truth")
            axes[i, 2].plot(np.linspace(0, 1, fp.size), fp, lw=1, ls="--", label="prediction")
            axes[i, 2].set_title(names[2], fontsize=9)
            axes[i, 2].legend(fontsize=7)
        else:
            show_field(fig, axes[i, 1], fy, names[1], lo, hi)
            show_field(fig, axes[i, 2], fp, names[2], lo, hi)
        show_field(fig, axes[i, 3], np.abs(fp - fy), names[3], cmap="magma")
    if x[0, 0].ndim == 3:
        size = x.shape[-1]
        fig.suptitle(f"3-D fields: the middle plane of the last axis (index {size // 2} of 0..{size - 1})", fontsize=10)
    return save(fig, path)


def _loss_name(run_dir: str | Path) -> str:
    import yaml

    try:
        cfg = yaml.safe_load(read_text(Path(run_dir) / "config.yaml")) or {}
        return {"rel_l2": "relative L2", "mse": "MSE"}.get(cfg.get("loss"), str(cfg.get("loss", "")))
    except (OSError, yaml.YAMLError, AttributeError):
        return "training loss"


def plot_loss(run_dir: str | Path, path: str | Path) -> Path:
    """Training (and validation/test) loss per epoch on a log scale, from ``RUN/metrics.jsonl``."""
    rows = read_metrics(run_dir, required=True)
    axis = next((k for k in ("epoch", "step", "update") if k in rows[0]), "epoch")  # learned solvers log steps
    epochs = [r.get(axis) for r in rows]
    fig = figure(6, 4)
    ax = fig.subplots()
    for key, label in (("train_loss", "train"), ("loss", "train"), ("val_loss", "validation"), ("test_loss", "test")):
        vals = [r.get(key) for r in rows]
        if any(v is not None for v in vals):
            ax.plot(epochs, [np.nan if v is None else v for v in vals], label=label, lw=1.5)
    ax.set_yscale("log")
    ax.set_xlabel(axis)
    ax.set_ylabel(f"loss ({_loss_name(run_dir)})")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    ax.set_title(f"loss curve of {Path(run_dir).name}", fontsize=10)
    return save(fig, path)


def plot_residuals(results: Sequence, path: str | Path, title: str = "") -> Path:
    """Relative residual ``||b - A x_k|| / ||b||`` against iteration, one line per solve result."""
    fig = figure(6, 4)
    ax = fig.subplots()
    for r in results:
        res = np.asarray(r.residuals, dtype=float)
        if res.size:
            ax.semilogy(np.arange(res.size), res, marker="o" if res.size < 3 else None, lw=1.5,
                        label=f"{r.method} ({r.iterations} it, {r.total_time:.3g} s)")
    ax.set_xlabel("iteration")
    ax.set_ylabel("relative residual")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(title, fontsize=10)
    return save(fig, path)


def plot_meshfree(problem, results: Sequence, path: str | Path) -> Path:
    """Mesh-free solves of a test problem: the solutions (1-D) or error maps (2-D) and the relative
    L2 error during training. ``results`` is a list of ``(label, result)`` with ``u_test`` on the
    uniform test grid and ``history`` of ``(step, loss, rel_l2)``."""
    dim = problem.dim
    panels = 1 + (len(results) if dim == 2 else 1)
    fig = figure(4.2 * panels, 3.6)
    axes = fig.subplots(1, panels, squeeze=False)[0]
    for i, (label, r) in enumerate(results):
        u = np.asarray(r.u_test, dtype=float)
        n = int(round(u.size ** (1.0 / dim)))
        x = problem.points(n)
        exact = problem.exact(x).numpy()
        if dim == 1:
            if i == 0:
                axes[0].plot(x[:, 0].numpy(), exact, "k-", lw=2.5, alpha=0.35, label="exact")
            axes[0].plot(x[:, 0].numpy(), u, lw=1, label=label)
        else:
            ax = axes[i]
            im = ax.imshow(np.abs(u - exact).reshape(n, n).T, origin="lower", cmap="magma",
                           extent=(problem.lower[0], problem.upper[0], problem.lower[1], problem.upper[1]))
            fig.colorbar(im, ax=ax, shrink=0.8)
            ax.set_title(f"|error|, {label}", fontsize=9)
        hist = np.asarray([(h[0], h[2]) for h in r.history], dtype=float)
        if hist.size:
            axes[-1].semilogy(hist[:, 0], hist[:, 1], label=label)
    if dim == 1:
        axes[0].set_xlabel("x")
        axes[0].legend(fontsize=8)
        axes[0].set_title(problem.description, fontsize=9)
    axes[-1].set_xlabel("step")
    axes[-1].set_ylabel("relative L2 error")
    axes[-1].grid(True, which="both", alpha=0.3)
    axes[-1].legend(fontsize=8)
    return save(fig, path)
