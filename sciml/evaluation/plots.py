"""Figures of dataset files (the figure helpers themselves live in :mod:`sciml.plots`)."""

from __future__ import annotations

from pathlib import Path

from ..plots import as_field, as_numpy, figure, save, show_field
from ..training.data import load_grid_data


def plot_dataset(path: str | Path, out: str | Path, n: int = 3) -> Path:
    """Input and output fields of the first ``n`` samples of a dataset file."""
    data = load_grid_data(path, n=max(1, int(n)), clip=True)
    n = len(data)
    sig = data.signature
    names = [f"{v}" for v in sig.inputs[:1]] + [f"{v}" for v in sig.outputs[:1]]
    fig = figure(6, 2.8 * n)
    axes = fig.subplots(n, 2, squeeze=False)
    for i in range(n):
        show_field(fig, axes[i, 0], as_field(as_numpy(data.x[i])), f"{names[0]} (sample {i})")
        show_field(fig, axes[i, 1], as_field(as_numpy(data.y[i])), f"{names[1]} (sample {i})")
    fig.suptitle(f"{sig.pde}: {Path(path).name}", fontsize=10)
    return save(fig, out)
