"""A readable summary of a run directory (for ``sciml info RUN``)."""

from __future__ import annotations

import json
from pathlib import Path

from .. import runs
from ..errors import CheckpointError
from ..io import read_text


def run_summary(run_dir: str | Path) -> str:
    """What a run holds (any kind), its training progress and its latest evaluation, as text."""
    run_dir = Path(run_dir)
    run = runs.load(run_dir)
    n_params = sum(p.numel() for p in run.model.parameters())
    lines = [f"{run_dir}"]
    if run.kind in ("operator", "coral"):
        info = run.info
        sig = info.signature
        lines += [
            f"  model     {info.model_name} ({n_params:,} parameters, {info.input_kind} operator)",
            f"  config    {', '.join(f'{k}={v}' for k, v in info.model_config.items())}",
            f"  data      pde={sig.pde}  {' '.join(sig.inputs)} -> {' '.join(sig.outputs)}  on "
            f"{'x'.join(str(s) for s in sig.shape)} ({sig.grid})",
            f"  trained   {info.epoch} epochs (sciml {info.sciml_version})",
        ]
    else:
        lines += [f"  model     {run.kind} ({n_params:,} parameters)",
                  f"  config    {', '.join(f'{k}={v}' for k, v in run.meta['config'].items())}",
                  f"  trained   with sciml {run.meta.get('sciml_version', '?')}"]
    rows = runs.read_metrics(run_dir)
    if rows:
        last = rows[-1]
        axis = next((k for k in ("epoch", "step", "update") if k in last), "row")
        losses = "  ".join(f"{k} {last[k]:.4g}" for k in ("train_loss", "val_loss", "test_loss", "loss")
                           if last.get(k) is not None)
        lines.append(f"  last      {axis} {last.get(axis, len(rows))}: {losses}")
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
