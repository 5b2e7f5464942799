"""The operator zoo on three protocols: one table of parameters, time per epoch, memory and error.

Tasks (full run, for a GPU):
  darcy            FNO protocol (Li et al. 2021): 421x421 subsampled to 85x85, 1000 train / 100 test
  burgers          FNO R10 protocol: 8192 points subsampled to 1024, 1000 / 100
  condiff-poisson  ConDiff grid 64, Poisson (f -> u), 1000 / 200
  condiff-cubic    ConDiff grid 64, cubic covariance, variance 0.1 ((k, f) -> u), 1000 / 200
Models: fno, gno, mgno, lsm, unet, deeponet, each with its paper preset where one exists (see
``CELLS``) and 500 epochs. Training settings follow each paper where it gives them (LSM: lr 5e-4;
MgNO: lr 5e-4, batch 8, one-cycle, H1 loss); the others use the FNO protocol (Adam lr 1e-3,
wd 1e-4, StepLR(100, 0.5), batch 20). ``--quick`` shrinks grids, samples, epochs and widths so the
whole table runs on a 2-core CPU in minutes; its numbers are tracked from run to run.

Each cell (task x model) trains in its own process (so peak memory is its own) and its result is
stored as soon as it finishes; a re-run skips finished cells. Writes ``zoo.md`` and ``zoo.csv``.

    python benchmarks/zoo.py --quick [--out bench-out/zoo] [--tasks darcy,burgers] [--models fno,lsm]
"""

from __future__ import annotations

import argparse
import csv
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

# ------------------------------------------------------------------------------------ tasks

# generator, parameters, n_train, n_test per task, for the full and the quick protocol
TASKS = {
    "darcy": {
        "full": ("darcy", {"resolution": 421, "subsample": 5}, 1000, 100),
        "quick": ("darcy", {"resolution": 85, "subsample": 2}, 200, 50),
    },
    "burgers": {
        "full": ("burgers", {"resolution": 8192, "subsample": 8}, 1000, 100),
        "quick": ("burgers", {"resolution": 8192, "subsample": 32}, 200, 50),
    },
    "condiff-poisson": {
        "full": ("condiff-poisson", {"resolution": 64}, 1000, 200),
        "quick": ("condiff-poisson", {"resolution": 32}, 200, 50),
    },
    "condiff-cubic": {
        "full": ("condiff", {"resolution": 64, "covariance": "cubic", "variance": 0.1}, 1000, 200),
        "quick": ("condiff", {"resolution": 32, "covariance": "cubic", "variance": 0.1}, 200, 50),
    },
}

# published test rel. L2 on the full protocol (shared/reference/papers.md; [U] = unverified recall)
PUBLISHED = {
    ("darcy", "fno"): "0.0108 (FNO paper)",
    ("darcy", "lsm"): "0.0065 (LSM paper)",
    ("darcy", "unet"): "0.0080 (LSM paper's U-Net)",
    ("darcy", "gno"): "0.0346 (FNO paper, [U])",
    ("darcy", "deeponet"): "0.0588 (LSM paper)",
    ("burgers", "fno"): "0.0160 (FNO paper)",
    ("burgers", "gno"): "0.0651 (FNO paper, [U])",
    ("condiff-poisson", "unet"): "0.020 (ConDiff notebooks; DilResNet 0.016)",
    ("condiff-cubic", "unet"): "- (ConDiff: DilResNet 0.071, SNO 0.090)",
}

# ------------------------------------------------------------------------------------ models

FNO_PROTOCOL = {"lr": 1e-3, "weight_decay": 1e-4, "scheduler": "step", "step_size": 100, "gamma": 0.5, "batch_size": 20}
PAPER_OPTIONS = {
    "lsm": {"lr": 5e-4},
    "mgno": {"lr": 5e-4, "batch_size": 8, "scheduler": "onecycle", "loss": "h1"},
}
# model (or preset) per task; a task not listed uses the bare model name with its defaults
PRESETS = {
    "fno": {"darcy": "fno-darcy-paper", "burgers": "fno-burgers-paper", "condiff-poisson": "fno-darcy-padded",
            "condiff-cubic": "fno-darcy-padded"},
    "lsm": {"darcy": "lsm-darcy-paper", "condiff-poisson": "lsm-darcy-paper", "condiff-cubic": "lsm-darcy-paper"},
    "mgno": {"darcy": "mgno-darcy-paper", "condiff-poisson": "mgno-darcy-paper", "condiff-cubic": "mgno-darcy-paper"},
    "unet": {"darcy": "unet-darcy", "condiff-poisson": "unet-condiff", "condiff-cubic": "unet-condiff"},
    "deeponet": {"darcy": "deeponet-darcy"},
}
# periodic problems: circular convolutions for the models that have them
PERIODIC = {"burgers"}

# the paper's GNO (gno-darcy-paper, a width x width kernel matrix per edge) needs ~36 GB per 85x85 sample: the zoo
# runs the diagonal-kernel GNO at the paper's width and depth instead
FULL_MODEL = {"gno": {"width": 64, "depth": 6, "kernel_width": 256}}
# --quick: smaller models and fewer epochs (the same architectures)
QUICK_MODEL = {
    "fno": {"width": 16},
    "lsm": {"d_model": 16},
    "mgno": {"channels": 12},
    "unet": {"width": 8},
    "gno": {"width": 16, "kernel_width": 32, "depth": 2, "kernel": "diagonal", "max_neighbors": 12},
    "deeponet": {"branch": (64, 64), "trunk": (64, 64)},
}
QUICK_OPTIONS = {"epochs": 10, "scheduler": "cosine"}
FULL_EPOCHS = 500


def cell_model(task: str, model: str, quick: bool) -> tuple[str, dict]:
    """The preset (or model) name and the model_config overrides of one cell."""
    from sciml.operators import presets

    name = PRESETS.get(model, {}).get(task, model)
    if name not in presets.presets():
        name = model  # a preset this version lacks: the model's defaults
    config: dict = {}
    if task in PERIODIC and model in ("mgno", "unet"):
        config["padding_mode"] = "circular"
    config.update(QUICK_MODEL.get(model, {}) if quick else FULL_MODEL.get(model, {}))
    if quick:
        if model == "fno":
            config["modes"] = (8,) * (1 if task == "burgers" else 2)
    return name, config


def cell_options(task: str, model: str, quick: bool) -> dict:
    opts = {**FNO_PROTOCOL, **PAPER_OPTIONS.get(model, {})}
    if task == "burgers" and model == "fno":
        opts["step_size"] = 50  # fourier_1d.py
    opts["epochs"] = FULL_EPOCHS
    if quick:
        opts.update(QUICK_OPTIONS)
    return opts


# ------------------------------------------------------------------------------------ running


def make_data(task: str, quick: bool, root: Path, device: str | None = None) -> dict[str, Path]:
    """The task's train and test files (made once). ``device``: solve the linear PDEs' samples in
    batches on that torch device (``sciml generate --device``; the time-stepped ones ignore it)."""
    from sciml import datasets
    from sciml.datasets.generators import LinearGenerator, create

    pde, params, n_train, n_test = TASKS[task]["quick" if quick else "full"]
    batched = device if device and isinstance(create(pde, **params), LinearGenerator) else None
    files = {}
    for split, n, seed in (("train", n_train, 0), ("test", n_test, 1)):
        path = root / f"{task}-{split}.h5"
        if not path.exists():
            datasets.generate(pde, n=n, seed=seed, out=path, progress=False, device=batched, **params)
        files[split] = path
    return files


def run_cell(task: str, model: str, quick: bool, root: Path, device: str) -> dict:
    """Train and evaluate one cell in this process; returns its row."""
    import torch

    from sciml import evaluation, training

    files = make_data(task, quick, root / "data")
    name, config = cell_model(task, model, quick)
    opts = cell_options(task, model, quick)
    run = root / "runs" / f"{task}-{model}"
    if run.exists():
        import shutil

        shutil.rmtree(run)  # an unfinished earlier attempt
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    summary = training.train(name, data=files["train"], out=run, model_config=config, device=device, progress=False,
                             figures=False, **opts)
    res = evaluation.evaluate(run, data=[files["test"]], n_solver_samples=0, device=device)["datasets"][0]
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    if summary["device"].startswith("cuda"):
        memory, kind = torch.cuda.max_memory_allocated() / 2**20, "GPU"
    else:
        memory, kind = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "RSS"
    return {
        "task": task, "model": model, "preset": name, "parameters": summary["n_parameters"],
        "epochs": summary["epochs"], "s_per_epoch": statistics.median(r["seconds"] for r in rows),
        "memory_mb": round(memory, 1), "memory_kind": kind, "rel_l2": res["rel_l2_mean"],
        "rel_l2_std": res["rel_l2_std"], "grid": res["resolution"], "n_train": summary["n_train"],
        "device": summary["device"], "published": PUBLISHED.get((task, model), ""),
    }


def spawn_cell(task: str, model: str, args: argparse.Namespace, result: Path) -> dict:
    cmd = [sys.executable, __file__, "--cell", f"{task}:{model}", "--out", str(args.out), "--device", args.device]
    if args.quick:
        cmd.append("--quick")
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0 or not result.exists():
        lines = (proc.stderr or proc.stdout).strip().splitlines() or ["no output"]
        row = {"task": task, "model": model, "error": lines[-1][:300]}
        result.write_text(json.dumps(row))
        return row
    row = json.loads(result.read_text())
    row["wall_s"] = round(time.perf_counter() - t0, 1)
    result.write_text(json.dumps(row))
    return row


COLUMNS = ("task", "model", "preset", "grid", "parameters", "s_per_epoch", "memory_mb", "memory_kind", "epochs",
           "rel_l2", "published", "error")


def fmt(key: str, value) -> str:
    if value is None or value == "":
        return ""
    if key == "rel_l2":
        return f"{value:.4f}"
    if key == "s_per_epoch":
        return f"{value:.2f}"
    if key == "parameters":
        return f"{value:,}"
    return str(value)


def write_table(rows: list[dict], out: Path, protocol: str) -> None:
    with open(out / "zoo.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=COLUMNS, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    lines = [f"# Operator zoo ({protocol} protocol)", "", "| " + " | ".join(COLUMNS) + " |",
             "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(fmt(k, r.get(k)) for k in COLUMNS) + " |" for r in rows]
    (out / "zoo.md").write_text("\n".join(lines) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="CPU-sized run (minutes)")
    ap.add_argument("--out", type=Path, default=None, help="output folder (default bench-out/zoo/{quick,full})")
    ap.add_argument("--tasks", default=",".join(TASKS))
    ap.add_argument("--models", default="fno,gno,mgno,lsm,unet,deeponet")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--cell", help=argparse.SUPPRESS)
    ap.add_argument("--gen-device", default=None,
                    help="make the linear PDEs' data with batched solves on this device (e.g. cuda)")
    args = ap.parse_args()
    args.out = args.out or Path("bench-out/zoo") / ("quick" if args.quick else "full")
    (args.out / "cells").mkdir(parents=True, exist_ok=True)

    if args.cell:  # child process: one cell
        task, model = args.cell.split(":")
        row = run_cell(task, model, args.quick, args.out, args.device)
        (args.out / "cells" / f"{task}-{model}.json").write_text(json.dumps(row))
        return

    rows = []
    for task in args.tasks.split(","):
        if task not in TASKS:
            sys.exit(f"error: unknown task {task!r}; valid tasks are: {', '.join(TASKS)}")
        make_data(task, args.quick, args.out / "data", args.gen_device)  # once, before the cells
        for model in args.models.split(","):
            result = args.out / "cells" / f"{task}-{model}.json"
            if result.exists() and "error" not in json.loads(result.read_text()):
                row = json.loads(result.read_text())
            else:
                row = spawn_cell(task, model, args, result)
            rows.append(row)
            brief = row.get("error") or f"rel. L2 {row['rel_l2']:.4f}, {row['s_per_epoch']:.2f} s/epoch"
            print(f"{task:16s} {model:9s} {brief}", flush=True)
            write_table(rows, args.out, "quick" if args.quick else "full")
    print(f"wrote {args.out / 'zoo.md'} and {args.out / 'zoo.csv'}")


if __name__ == "__main__":
    main()
