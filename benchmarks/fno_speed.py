"""Speed of one FNO training step: sciml's FNO against neuraloperator's, same architecture.

Setting (the FNO Darcy protocol, Li et al. 2021): 2D, batch 20, 85x85, modes 12 (kept frequencies
-12..11 along x, 0..11 along y), width 32, 4 Fourier layers, projection 128, grid channels, GELU.
One step = forward + backward of an MSE loss + one Adam step. Both models are built and timed in
this process, alternating, after a warm-up; the reported ratio is ours / theirs on the median
step time (target <= 1.0, shared/TARGETS.md), with the ratio of the fastest steps beside it (less
sensitive to a busy machine). Threads are left as torch sets them.

neuraloperator is a benchmark-only dependency (extra ``[bench]``)::

    pip install neuraloperator   # or: pip install --no-deps neuraloperator tensorly tensorly-torch opt-einsum
    python benchmarks/fno_speed.py --quick [--device cpu|cuda] [--json out.json] [--variants fp32,bf16,compile]

``--variants`` also times sciml's step with bf16 autocast and with ``torch.compile`` (the
``--precision bf16`` and ``--compile`` of ``sciml train``), each against neuraloperator's fp32 step
(issue 22's goal on a GPU: <= 0.7x).
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
VARIANTS = ("fp32", "bf16", "compile", "compile-bf16")


def n_real_parameters(model: torch.nn.Module) -> int:
    """Real scalars in the parameters (a complex entry counts 2, as in the FNO paper's code)."""
    return sum(p.numel() * (2 if p.is_complex() else 1) for p in model.parameters())


def build_theirs(modes: int = MODES, width: int = WIDTH, n_layers: int = LAYERS, in_channels: int = 1,
                 grid: bool = True, activation: str = "gelu") -> torch.nn.Module:
    try:
        import torch.nn.functional as F
        from neuralop.models import FNO
    except ImportError as exc:
        sys.exit(f"neuraloperator is not importable ({exc}); pip install neuraloperator")
    # n_modes counts all kept frequencies per axis; the last axis keeps n // 2 + 1 of them, so
    # (2m, 2m - 2) keeps -m..m-1 along x and 0..m-1 along y, exactly the paper's two blocks.
    return FNO(
        n_modes=(2 * modes, 2 * modes - 2), in_channels=in_channels, out_channels=1, hidden_channels=width,
        n_layers=n_layers, lifting_channel_ratio=0, projection_channel_ratio=PROJECTION / width,
        positional_embedding="grid" if grid else None, non_linearity=getattr(F, activation), use_channel_mlp=False,
        fno_skip="linear", domain_padding=None,
    )


def build_ours(
    modes: int = MODES, width: int = WIDTH, n_layers: int = LAYERS, activation: str = "gelu"
) -> torch.nn.Module:
    return operators.create(
        "fno", modes=(modes, modes), width=width, n_layers=n_layers, projection=PROJECTION, activation=activation
    )


def copy_weights(ours: torch.nn.Module, theirs: torch.nn.Module) -> None:
    """Give neuraloperator's FNO our weights (its spectral weights are (C_in, C_out, 2m, m) with
    the first mode axis fftshifted, ours (m, 2m, C_in, C_out, 2) with it in FFT order; its bias sits
    on the spectral conv, ours on the pointwise map, which is the same sum)."""
    with torch.no_grad():
        blocks = theirs.fno_blocks
        for conv, skip, spec, pw in zip(blocks.convs, blocks.fno_skips, ours.spectral, ours.pointwise):
            w = torch.view_as_complex(spec.weight)  # (m, 2m, C_in, C_out)
            m = w.shape[0]
            conv.weight.tensor.copy_(torch.roll(w, m, dims=1).permute(2, 3, 1, 0))
            conv.bias.copy_(pw.bias.reshape(conv.bias.shape))
            skip.conv.weight.copy_(pw.weight[..., None])
        pairs = [(theirs.lifting.fcs[0], ours.lift), (theirs.projection.fcs[0], ours.project1),
                 (theirs.projection.fcs[1], ours.project2)]
        for conv, lin in pairs:
            conv.weight.copy_(lin.weight[..., None])
            conv.bias.copy_(lin.bias)


def check_same_function() -> float:
    """With the same weights both FNOs compute the same map; returns the relative difference.

    A small model; our grid channels are fed to both as inputs (neuraloperator's grid is
    ``linspace(0, 1, s + 1)[:-1]``). ReLU, because neuraloperator 2.0 with ``use_channel_mlp=False``
    applies its activation twice after each hidden Fourier layer (``act(act(v))``), which is the
    same map only for an idempotent activation; with GELU it costs it one extra activation per
    layer in the timed runs (a few per cent of its step).
    """
    torch.manual_seed(1)
    ours = build_ours(modes=4, width=8, n_layers=3, activation="relu")
    theirs = build_theirs(modes=4, width=8, n_layers=3, in_channels=3, grid=False, activation="relu")
    copy_weights(ours, theirs)
    x = torch.randn(2, 1, 20, 18)
    grid = torch.stack(torch.meshgrid(torch.linspace(0, 1, 20), torch.linspace(0, 1, 18), indexing="ij"))
    with torch.no_grad():
        a, b = ours(x), theirs(torch.cat([x, grid.expand(2, -1, -1, -1)], 1))
    return float((a - b).norm() / b.norm())


def make_step(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, variant: str = "fp32"):
    """One training step of ``model``; ``variant``: ``fp32``, ``bf16`` (autocast on the forward
    pass, the loss in float32, as ``sciml train --precision bf16``), ``compile`` (``torch.compile``
    of the model, as ``sciml train --compile``) or ``compile-bf16`` (both)."""
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    forward = torch.compile(model) if variant.startswith("compile") else model
    dtype = torch.bfloat16 if variant.endswith("bf16") else None

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        if dtype is None:
            out = forward(x)
        else:
            with torch.autocast(x.device.type, dtype=dtype):
                out = forward(x)
        loss = torch.nn.functional.mse_loss(out.float(), y)
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
    ap.add_argument("--variants", default="fp32",
                    help="sciml's training steps to time against neuraloperator's fp32 step: fp32, bf16, compile, "
                         "compile-bf16 (comma-separated; the ratio is reported for each)")
    args = ap.parse_args()
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    if set(variants) - set(VARIANTS):
        ap.error(f"unknown variant {sorted(set(variants) - set(VARIANTS))}; choose from {list(VARIANTS)}")
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        sys.exit("--device cuda asked for but no CUDA GPU is available; use --device cpu")
    warmup, repeats = (2, 5) if args.quick else (3, 20)

    diff = check_same_function()
    print(f"same weights, same function: relative difference {diff:.1e}")
    if diff > 1e-4:  # float32 round-off of two transform implementations is ~1e-6
        sys.exit("the two models compute different functions: the comparison would not be fair")
    torch.manual_seed(0)
    theirs, ours = build_theirs().to(device), build_ours().to(device)
    others = {v: build_ours().to(device) for v in variants if v != "fp32"}
    n_ours, n_theirs = n_real_parameters(ours), n_real_parameters(theirs)
    print(f"parameters (real scalars): sciml {n_ours:,}  neuraloperator {n_theirs:,}")
    if n_ours != n_theirs:
        sys.exit("the two models differ in size: the comparison would not be fair")

    x = torch.randn(BATCH, 1, SIZE, SIZE, device=device)
    y = torch.randn(BATCH, 1, SIZE, SIZE, device=device)
    if ours(x).shape != theirs(x).shape:
        sys.exit("the two models give different output shapes")
    steps = {"sciml": make_step(ours, x, y), "neuraloperator": make_step(theirs, x, y)}
    steps.update({f"sciml {v}": make_step(m, x, y, v) for v, m in others.items()})
    compile_s, failed = {}, {}
    for name, step in list(steps.items()):
        t0 = time.perf_counter()
        try:
            for _ in range(warmup):
                step()
        except Exception as exc:  # noqa: BLE001  (a variant this torch cannot run is reported, the rest timed)
            if not name.startswith("sciml "):
                raise
            failed[name] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"
            print(f"{name}: cannot run here ({failed[name]}); left out", flush=True)
            del steps[name]
            continue
        if "compile" in name:  # its warm-up holds the compilation
            compile_s[name] = time.perf_counter() - t0
    times: dict[str, list[float]] = {k: [] for k in steps}
    for _ in range(repeats):  # alternate so that machine noise hits both alike
        for name, step in steps.items():
            times[name].append(timed(step, device))

    med = {k: statistics.median(v) for k, v in times.items()}
    best = {k: min(v) for k, v in times.items()}
    ratio, ratio_min = med["sciml"] / med["neuraloperator"], best["sciml"] / best["neuraloperator"]
    for k, v in times.items():
        print(f"{k:15s} step: median {med[k] * 1e3:8.1f} ms  min {best[k] * 1e3:8.1f} ms  ({len(v)} steps)")
    print(f"ratio ours/theirs: {ratio:.3f} on the median step, {ratio_min:.3f} on the fastest "
          f"(target <= 1.0; threads: {torch.get_num_threads()})")
    ratios = {name: med[name] / med["neuraloperator"] for name in steps if name.startswith("sciml ")}
    for name, r in ratios.items():
        extra = f"; compiling took {compile_s[name]:.0f} s" if name in compile_s else ""
        print(f"ratio {name} / neuraloperator fp32: {r:.3f} on the median step{extra}")
    result = {
        "device": str(device), "threads": torch.get_num_threads(), "batch": BATCH, "size": SIZE,
        "modes": MODES, "width": WIDTH, "n_layers": LAYERS, "params_sciml": n_ours, "params_neuraloperator": n_theirs,
        "same_function_rel_diff": diff, "median_s": med, "min_s": best, "ratio": ratio, "ratio_min": ratio_min,
        "variant_ratios": ratios, "compile_s": compile_s, "variants_failed": failed,
    }
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(result, fh, indent=2)


if __name__ == "__main__":
    main()
