"""Data at scale (issue 20): memory, loader throughput, mixed precision.

1. **Memory.** Peak memory (PSS, summed over the process and its loader workers, sampled every
   50 ms) of ``sciml train`` (1 epoch, a small FNO) and ``sciml evaluate`` on N and 10 N samples.
   "before": the samples cached in memory (``--cache-gb 1000``: what every run did before
   streaming); "after": streamed from the file (``--cache-gb 0``). Target: 10 N / N < 1.2 after.
   The files are synthetic (random fields in the sciml format, written here): memory depends on
   sizes, not values. Full: 2,000 vs 20,000 samples at 128^2; ``--quick``: 200 vs 2,000 at 32^2.
2. **Throughput.** Darcy 85^2 (generated here), FNO of the Darcy protocol (modes 12, width 32, 4
   layers), batch 20: samples/s the streaming loader delivers (default workers, random batches)
   against samples/s one training step consumes (forward, backward, Adam). Target: >= 2x.
   Also one epoch end to end, streamed against cached.
3. **Precision.** Step time and final test error, fp32 against bf16 autocast, for FNO and U-Net
   trained on the same Darcy data (CPU here; ``--device cuda`` on a GPU).

    python benchmarks/memory.py --quick [--device cpu|cuda] [--out DIR]

Writes ``memory.json`` and ``memory.md`` to ``--out`` (default benchmarks/results/).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import psutil
import torch

from sciml import datasets, runs
from sciml.datasets.format import DatasetWriter


def synthetic(path: Path, n: int, s: int, seed: int = 0) -> Path:
    """A Darcy-shaped dataset of ``n`` random samples at ``s^2`` (coefficient ``a`` in [3, 12], ``u``)."""
    if path.exists():
        return path
    rng = np.random.default_rng(seed)
    grid = np.linspace(0.0, 1.0, s)
    writer = DatasetWriter(path, n, {"x": grid, "y": grid}, {"a": ("x", "y"), "u": ("x", "y")},
                           {"pde": "darcy", "inputs": "a", "outputs": "u", "params": {}, "seed": seed, "grid": "nodes"})
    for i in range(n):
        a = rng.uniform(3.0, 12.0, (s, s)).astype(np.float32)
        writer.write(i, residual=0.0, a=a, u=(1.0 / a).astype(np.float32))
    return writer.finish()


def _pss(proc: psutil.Process) -> int:
    total = 0
    for p in [proc, *proc.children(recursive=True)]:
        try:
            info = p.memory_full_info()
            total += getattr(info, "pss", info.rss)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    return total


def peak_memory(cmd: list[str]) -> tuple[float, float]:
    """Run ``cmd``; return (peak PSS of its process tree in MiB, seconds)."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    t0 = time.perf_counter()
    child = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    proc, peak = psutil.Process(child.pid), [0]
    stop = threading.Event()

    def sample():
        while not stop.is_set():
            try:
                peak[0] = max(peak[0], _pss(proc))
            except psutil.NoSuchProcess:
                break
            time.sleep(0.05)

    watcher = threading.Thread(target=sample, daemon=True)
    watcher.start()
    out, err = child.communicate()
    stop.set()
    watcher.join()
    if child.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({child.returncode}):\n{out}\n{err}")
    return peak[0] / 2**20, time.perf_counter() - t0


SCIML = [sys.executable, "-m", "sciml"]
TINY = ["--set", "modes=[4,4]", "--set", "width=8", "--set", "n_layers=2", "--set", "projection=16"]


def memory(root: Path, n: int, s: int, device: str) -> list[dict]:
    rows = []
    for count in (n, 10 * n):
        data = synthetic(root / f"synthetic_{count}_{s}.h5", count, s)
        for label, cache in (("before (cached)", "1000"), ("after (streamed)", "0")):
            run = root / f"run_{count}_{cache}"
            cmd = [*SCIML, "train", "fno", "--data", str(data), "--out", str(run), "--epochs", "1", "--batch-size", "20",
                   "--cache-gb", cache, "--device", device, "--no-progress", "--option", "figures=false", *TINY]
            train_mb, train_s = peak_memory(cmd)
            eval_mb, eval_s = peak_memory([*SCIML, "evaluate", str(run), "--data", str(data), "--solver-samples", "0",
                                           "--no-progress"]) if cache == "0" else (None, None)
            rows.append({"samples": count, "size": s, "path": label, "train_peak_mib": train_mb, "train_s": train_s,
                         "evaluate_peak_mib": eval_mb, "evaluate_s": eval_s,
                         "data_mib": count * s * s * 2 * 4 / 2**20})
            print(f"  {count} samples {label}: train {train_mb:.0f} MiB ({train_s:.0f} s)"
                  + (f", evaluate {eval_mb:.0f} MiB ({eval_s:.0f} s)" if eval_mb else ""), flush=True)
    return rows


def throughput(root: Path, n: int, device: str, steps: int) -> dict:
    from sciml import operators
    from sciml.training import stream
    from sciml.training.losses import rel_l2_loss

    data = root / f"darcy85_{n}.h5"
    if not data.exists():
        datasets.generate("darcy", n=n, resolution=85, seed=0, out=data, progress=False)
    samples = stream.open_samples(data, cache_gb=0)
    batches = list(torch.randperm(len(samples), generator=torch.Generator().manual_seed(0)).split(20))
    workers = stream.default_workers()
    for _ in stream.iterate(samples, batches[:4], workers):  # warm the page cache and the workers' imports
        pass
    t0 = time.perf_counter()
    delivered = sum(x.shape[0] for x, _ in stream.iterate(samples, batches, workers))
    loader_rate = delivered / (time.perf_counter() - t0)

    dev = torch.device(device)
    model = operators.create("fno", modes=(12, 12), width=32, n_layers=4, projection=128).to(dev)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    x, y = samples.read(batches[0])
    x, y = x.to(dev), y.to(dev)
    times = []
    for i in range(steps + 2):
        if dev.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        opt.zero_grad()
        loss = rel_l2_loss(model(x), y)
        loss.backward()
        opt.step()
        if dev.type == "cuda":
            torch.cuda.synchronize()
        if i >= 2:
            times.append(time.perf_counter() - t0)
    step_rate = x.shape[0] / statistics.median(times)

    # one epoch end to end, cached against streamed (the same numbers: bit-identical weights)
    from sciml.training import train

    epoch = {}
    for label, cache in (("cached", None), ("streamed", 0)):
        with tempfile.TemporaryDirectory() as tmp:
            result = train("fno", data=data, out=Path(tmp) / "r", epochs=2, batch_size=20, cache_gb=cache,
                           device=device, progress=False, figures=False)
            rows = runs.read_metrics(Path(tmp) / "r")
            epoch[label] = rows[-1]["seconds"]  # the second epoch (the first warms up)
            epoch[label + "_loss"] = result["train_loss"]
    return {"samples": n, "size": 85, "batch": 20, "workers": workers, "loader_samples_per_s": loader_rate,
            "step_samples_per_s": step_rate, "ratio": loader_rate / step_rate, "step_ms": 1e3 * statistics.median(times),
            "epoch_s_cached": epoch["cached"], "epoch_s_streamed": epoch["streamed"],
            "epoch_ratio": epoch["streamed"] / epoch["cached"],
            "same_loss": epoch["cached_loss"] == epoch["streamed_loss"]}


def precision(root: Path, n_train: int, n_test: int, s: int, epochs: int, device: str) -> list[dict]:
    from sciml.training import train

    tr, te = root / f"darcy{s}_train_{n_train}.h5", root / f"darcy{s}_test_{n_test}.h5"
    if not tr.exists():
        datasets.generate("darcy", n=n_train, resolution=s, seed=0, out=tr, progress=False)
        datasets.generate("darcy", n=n_test, resolution=s, seed=1, out=te, progress=False)
    rows = []
    models = {"fno": {"modes": [12, 12], "width": 32}, "unet": {}}
    for model, config in models.items():
        for prec in ("fp32", "bf16"):
            with tempfile.TemporaryDirectory() as tmp:
                result = train(model, data=tr, test_data=te, out=Path(tmp) / "r", epochs=epochs, batch_size=20,
                               precision=prec, device=device, progress=False, figures=False, model_config=config,
                               scheduler="cosine")
                metrics = runs.read_metrics(Path(tmp) / "r")
            step_ms = 1e3 * statistics.median(r["seconds"] for r in metrics[1:] or metrics) / -(-n_train // 20)
            rows.append({"model": model, "precision": prec, "epochs": epochs, "test_rel_l2": result["test_loss"],
                         "step_ms": step_ms, "train_s": result["seconds"]})
            print(f"  {model} {prec}: test rel L2 {result['test_loss']:.4f}, {step_ms:.1f} ms/step", flush=True)
    return rows


def write(out: Path, result: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "memory.json").write_text(json.dumps(result, indent=1))
    lines = [f"# Data at scale ({result['machine']['device']}; {'quick' if result['quick'] else 'full'})", ""]
    lines += ["## Peak memory (PSS of the process and its loader workers, MiB)", "",
              "| samples | grid | data (MiB) | path | train peak | train s | evaluate peak | evaluate s |",
              "|---|---|---|---|---|---|---|---|"]
    for r in result["memory"]:
        ev = f"{r['evaluate_peak_mib']:.0f} | {r['evaluate_s']:.0f}" if r["evaluate_peak_mib"] else "- | -"
        lines.append(f"| {r['samples']} | {r['size']}^2 | {r['data_mib']:.0f} | {r['path']} | {r['train_peak_mib']:.0f} | "
                     f"{r['train_s']:.0f} | {ev} |")
    lines += ["", "Ratios 10N / N: " + ", ".join(f"{k} {v:.2f}" for k, v in result["memory_ratios"].items())
              + f" (target after: < 1.2)", ""]
    t = result["throughput"] or {k: float("nan") for k in ("loader_samples_per_s", "step_ms", "step_samples_per_s", "ratio",
                                                          "epoch_s_cached", "epoch_s_streamed", "epoch_ratio")}
    t.setdefault("workers", "-"), t.setdefault("samples", "-"), t.setdefault("same_loss", "-")
    lines += ["## Loader throughput (Darcy 85^2, FNO modes 12 width 32, batch 20)", "",
              f"- loader: {t['loader_samples_per_s']:.0f} samples/s with {t['workers']} worker(s) (default), random batches",
              f"- one training step: {t['step_ms']:.0f} ms = {t['step_samples_per_s']:.0f} samples/s",
              f"- **loader / step = {t['ratio']:.1f}** (target >= 2)",
              f"- one epoch ({t['samples']} samples) end to end: cached {t['epoch_s_cached']:.1f} s, streamed "
              f"{t['epoch_s_streamed']:.1f} s (x{t['epoch_ratio']:.2f}); same loss: {t['same_loss']}", ""]
    lines += ["## Precision (Darcy, the same data and seed)", "",
              "| model | precision | epochs | test rel L2 | ms / step | train s |", "|---|---|---|---|---|---|"]
    for r in result["precision"]:
        lines.append(f"| {r['model']} | {r['precision']} | {r['epochs']} | {r['test_rel_l2']:.4f} | {r['step_ms']:.1f} | "
                     f"{r['train_s']:.0f} |")
    m = result["machine"]
    lines += ["", f"Machine: {m['cpu']}, {m['cores']} cores, {m['memory_gib']:.0f} GiB; device {m['device']}; "
              f"torch {m['torch']}; Python {m['python']}"]
    (out / "memory.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="CI size: 200 vs 2,000 samples at 32^2, short trainings")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    ap.add_argument("--work", type=Path, default=None, help="folder for the data files (default: a temporary one)")
    ap.add_argument("--epochs", type=int, default=None, help="epochs of the precision trainings (default 2 quick, "
                    "20 on a CPU, 100 on a GPU)")
    ap.add_argument("--evaluate-only", action="store_true",
                    help="measure `sciml evaluate` again on the runs left in --work and update --out/memory.json")
    ap.add_argument("--skip", default="", help="comma list of parts to skip: memory,throughput,precision")
    args = ap.parse_args()
    skip = set(filter(None, args.skip.split(",")))
    work = args.work or Path(tempfile.mkdtemp(prefix="sciml-memory-"))
    work.mkdir(parents=True, exist_ok=True)
    q = args.quick
    if args.evaluate_only:
        result = json.loads((args.out / "memory.json").read_text())
        for row in result["memory"]:
            if row["evaluate_peak_mib"] is None:
                continue
            run = work / f"run_{row['samples']}_0"
            data = work / f"synthetic_{row['samples']}_{row['size']}.h5"
            row["evaluate_peak_mib"], row["evaluate_s"] = peak_memory(
                [*SCIML, "evaluate", str(run), "--data", str(data), "--solver-samples", "0", "--no-progress"])
            print(f"  {row['samples']} samples: evaluate {row['evaluate_peak_mib']:.0f} MiB", flush=True)
        rs = [r for r in result["memory"] if r["evaluate_peak_mib"]]
        result["memory_ratios"]["evaluate"] = rs[1]["evaluate_peak_mib"] / rs[0]["evaluate_peak_mib"]
        write(args.out, result)
        return
    gpu = torch.cuda.get_device_name(0) if args.device == "cuda" else "cpu"
    result = {"quick": q, "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                                      "memory_gib": psutil.virtual_memory().total / 2**30, "device": gpu,
                                      "torch": torch.__version__, "python": platform.python_version()}}
    # a skipped part keeps its previous result in --out (so parts can be re-measured one at a time)
    previous = json.loads((args.out / "memory.json").read_text()) if (args.out / "memory.json").exists() else {}
    previous = previous if previous.get("quick") == q and previous.get("machine", {}).get("device") == gpu else {}
    print("memory", flush=True)
    result["memory"] = previous.get("memory", []) if "memory" in skip else memory(
        work, 200 if q else 2000, 32 if q else 128, args.device)
    ratios = {}
    for path in ("before (cached)", "after (streamed)"):
        rs = [r for r in result["memory"] if r["path"] == path]
        if len(rs) == 2:
            ratios[f"train {path}"] = rs[1]["train_peak_mib"] / rs[0]["train_peak_mib"]
            if rs[0]["evaluate_peak_mib"]:
                ratios["evaluate"] = rs[1]["evaluate_peak_mib"] / rs[0]["evaluate_peak_mib"]
    result["memory_ratios"] = ratios
    print("throughput", flush=True)
    result["throughput"] = previous.get("throughput", {}) if "throughput" in skip else throughput(work, 100 if q else 1000, args.device, 3 if q else 10)
    print("precision", flush=True)
    result["precision"] = previous.get("precision", []) if "precision" in skip else precision(
        work, 100 if q else 1000, 20 if q else 100, 32 if q else 64,
        args.epochs or (2 if q else (20 if args.device == "cpu" else 100)), args.device)
    write(args.out, result)


if __name__ == "__main__":
    main()
