"""Small helpers shared by the command modules (parsing KEY=VALUE options, printing tables)."""

from __future__ import annotations

from typing import Any, Iterable, Sequence

import yaml

from ..errors import ConfigError


def parse_assignments(items: Iterable[str] | None, what: str = "--set") -> dict[str, Any]:
    """Parse ``KEY=VALUE`` strings; values are read as YAML scalars/lists (``modes=[12,12]``)."""
    out: dict[str, Any] = {}
    for item in items or []:
        if "=" not in item:
            raise ConfigError(f"{what} expects KEY=VALUE, got {item!r}")
        key, value = item.split("=", 1)
        try:
            parsed = yaml.safe_load(value)
        except yaml.YAMLError:
            raise ConfigError(f"{what} {item!r}: cannot parse the value {value!r}") from None
        if isinstance(parsed, str):  # YAML 1.1 reads 1e-3 as a string: take it as the number it is
            try:
                parsed = float(parsed) if parsed.strip().lower() not in ("nan", "inf", "-inf", "infinity") else parsed
            except ValueError:
                pass
        out[key.strip()] = parsed
    return out


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]], title: str | None = None) -> None:
    """Print a table with rich (to stdout)."""
    from rich.console import Console
    from rich.table import Table

    t = Table(title=title)
    for h in headers:
        t.add_column(str(h), justify="right" if h not in ("method", "dataset", "model", "name", "metric", "run", "cell") else "left")
    for row in rows:
        t.add_row(*[fmt(v) for v in row])
    console = Console()
    # off a terminal rich assumes 80 columns and folds numbers; tables here are read in logs too
    if not console.is_terminal:
        console = Console(width=160)
    console.print(t)


def fmt(v: Any) -> str:
    if isinstance(v, float):
        if v != v:
            return "nan"
        if v == 0 or 1e-3 <= abs(v) < 1e5:
            return f"{v:.4g}"
        return f"{v:.3e}"
    if isinstance(v, bool):
        return "yes" if v else "no"
    return str(v)


# Options shared by the commands that run independent tasks on Dask (generate, evaluate, sweep).
CLUSTER_HELP = (
    "Where tasks run: local (default: a Dask LocalCluster when --workers > 1, this process otherwise), "
    "slurm or pbs (Dask workers in batch jobs, via dask-jobqueue) or the address of a running "
    "Dask scheduler, e.g. tcp://10.0.0.1:8786."
)
WORKERS_HELP = (
    "Dask workers: local worker processes (1 runs in this process), or workers asked of SLURM/PBS "
    "(ceil(N / processes) jobs)."
)
CLUSTER_CONFIG_HELP = (
    "YAML file whose `cluster:` section (or whole mapping) gives kind, workers and job settings "
    "(queue, account, cores, processes, memory, walltime, job_extra_directives, local_directory, ...); "
    "unset ones come from dask-jobqueue's ~/.config/dask/jobqueue.yaml."
)


def cluster_section(path) -> dict | None:
    """The ``cluster:`` section of the YAML file ``path`` (the whole mapping when it has none)."""
    if path is None:
        return None
    from ..config import load_yaml

    data = load_yaml(path)
    return data["cluster"] if "cluster" in data else data
