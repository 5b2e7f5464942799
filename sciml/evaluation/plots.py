"""Figures of dataset files (the figure helpers themselves live in :mod:`sciml.plots`)."""

from __future__ import annotations

from pathlib import Path

from ..errors import ConfigError
from ..plots import as_field, as_numpy, figure, plane, save, show_field
from ..training.data import load_grid_data


def plot_dataset(path: str | Path, out: str | Path, n: int = 3, cut: str | None = None) -> Path:
    """Input and output fields of the first ``n`` samples of a dataset file; of a 3-D dataset the
    plane ``cut`` (``AXIS=VALUE``, see :func:`sciml.plots.plane`; default the middle of the last
    axis), named in the figure's title."""
    data = load_grid_data(path, n=max(1, int(n)), clip=True)
    n = len(data)
    sig = data.signature
    names = [f"{v}" for v in sig.inputs[:1]] + [f"{v}" for v in sig.outputs[:1]]
    if len(sig.dims) == 3:
        axis, index, where = plane(sig.dims, data.coords, cut)
        across, up = (d for d in sig.dims if d != sig.dims[axis])
        where = f", plane {where}; {across} across, {up} up"
    elif cut is not None:
        raise ConfigError(f"--slice picks a plane of a 3-D dataset; {Path(path).name} is {len(sig.dims)}-D "
                          f"({', '.join(sig.dims)}): drop --slice")
    else:
        axis, index, where = 0, 0, ""
    fig = figure(6, 2.8 * n)
    axes = fig.subplots(n, 2, squeeze=False)
    for i in range(n):
        show_field(fig, axes[i, 0], as_field(as_numpy(data.x[i]), (axis, index)), f"{names[0]} (sample {i})")
        show_field(fig, axes[i, 1], as_field(as_numpy(data.y[i]), (axis, index)), f"{names[1]} (sample {i})")
    fig.suptitle(f"{sig.pde}: {Path(path).name}{where}", fontsize=10)
    return save(fig, out)
