"""FNO on the Darcy protocol of Li et al. (2021): s=85 from 421, 1000 train / 100 test.

Full run (GPU): 421x421 data subsampled with r=5 to 85x85, modes 12, width 32, 4 layers, batch 20,
Adam lr 1e-3 wd 1e-4, StepLR(100, 0.5), 500 epochs, pointwise Gaussian normalisers, rel. L2 loss.
Target: test rel. L2 <= 0.0108 (paper), see shared/TARGETS.md.
``--quick`` is a CPU-sized version (211 -> 43, 200/50 samples, 20 epochs) whose number is tracked.

    python benchmarks/fno_darcy.py --quick [--out bench-out/fno_darcy]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from sciml import datasets, evaluation, training

FULL = dict(resolution=421, subsample=5, n_train=1000, n_test=100, epochs=500, step_size=100)
QUICK = dict(resolution=211, subsample=5, n_train=200, n_test=50, epochs=20, step_size=10)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="CPU-sized run")
    ap.add_argument("--out", type=Path, default=Path("bench-out/fno_darcy"))
    ap.add_argument("--low", type=float, default=3.0, help="low coefficient value (3 paper text, 4 MATLAB)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--workers", type=int, default=None, help="processes generating the data (default: serial)")
    args = ap.parse_args()
    p = QUICK if args.quick else FULL
    out = args.out / ("quick" if args.quick else "full")
    out.mkdir(parents=True, exist_ok=True)

    t0 = time.perf_counter()
    files = {}
    for split, n, seed in (("train", p["n_train"], 0), ("test", p["n_test"], 1)):
        path = out / f"{split}.h5"
        if not path.exists():
            datasets.generate("darcy", n=n, resolution=p["resolution"], subsample=p["subsample"], seed=seed,
                              out=path, low=args.low, workers=args.workers)
        files[split] = path
    t_gen = time.perf_counter() - t0

    run = out / "run"
    t0 = time.perf_counter()
    training.train("fno-darcy-paper", data=files["train"], out=run, test_data=files["test"], epochs=p["epochs"],
                   batch_size=20, lr=1e-3, weight_decay=1e-4, scheduler="step", step_size=p["step_size"], gamma=0.5,
                   normalise="pointwise", device=args.device)
    t_train = time.perf_counter() - t0
    res = evaluation.evaluate(run, data=[files["test"]], n_solver_samples=10)
    r = res["datasets"][0]
    summary = {
        "protocol": "quick" if args.quick else "full", "grid": r["resolution"], "n_train": p["n_train"],
        "n_test": p["n_test"], "epochs": p["epochs"], "low": args.low, "rel_l2": r["rel_l2_mean"],
        "target": 0.0108, "generation_s": round(t_gen, 1), "training_s": round(t_train, 1),
        "model_s_per_sample": r["model_s_per_sample"], "solver_s_per_sample": r["solver_s_per_sample"],
    }
    (out / "result.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
