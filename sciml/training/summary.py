"""A readable summary of a run directory (for ``sciml info RUN``)."""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import CheckpointError
from ..io import read_text


def run_summary(run_dir: str | Path) -> str:
    """Model, data signature, training progress and the latest evaluation of a run, as text."""
    from .checkpoint import load_run

    run_dir = Path(run_dir)
    model, info = load_run(run_dir)
    n_params = sum(p.numel() for p in model.parameters())
    sig = info.signature
    cfg = ", ".join(f"{k}={v}" for k, v in info.model_config.items())
    lines = [
        f"{run_dir}",
        f"  model     {info.model_name} ({n_params:,} parameters, {info.input_kind} operator)",
        f"  config    {cfg}",
        f"  data      pde={sig.pde}  {' '.join(sig.inputs)} -> {' '.join(sig.outputs)}  on "
        f"{'x'.join(str(s) for s in sig.shape)} ({sig.grid})",
        f"  trained   {info.epoch} epochs (sciml {info.sciml_version})",
    ]
    metrics = run_dir / "metrics.jsonl"
    if metrics.exists():
        rows = [json.loads(x) for x in read_text(metrics).splitlines() if x.strip()]
        if rows:
            last = rows[-1]
            losses = "  ".join(f"{k} {last[k]:.4g}" for k in ("train_loss", "val_loss", "test_loss") if last.get(k) is not None)
            lines.append(f"  last      epoch {last['epoch']}: {losses}")
    ev = run_dir / "eval.json"
    if ev.exists():
        try:
            result = json.loads(read_text(ev))
        except ValueError:
            raise CheckpointError(f"{ev} is not valid JSON; delete it and run `sciml evaluate` again") from None
        for r in result.get("datasets", []):
            lines.append(f"  evaluated {Path(r['path']).name} ({r['resolution']}): rel. L2 mean {r['rel_l2_mean']:.4g}, "
                         f"max {r['rel_l2_max']:.4g}")
    return "\n".join(lines)
