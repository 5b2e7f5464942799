"""What is in a dataset file: sizes, value ranges, provenance and solve quality (``sciml info``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from .format import attrs_json, open_dataset, reading

_BLOCK_VALUES = 4_000_000  # values read at a time, so memory stays flat for large files


def _stats(var) -> dict[str, Any]:
    """min / max / mean over the finite values of a (sample, ...) variable, read a block of
    samples at a time, with the count of NaN/Inf values and the first samples that hold them."""
    n = var.sizes["sample"]
    per_sample = max(1, int(np.prod([s for d, s in var.sizes.items() if d != "sample"])))
    step = max(1, _BLOCK_VALUES // per_sample)
    lo, hi, total, count, bad, bad_samples = np.inf, -np.inf, 0.0, 0, 0, []
    for start in range(0, n, step):
        block = np.asarray(var.isel(sample=slice(start, start + step)).values, dtype=np.float64)
        finite = np.isfinite(block)
        if not finite.all():
            bad += int(block.size - finite.sum())
            per = (~finite).reshape(finite.shape[0], -1).any(axis=1)
            bad_samples += [start + int(i) for i in np.flatnonzero(per)][: max(0, 10 - len(bad_samples))]
            block = block[finite]
        if block.size:
            lo, hi = min(lo, float(block.min())), max(hi, float(block.max()))
            total += float(block.sum())
            count += block.size
    return {"min": lo if count else float("nan"), "max": hi if count else float("nan"),
            "mean": total / count if count else float("nan"), "nonfinite": bad, "nonfinite_samples": bad_samples}


def _distribution(values: np.ndarray) -> dict[str, float] | None:
    """min, quartiles and max of the finite entries of a per-sample scalar (None if none)."""
    values = np.asarray(values, dtype=np.float64)
    values = values[np.isfinite(values)]
    if not values.size:
        return None
    q = np.quantile(values, [0.0, 0.25, 0.5, 0.75, 1.0])
    return dict(zip(("min", "q25", "median", "q75", "max"), (float(v) for v in q)))


def _seed(value: Any) -> Any:
    # imported files may record a seed that is not an integer (or none at all)
    try:
        return int(value)
    except (TypeError, ValueError):
        return str(value)


def summary(path: str | Path, strict: bool = False) -> dict[str, Any]:
    """Describe a dataset file; NaN/Inf values are counted and flagged (``strict``: refused
    with the reader's DataError instead).

    Returns
    -------
    dict with ``path``, ``pde``, ``n`` (samples), ``inputs``, ``outputs``, ``variables``
    (per variable: ``dims``, ``shape``, ``dtype``, ``min``, ``max``, ``mean`` of the finite values,
    ``nonfinite`` (count of NaN/Inf) and ``nonfinite_samples`` (the first ten)), ``coords``
    (per axis: ``size``, ``min``, ``max``), ``params``, ``seed``, ``grid``, ``solver``
    (name, tol, method, max_residual as stored), ``residual`` (``max`` and ``median`` of the
    per-sample achieved relative residuals), ``contrast`` (``min``, ``q25``, ``median``,
    ``q75``, ``max`` of the per-sample coefficient contrast where the file stores one, as
    ConDiff's does; else None), ``sciml_version`` and ``created``.
    """
    ds = open_dataset(path, check_finite=strict)
    with reading(path):
        return _summary(ds, path)


def _summary(ds, path) -> dict[str, Any]:
    try:
        names = str(ds.attrs["inputs"]).split() + str(ds.attrs["outputs"]).split()
        variables = {}
        for v in names:
            var = ds[v]
            variables[v] = {"dims": list(var.dims), "shape": list(var.shape), "dtype": str(var.dtype), **_stats(var)}
        coords = {
            c: {"size": int(ds[c].size), "min": float(ds[c].min()), "max": float(ds[c].max())}
            for c in ds.coords if ds[c].ndim == 1
        }
        residual = None
        if "residual" in ds:
            r = np.asarray(ds["residual"].values, dtype=np.float64)
            r = r[np.isfinite(r)]
            if r.size:
                residual = {"max": float(r.max()), "median": float(np.median(r))}
        contrast = _distribution(ds["contrast"].values) if "contrast" in ds else None
        return {
            "path": str(path),
            "pde": str(ds.attrs["pde"]),
            "n": int(ds.sizes["sample"]),
            "inputs": str(ds.attrs["inputs"]).split(),
            "outputs": str(ds.attrs["outputs"]).split(),
            "variables": variables,
            "coords": coords,
            "params": attrs_json(ds, "params"),
            "seed": _seed(ds.attrs["seed"]),
            "grid": str(ds.attrs["grid"]),
            "solver": attrs_json(ds, "solver"),
            "residual": residual,
            "contrast": contrast,
            "sciml_version": str(ds.attrs.get("sciml_version", "")),
            "created": str(ds.attrs.get("created", "")),
        }
    finally:
        ds.close()


def _num(x: Any) -> str:
    return f"{x:.4g}" if isinstance(x, float) else str(x)


def format_summary(info: dict[str, Any]) -> str:
    """Plain multi-line text of a :func:`summary` dict."""
    lines = [
        f"{info['path']}",
        f"  pde       {info['pde']}   samples {info['n']}   seed {info['seed']}",
        f"  grid      {info['grid']}",
    ]
    if info.get("coords"):
        axes = ", ".join(f"{c}: {d['size']} in [{_num(d['min'])}, {_num(d['max'])}]" for c, d in info["coords"].items())
        lines.append(f"  coords    {axes}")
    lines.append("  variables")
    for name, v in info["variables"].items():
        role = "input " if name in info["inputs"] else "output"
        shape, dims = tuple(v["shape"]), ", ".join(v["dims"])
        lines.append(
            f"    {name:<4} {role}  {shape} on ({dims}) {v['dtype']}"
            f"  min {_num(v['min'])}  max {_num(v['max'])}  mean {_num(v['mean'])}"
        )
        if v.get("nonfinite"):
            where = ", ".join(map(str, v["nonfinite_samples"]))
            lines.append(f"         WARNING: {v['nonfinite']} NaN/Inf value(s) in {name}, in samples {where}"
                         f"{' ...' if len(v['nonfinite_samples']) >= 10 else ''} (training and evaluation refuse this file)")
    solver = info.get("solver") or {}
    if isinstance(solver, dict) and solver:
        parts = [f"{k} {_num(solver[k])}" for k in ("name", "method", "tol") if solver.get(k) is not None]
        lines.append(f"  solver    {'   '.join(parts)}")
    if info.get("residual"):
        r = info["residual"]
        meaning = solver.get("residual", "||b - A u|| / ||b||") if isinstance(solver, dict) else "||b - A u|| / ||b||"
        lines.append(f"  residual  max {r['max']:.3g}   median {r['median']:.3g}  ({meaning} per sample)")
    if info.get("contrast"):
        c = info["contrast"]
        lines.append("  contrast  " + "   ".join(f"{k} {_num(c[k])}" for k in ("min", "q25", "median", "q75", "max"))
                     + "  (k_max / k_min per sample)")
    params = info.get("params")
    if isinstance(params, dict):
        lines.append("  params    " + ", ".join(f"{k}={_num(v)}" for k, v in params.items()))
    if info.get("created"):
        lines.append(f"  written   {info['created']} by sciml {info.get('sciml_version', '')}")
    return "\n".join(lines)
