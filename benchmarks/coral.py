"""CORAL against FNO and GNO on Darcy flow, on full grids and on sparse random point samplings.

Data: the FNO Darcy protocol (``sciml.datasets.generate("darcy")``: coefficient a in {3, 12}
from a thresholded Gaussian field, f = 1, zero Dirichlet u), train seed 0, test seed 1.

  full protocol   solved at 421 nodes per axis and stored every 5th node (s = 85, as in the FNO
                  paper and benchmarks/zoo.py), 1000 train / 100 test; GPU-sized (hours on a CPU)
  --quick         solved and stored at s = 29, 200 train / 50 test, short training, small
                  models (a few minutes on 2 CPU cores; the networks are under-trained)

Samplings: a fraction 1.0 (the full grid), 0.2 and 0.05 of each sample's grid points
(``sciml.training.coral.point_samples``: ``default_rng([seed, i])`` per sample, the same points
for the input a and the output u). Models:

  coral   one model per sampling, trained with ``train_coral(points=fraction)`` (seed 0
          samplings); scored on the full test grid (``sciml.evaluation.evaluate``) and on a fresh
          sampling of the same fraction (``evaluate_on_points(..., seed=1)``: a observed and u
          predicted at those points only)
  fno     one model trained on full grids (``sciml.training.train``, the fno-darcy-paper preset,
          FNO protocol). At 0.2 / 0.05 it is the same network, applied to test inputs rebuilt on
          the grid from the seed-1 sampling (``scipy.interpolate.griddata``, linear, nearest-
          neighbour fill outside the convex hull): "FNO trained on full grids, inputs interpolated
          from the sampling". Its full-grid error is against the full test grid; its sampling
          error is at the sampled points
  gno     one model trained on full grids (the point operator fed every grid point,
          ``PointsOnGrid``), diagonal kernel and the trainer's default pointwise normalisation, as
          in benchmarks/zoo.py. At 0.2 / 0.05 it is scored like CORAL on the seed-1 sampling (a
          observed, u predicted at the sampled points; its radius graph is then built on them) by
          ``evaluate_on_points``, which reads the pointwise statistics at the sampled points

Columns: rel L2 on the full test grid, rel L2 on the fresh sampling of that fraction, parameters,
training seconds (wall; the fno / gno rows at 0.2 / 0.05 reuse the full-grid run), inference
ms/sample on the full grid (``evaluate``'s model time) and at the sampled points (wall time of
the point evaluation / n; for fno: the network on the interpolated inputs, interpolation
excluded, reported separately in coral.json). Trained runs are cached in ``OUT/runs`` and reused
on a re-run (delete a folder to retrain). Writes ``coral.md`` and ``coral.json``.

    python benchmarks/coral.py --quick [--out DIR] [--threads 1] [--models coral,fno,gno] [--fractions 1,0.2,0.05]
    python benchmarks/coral.py          # full protocol (for a GPU)

CLI equivalent of one CORAL cell and of the FNO baseline:

    sciml generate darcy -s 421 --subsample 5 --n 1000 --seed 0 --out darcy85-train.h5
    sciml generate darcy -s 421 --subsample 5 --n 100 --seed 1 --out darcy85-test.h5
    sciml train coral --data darcy85-train.h5 --points 0.2 --out runs/coral-0.2
    sciml evaluate runs/coral-0.2 --data darcy85-test.h5 --points 0.2   # full grid + a fresh 20% sampling
    sciml train fno-darcy-paper --data darcy85-train.h5 --epochs 500 --out runs/fno
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from solvers import machine_notes  # noqa: E402  (benchmarks/solvers.py)

from sciml import datasets, evaluation, training  # noqa: E402
from sciml.operators.adapters import grid_points  # noqa: E402
from sciml.training.checkpoint import load_operator  # noqa: E402
from sciml.training.coral import evaluate_on_points, point_samples, train_coral  # noqa: E402
from sciml.training.data import load_grid_data  # noqa: E402
from sciml.training.losses import relative_l2  # noqa: E402
from sciml.training.trainer import predict  # noqa: E402

MODELS = ["coral", "fno", "gno"]
FRACTIONS = [1.0, 0.2, 0.05]
EVAL_SEED = 1  # the fresh test sampling (training samplings use seed 0)

PROTOCOLS = {
    "full": {
        "data": {"resolution": 421, "subsample": 5},  # s = 85
        "n_train": 1000, "n_test": 100,
        # CORAL: the paper's architecture (operators.coral.CoralConfig defaults) and learning rates
        "coral": {"inr_epochs": 1000, "processor_epochs": 2000, "lr_inr": 1e-4, "lr_code": 1e-4,
                  "lr_processor": 1e-3, "batch_size": 32, "model_config": {}},
        # FNO protocol (Li et al. 2021): Adam lr 1e-3, wd 1e-4, StepLR(100, 0.5), batch 20, 500 epochs
        "fno": {"name": "fno-darcy-paper", "model_config": {},
                "options": {"epochs": 500, "lr": 1e-3, "weight_decay": 1e-4, "scheduler": "step", "step_size": 100,
                            "gamma": 0.5, "batch_size": 20}},
        # as benchmarks/zoo.py: the paper's GNO width / depth with the diagonal kernel (the full kernel
        # matrix needs ~36 GB per 85x85 sample)
        "gno": {"name": "gno", "model_config": {"width": 64, "depth": 6, "kernel_width": 256},
                "options": {"epochs": 500, "lr": 1e-3, "weight_decay": 1e-4, "scheduler": "step", "step_size": 100,
                            "gamma": 0.5, "batch_size": 20}},
    },
    "quick": {
        "data": {"resolution": 29},
        "n_train": 200, "n_test": 50,
        # the CPU-sized CORAL measured on Poisson 15x15 (rel L2 0.21 in ~19 s), shorter stage 1
        "coral": {"inr_epochs": 20, "processor_epochs": 120, "lr_inr": 1e-3, "lr_code": 1e-3,
                  "lr_processor": 1e-3, "batch_size": 32,
                  "model_config": {"latent_dim": 32, "width": 48, "depth": 3, "w0": 10.0}},
        # benchmarks/zoo.py's quick models, more epochs (s = 29 is cheap; about CORAL's training time)
        "fno": {"name": "fno-darcy-paper", "model_config": {"width": 16, "modes": (8, 8)},
                "options": {"epochs": 100, "lr": 1e-3, "weight_decay": 1e-4, "scheduler": "cosine", "batch_size": 20}},
        "gno": {"name": "gno", "model_config": {"width": 16, "kernel_width": 32, "depth": 2, "kernel": "diagonal",
                                                "max_neighbors": 12},
                "options": {"epochs": 30, "lr": 1e-3, "weight_decay": 1e-4, "scheduler": "cosine", "batch_size": 20}},
    },
}
LABELS = {"coral": "CORAL", "fno": "FNO", "gno": "GNO"}
SPARSE_LABELS = {"coral": "CORAL trained on the sampling",
                 "fno": "FNO trained on full grids, inputs interpolated from the sampling",
                 "gno": "GNO trained on full grids, applied to the sampled points"}


# ------------------------------------------------------------------------------------ data


def make_data(protocol: dict, root: Path) -> dict[str, Path]:
    files = {}
    for split, n, seed in (("train", protocol["n_train"], 0), ("test", protocol["n_test"], 1)):
        params = protocol["data"]
        s = (params["resolution"] - 1) // params.get("subsample", 1) + 1
        path = root / f"darcy{s}-{split}-{n}.h5"
        if not path.exists():
            print(f"generating {n} {split} samples (darcy, s = {s}) ...", flush=True)
            datasets.generate("darcy", n=n, seed=seed, out=path, progress=False, **params)
        files[split] = path
    return files


def interpolate_inputs(x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """Grid inputs ``(N, C, *S)`` rebuilt from their values at flat indices ``idx (N, K)``:
    linear interpolation (Delaunay, ``griddata``), nearest neighbour outside the convex hull."""
    from scipy.interpolate import griddata

    n, c, shape = x.shape[0], x.shape[1], tuple(x.shape[2:])
    pts = grid_points(shape).double().numpy()
    flat = x.reshape(n, c, -1).double().numpy()
    out = np.empty_like(flat)
    for i in range(n):
        known = pts[idx[i].numpy()]
        for ch in range(c):
            vals = flat[i, ch, idx[i].numpy()]
            lin = griddata(known, vals, pts, method="linear")
            holes = np.isnan(lin)
            if holes.any():
                lin[holes] = griddata(known, vals, pts[holes], method="nearest")
            out[i, ch] = lin
    return torch.from_numpy(out).to(x.dtype).reshape(x.shape)


# ------------------------------------------------------------------------------------ cells


def cached(run_dir: Path):
    meta = run_dir / "bench.json"
    if meta.exists():
        print(f"reusing {run_dir}", flush=True)
        return {**json.loads(meta.read_text()), "reused": True}
    if run_dir.exists():
        shutil.rmtree(run_dir)  # an unfinished earlier attempt
    return None


def train_coral_cell(fraction: float, protocol: dict, files: dict, out: Path, threads: int) -> dict:
    cfg = protocol["coral"]
    run_dir = out / "runs" / f"coral-p{fraction:g}-{cfg['inr_epochs']}x{cfg['processor_epochs']}"
    hit = cached(run_dir)
    if hit:
        return hit
    print(f"coral @ {fraction:g}: training ({cfg['inr_epochs']} + {cfg['processor_epochs']} epochs) ...", flush=True)
    r = train_coral(files["train"], run_dir, progress=False, points=fraction, num_threads=threads,
                    inr_epochs=cfg["inr_epochs"], processor_epochs=cfg["processor_epochs"], lr_inr=cfg["lr_inr"],
                    lr_code=cfg["lr_code"], lr_processor=cfg["lr_processor"], batch_size=cfg["batch_size"],
                    model_config=dict(cfg["model_config"]))
    meta = {"run_dir": str(run_dir), "parameters": r["parameters"], "train_s": r["seconds"],
            "train_points": r["points"], "inr_loss": r["inr_loss"], "processor_loss": r["processor_loss"]}
    (run_dir / "bench.json").write_text(json.dumps(meta, indent=2))
    print(f"coral @ {fraction:g}: {r['seconds']:.0f} s, {r['points']} points per sample, inr loss {r['inr_loss']:.3g}, "
          f"processor loss {r['processor_loss']:.3g}", flush=True)
    return {**meta, "reused": False}


def train_grid_cell(model: str, protocol: dict, files: dict, out: Path, threads: int) -> dict:
    cfg = protocol[model]
    run_dir = out / "runs" / f"{model}-{cfg['options']['epochs']}ep"
    hit = cached(run_dir)
    if hit:
        return hit
    print(f"{model}: training on full grids ({cfg['options']['epochs']} epochs) ...", flush=True)
    t0 = time.perf_counter()
    r = training.train(cfg["name"], data=files["train"], out=run_dir, model_config=dict(cfg["model_config"]),
                       progress=False, figures=False, num_threads=threads, **cfg["options"])
    meta = {"run_dir": str(run_dir), "parameters": r["n_parameters"], "train_s": time.perf_counter() - t0,
            "train_loss": r["train_loss"], "preset": cfg["name"]}
    (run_dir / "bench.json").write_text(json.dumps(meta, indent=2))
    print(f"{model}: {meta['train_s']:.0f} s, train loss {r['train_loss']:.3g}", flush=True)
    return {**meta, "reused": False}


def full_grid(run_dir: str, test: Path) -> dict:
    res = evaluation.evaluate(run_dir, data=[test], n_solver_samples=1, device="cpu")["datasets"][0]
    return {"rel_l2_grid": res["rel_l2_mean"], "rel_l2_grid_std": res["rel_l2_std"],
            "grid_ms": 1e3 * res["model_s_per_sample"], "solver_ms": 1e3 * (res["solver_s_per_sample"] or float("nan"))}


def on_points(run_dir: str, test: Path, fraction: float) -> dict:
    t0 = time.perf_counter()
    res = evaluate_on_points(run_dir, test, fraction, seed=EVAL_SEED)
    wall = time.perf_counter() - t0
    return {"rel_l2_points": res["rel_l2_mean"], "rel_l2_points_std": res["rel_l2_std"], "points": res["points"],
            "points_ms": 1e3 * wall / res["n"]}


@torch.no_grad()
def fno_interpolated(run_dir: str, test: Path, fraction: float) -> dict:
    """The full-grid FNO on test inputs interpolated from the seed-1 sampling."""
    model, info = load_operator(run_dir)
    data = load_grid_data(test)
    idx = point_samples(data, fraction, EVAL_SEED)
    t0 = time.perf_counter()
    x = interpolate_inputs(data.x, idx)
    interp_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    pred = predict(model, info.normaliser, x, batch_size=20)
    model_s = time.perf_counter() - t0
    n = len(data)
    grid = relative_l2(pred.double(), data.y.double())
    flat_p, flat_y = pred.reshape(n, pred.shape[1], -1), data.y.reshape(n, data.y.shape[1], -1)
    gather = idx.unsqueeze(1).expand(n, pred.shape[1], idx.shape[1])
    pts = relative_l2(torch.gather(flat_p, 2, gather).double(), torch.gather(flat_y, 2, gather).double())
    input_err = relative_l2(x.double(), data.x.double())
    return {"rel_l2_grid": float(grid.mean()), "rel_l2_grid_std": float(grid.std()),
            "rel_l2_points": float(pts.mean()), "rel_l2_points_std": float(pts.std()), "points": int(idx.shape[1]),
            "points_ms": 1e3 * model_s / n, "interp_ms": 1e3 * interp_s / n,
            "input_rel_l2": float(input_err.mean())}


# ------------------------------------------------------------------------------------ output


def fmt(v, spec: str) -> str:
    return "—" if v is None or (isinstance(v, float) and not np.isfinite(v)) else format(v, spec)


def write_outputs(rows: list[dict], out: Path, protocol_name: str, protocol: dict, notes: list[str], wall: float,
                  shape: list[int]) -> str:
    lines = [f"# CORAL vs FNO and GNO on Darcy flow ({protocol_name} protocol), "
             f"{'x'.join(map(str, shape))} grid, {protocol['n_train']} train / {protocol['n_test']} test", ""]
    lines += [f"- {n}" for n in notes]
    lines += [f"- total benchmark wall time {wall:.0f} s", ""]
    lines += ["| model | sampling | points | rel L2 (full grid) | rel L2 (fresh sampling) | parameters | train s | "
              "infer ms/sample (grid) | infer ms/sample (points) |",
              "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        label = LABELS[r["model"]] if r["fraction"] >= 1 else SPARSE_LABELS[r["model"]]
        train = fmt(r.get("train_s"), ".0f") + (" (shared)" if r.get("shared") else "")
        lines.append(f"| {label} | {r['fraction']:.0%} | {r.get('points', '—')} | {fmt(r.get('rel_l2_grid'), '.4f')} | "
                     f"{fmt(r.get('rel_l2_points'), '.4f')} | {r['parameters']:,} | {train} | "
                     f"{fmt(r.get('grid_ms'), '.2f')} | {fmt(r.get('points_ms'), '.2f')} |")
    lines += [
        "",
        "- rel L2 (full grid): CORAL: the model of that sampling given the full test input grid, predicting every "
        "node; FNO at < 100%: the full-grid network on inputs interpolated from the fresh sampling, scored on every "
        "node; GNO at < 100%: '—' (the same network as its 100% row; its query kernel is untrained by grid training).",
        f"- rel L2 (fresh sampling): inputs observed and outputs scored at a random fraction of each test sample's "
        f"points (seed {EVAL_SEED}, never seen in training).",
        "- train s: wall seconds of training; '(shared)': the full-grid run of the 100% row, reused.",
        "",
    ]
    text = "\n".join(lines)
    (out / "coral.md").write_text(text)
    (out / "coral.json").write_text(json.dumps({"protocol": protocol_name, "settings": protocol, "rows": rows,
                                                "notes": notes}, indent=2, default=str))
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="s = 29, 200 / 50 samples, short training (minutes)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/coral"))
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--fractions", default=",".join(f"{f:g}" for f in FRACTIONS))
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    parser.add_argument("--inr-epochs", type=int, default=None, help="override CORAL's stage-1 epochs")
    parser.add_argument("--processor-epochs", type=int, default=None, help="override CORAL's stage-2 epochs")
    parser.add_argument("--epochs", type=int, default=None, help="override the FNO / GNO epochs")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    protocol_name = "quick" if args.quick else "full"
    protocol = json.loads(json.dumps(PROTOCOLS[protocol_name]))  # a deep copy
    for m in ("fno", "gno"):
        protocol[m]["model_config"] = {k: tuple(v) if isinstance(v, list) else v
                                       for k, v in protocol[m]["model_config"].items()}
        if args.epochs:
            protocol[m]["options"]["epochs"] = args.epochs
    if args.inr_epochs is not None:
        protocol["coral"]["inr_epochs"] = args.inr_epochs
    if args.processor_epochs is not None:
        protocol["coral"]["processor_epochs"] = args.processor_epochs
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = [m for m in models if m not in MODELS]
    if unknown:
        parser.error(f"unknown model {unknown}; choose from {MODELS}")
    fractions = [float(f) for f in args.fractions.split(",")]
    if any(not 0 < f <= 1 for f in fractions):
        parser.error("fractions must lie in (0, 1]")

    args.out.mkdir(parents=True, exist_ok=True)
    notes = machine_notes()
    t0 = time.perf_counter()
    files = make_data(protocol, args.out / "data")
    shape = list(load_grid_data(files["test"]).signature.shape)
    rows: list[dict] = []
    for model in models:
        if model == "coral":
            for f in fractions:
                run = train_coral_cell(f, protocol, files, args.out, args.threads)
                row = {"model": model, "fraction": f, **run, **full_grid(run["run_dir"], files["test"]),
                       **on_points(run["run_dir"], files["test"], f)}
                rows.append(row)
                print(f"coral @ {f:g}: rel L2 {row['rel_l2_grid']:.4f} (grid), {row['rel_l2_points']:.4f} "
                      f"(fresh sampling)", flush=True)
                write_outputs(rows, args.out, protocol_name, protocol, notes, time.perf_counter() - t0, shape)
            continue
        run = train_grid_cell(model, protocol, files, args.out, args.threads)
        grid = full_grid(run["run_dir"], files["test"])
        for f in fractions:
            row = {"model": model, "fraction": f, **run, "shared": f < 1}
            if f >= 1:
                row.update(grid)
                row["points"] = int(np.prod(shape))
                if model == "gno":
                    row.update(on_points(run["run_dir"], files["test"], f))
            elif model == "fno":
                row.update(fno_interpolated(run["run_dir"], files["test"], f))
                row["grid_ms"] = None
            else:
                row.update(on_points(run["run_dir"], files["test"], f))
            rows.append(row)
            print(f"{model} @ {f:g}: rel L2 {fmt(row.get('rel_l2_grid'), '.4f')} (grid), "
                  f"{fmt(row.get('rel_l2_points'), '.4f')} (fresh sampling)", flush=True)
            write_outputs(rows, args.out, protocol_name, protocol, notes, time.perf_counter() - t0, shape)
    print(write_outputs(rows, args.out, protocol_name, protocol, notes, time.perf_counter() - t0, shape))
    print(f"wrote {args.out / 'coral.md'} and coral.json")


if __name__ == "__main__":
    main()
