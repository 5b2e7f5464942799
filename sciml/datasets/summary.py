"""What is in a dataset file: sizes, value ranges, provenance and solve quality (``sciml info``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from .format import attrs_json, open_dataset, reading

_BLOCK_VALUES = 4_000_000  # values read at a time, so memory stays flat for large files
STORED_RESIDUAL_SAMPLES = 16  # samples whose system `sciml info` re-forms from the stored arrays,
STORED_RESIDUAL_UNKNOWNS = 2**20  # at most about this many unknowns in all (darcy 256^2: 16 samples, 2.6 s)


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


def _unknowns(u: np.ndarray, shape: tuple[int, ...]) -> np.ndarray | None:
    """The solution vector of a stored output field: the field itself (unknowns on every stored
    node) or its interior (a zero Dirichlet boundary stored around the unknowns, as darcy's)."""
    if u.shape == tuple(shape):
        return u.reshape(-1)
    if u.ndim == len(shape) and all(s == k + 2 for s, k in zip(u.shape, shape)):
        return u[tuple(slice(1, -1) for _ in shape)].reshape(-1)
    return None


def _stored_residuals(ds) -> dict[str, Any] | None:
    """``||b - A u|| / ||b||`` of the first :data:`STORED_RESIDUAL_SAMPLES` samples (fewer where they
    would hold more than :data:`STORED_RESIDUAL_UNKNOWNS` unknowns, at least two) with ``A, b``
    assembled from the stored inputs and ``u`` the stored output, all as stored (float32 files:
    float32 values, then the float64 product). None where the file holds no linear system of its
    generator on the stored grid (time-dependent PDEs, subsampled or imported files)."""
    from ..errors import SciMLError
    from .generators import LinearGenerator, _from_file

    try:
        gen = _from_file(ds)
        if not isinstance(gen, LinearGenerator) or gen.config.subsample != 1 or len(gen.outputs) != 1:
            return None
        out = ds[gen.outputs[0]]
        per_sample = int(np.prod(gen.unknown_shape()))
        count = min(int(ds.sizes["sample"]), STORED_RESIDUAL_SAMPLES, max(2, STORED_RESIDUAL_UNKNOWNS // per_sample))
        values = []
        for i in range(count):
            inputs = {v: np.asarray(ds[v].isel(sample=i).values, dtype=np.float64) for v in gen.inputs}
            x = _unknowns(np.asarray(out.isel(sample=i).values, dtype=np.float64), gen.unknown_shape())
            if x is None:
                return None
            A, b = gen.assemble(inputs)
            values.append(float(np.linalg.norm(b - A @ x) / np.linalg.norm(b)))
    except (SciMLError, KeyError, TypeError, ValueError):   # an imported file: params or arrays not the generator's
        return None
    return {"max": max(values), "median": float(np.median(values)), "samples": count,
            "dtype": str(out.dtype)} if values else None


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
    per-sample achieved relative residuals, i.e. of the float64 solve), ``stored_residual`` (``max``,
    ``median``, ``samples``, ``dtype``: the same residual re-formed from the arrays as stored, over
    the first :data:`STORED_RESIDUAL_SAMPLES` samples; None where the file holds no linear system
    on its stored grid), ``contrast`` (``min``, ``q25``, ``median``,
    ``q75``, ``max`` of the per-sample coefficient contrast where the file stores one, as
    ConDiff's does; else None), ``sciml_version`` and ``created``.
    """
    ds = open_dataset(path, check_finite=strict)
    with reading(path):
        return _printable(_summary(ds, path))


def _printable(value: Any) -> Any:
    """``value`` with every string made encodable: a damaged attribute decodes (surrogateescape) to
    lone surrogates, which are shown as ``\\xNN`` escapes of the bytes stored."""
    if isinstance(value, str):
        try:
            return value.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
        except UnicodeEncodeError:  # a surrogate that stands for no byte
            return value.encode("utf-8", "backslashreplace").decode("utf-8")
    if isinstance(value, dict):
        return {_printable(k): _printable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_printable(v) for v in value]
    return value


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
            "stored_residual": _stored_residuals(ds),
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
    stored = info.get("stored_residual")
    if info.get("residual"):
        r = info["residual"]
        own = solver.get("residual") if isinstance(solver, dict) else None   # e.g. a time integrator's estimate
        meaning = own or "||b - A u|| / ||b||"
        label = "residual" if own else "solver residual (float64)"
        lines.append(f"  {label:<9} max {r['max']:.3g}   median {r['median']:.3g}  ({meaning} per sample)")
    if stored:
        n = info["n"]
        which = "every sample" if stored["samples"] == n else f"first {stored['samples']} of {n} samples"
        lines.append(f"  residual of stored arrays ({stored['dtype']})  max {stored['max']:.3g}   median "
                     f"{stored['median']:.3g}  (A, b from the stored inputs, u as stored; {which})")
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
