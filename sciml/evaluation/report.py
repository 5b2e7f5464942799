"""A Markdown report of a run: metrics table, loss curve, predicted samples."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from ..io import atomic_write_text
from ..plots import plot_loss, plot_samples


def _fmt(v: Any, digits: int = 4) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, float):
        if v == 0 or 1e-3 <= abs(v) < 1e5:
            return f"{v:.{digits}f}" if abs(v) < 1 else f"{v:.4g}"
        return f"{v:.3e}"
    return str(v)


def write_report(
    run_dir: str | Path,
    eval_result: dict,
    out_dir: str | Path,
    dataset_paths: Sequence[str | Path] | None = None,
    n_samples: int = 3,
    title: str | None = None,
) -> Path:
    """Write ``out_dir/report.md`` with the metrics of ``eval_result`` (from :func:`evaluate`),
    the loss curve and, per dataset, a figure of ``n_samples`` predictions (input, truth,
    prediction, error). ``title`` defaults to the run directory's name. Returns the path of
    ``report.md``.
    """
    import torch

    from ..training.checkpoint import load_run
    from ..training.data import load_grid_data
    from ..training.trainer import predict
    from ..training.checkpoint import normaliser_for

    run_dir, out_dir = Path(run_dir), Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model, info = load_run(run_dir)
    entries = list(eval_result.get("datasets", []))
    paths = [Path(p) for p in (dataset_paths if dataset_paths is not None else [e["path"] for e in entries])]

    lines = [f"# Report: {title or run_dir.name}", ""]
    lines += [
        f"- model: `{info.model_name}` ({sum(p.numel() for p in model.parameters()):,} parameters), "
        f"trained {info.epoch} epochs on {info.signature.describe()} at {'x'.join(map(str, info.signature.shape))}",
        "- training options: " + ", ".join(
            f"{k}={info.config[k]}" for k in ("batch_size", "lr", "weight_decay", "optimizer", "scheduler", "loss", "normalise", "n_train", "seed")
            if k in info.config),
        f"- evaluated on device `{eval_result.get('device', 'cpu')}`",
        "",
        "## Accuracy and speed",
        "",
        "| dataset | grid | n | rel. L2 mean | std | max | model s/sample | solver s/sample | speed-up |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for e in entries:
        if "error" in e:
            lines.append(f"| {Path(e['path']).name} | - | - | not evaluated (see notes) | | | | | |")
            continue
        speed = f"{e['speedup']:.1f}x" if e.get("speedup") is not None else "n/a"
        lines.append(
            f"| {Path(e['path']).name} | {e['resolution']} | {e['n']} | {e['rel_l2_mean']:.4f} | {e['rel_l2_std']:.4f} | "
            f"{e['rel_l2_max']:.4f} | {_fmt(e.get('model_s_per_sample'))} | {_fmt(e.get('solver_s_per_sample'))} | {speed} |"
        )
    notes = [f"{Path(e['path']).name}: {note}" for e in entries for note in e.get("notes", [])]
    notes += [f"{Path(e['path']).name}: not evaluated: {e['error']}" for e in entries if "error" in e]
    if notes:
        lines += ["", "Notes:", ""] + [f"- {n}" for n in notes]
    lines += ["", "Relative L2 = per-sample ||prediction - truth|| / ||truth||; std is over samples. "
              "Speed-up = classical solver time / model inference time per sample.", ""]

    if (run_dir / "metrics.jsonl").is_file():
        plot_loss(run_dir, out_dir / "loss.png")
        lines += ["## Loss curve", "", "![loss curve](loss.png)", ""]

    used: set[str] = set()
    for path in paths:
        data = load_grid_data(path, n=max(1, n_samples), clip=True)
        normaliser, _ = normaliser_for(info, data)
        with torch.no_grad():
            pred = predict(model, normaliser, data.x)
        name = f"samples_{path.stem}.png"
        k = 1
        while name in used:
            k += 1
            name = f"samples_{path.stem}_{k}.png"
        used.add(name)
        sig = data.signature
        plot_samples(data.x, data.y, pred, out_dir / name, n=n_samples,
                     names=(sig.inputs[0], f"{sig.outputs[0]} (truth)", f"{sig.outputs[0]} (prediction)", "|error|"))
        lines += [f"## Samples of {path.name}", "", f"![samples of {path.name}]({name})", ""]

    report = out_dir / "report.md"
    atomic_write_text(report, "\n".join(lines))
    return report
