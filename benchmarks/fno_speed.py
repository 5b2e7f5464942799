"""Speed of one FNO training step: sciml's FNO against neuraloperator's, same architecture.

Setting (the FNO Darcy protocol, Li et al. 2021): 2D, batch 20, 85x85, modes 12 (kept frequencies
-12..11 along x, 0..11 along y), width 32, 4 Fourier layers, projection 128, grid channels, GELU.
One step = forward + backward of an MSE loss + one Adam step. Both models are built and timed in
this process, alternating, after a warm-up; the reported ratio is ours / theirs on the median
step time (target <= 1.0, shared/TARGETS.md). Threads are left as torch sets them.

neuraloperator is a benchmark-only dependency (extra ``[bench]``)::

    pip install neuraloperator   # or: pip install --no-deps neuraloperator tensorly tensorly-torch opt-einsum
    python benchmarks/fno_speed.py --quick [--device cpu|cuda] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import torch

from sciml import operators

BATCH, SIZE, MODES, WIDTH, LAYERS, PROJECTION = 20, 85, 12, 32, 4, 128


def n_real_parameters(model: torch.nn.Module) -> int:
    """Real scalars in the parameters (a complex entry counts 2, as in the FNO paper's code)."""
    return sum(p.numel() * (2 if p.is_complex() else 1) for p in model.parameters())


def build_theirs() -> torch.nn.Module:
    try:
        import torch.nn.functional as F
        from neuralop.models import FNO
    except ImportError as exc:
        sys.exit(f"neuraloperator is not importable ({exc}); pip install neuraloperator")
    # n_modes counts all kept frequencies per axis; the last axis keeps n // 2 + 1 of them, so
    # (2 * 12, 2 * 12 - 2) keeps -12..11 along x and 0..11 along y, exactly the paper's blocks.
    return FNO(
        n_modes=(2 * MODES, 2 * MODES - 2), in_channels=1, out_channels=1, hidden_channels=WIDTH,
        n_layers=LAYERS, lifting_channel_ratio=0, projection_channel_ratio=PROJECTION / WIDTH,
        positional_embedding="grid", non_linearity=F.gelu, use_channel_mlp=False, fno_skip="linear",
        domain_padding=None,
    )


def build_ours() -> torch.nn.Module:
    return operators.create("fno", modes=(MODES, MODES), width=WIDTH, n_layers=LAYERS, projection=PROJECTION)


def make_step(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor):
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        loss = torch.nn.functional.mse_loss(model(x), y)
        loss.backward()
        opt.step()

    return step


def timed(step, device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    t0 = time.perf_counter()
    step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer repeats (2 warm-up, 5 timed per model)")
    ap.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    ap.add_argument("--json", default=None, help="also write the result to this JSON file")
    args = ap.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        sys.exit("--device cuda asked for but no CUDA GPU is available; use --device cpu")
    warmup, repeats = (2, 5) if args.quick else (3, 20)

    torch.manual_seed(0)
    theirs, ours = build_theirs().to(device), build_ours().to(device)
    n_ours, n_theirs = n_real_parameters(ours), n_real_parameters(theirs)
    print(f"parameters (real scalars): sciml {n_ours:,}  neuraloperator {n_theirs:,}")
    if n_ours != n_theirs:
        sys.exit("the two models differ in size: the comparison would not be fair")

    x = torch.randn(BATCH, 1, SIZE, SIZE, device=device)
    y = torch.randn(BATCH, 1, SIZE, SIZE, device=device)
    if ours(x).shape != theirs(x).shape:
        sys.exit("the two models give different output shapes")
    steps = {"sciml": make_step(ours, x, y), "neuraloperator": make_step(theirs, x, y)}
    for step in steps.values():
        for _ in range(warmup):
            step()
    times: dict[str, list[float]] = {k: [] for k in steps}
    for _ in range(repeats):  # alternate so that machine noise hits both alike
        for name, step in steps.items():
            times[name].append(timed(step, device))

    med = {k: statistics.median(v) for k, v in times.items()}
    ratio = med["sciml"] / med["neuraloperator"]
    for k, v in times.items():
        print(f"{k:15s} step: median {med[k] * 1e3:8.1f} ms  min {min(v) * 1e3:8.1f} ms  ({len(v)} steps)")
    print(f"ratio ours/theirs (median step): {ratio:.3f}  (target <= 1.0; threads: {torch.get_num_threads()})")
    result = {
        "device": str(device), "threads": torch.get_num_threads(), "batch": BATCH, "size": SIZE,
        "modes": MODES, "width": WIDTH, "n_layers": LAYERS, "params_sciml": n_ours, "params_neuraloperator": n_theirs,
        "median_s": med, "min_s": {k: min(v) for k, v in times.items()}, "ratio": ratio,
    }
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(result, fh, indent=2)


if __name__ == "__main__":
    main()
