"""Device run: train DCDM variants in parallel (one process each) for a fixed time, then evaluate."""
import json, os, subprocess, sys, time
from pathlib import Path

OUT = Path(os.environ.get("OUT", "/tmp/devout"))
T_TRAIN = float(os.environ.get("T_TRAIN", 240))
DEADLINE = float(os.environ.get("DEADLINE", 520))  # seconds after start
QUICK = os.environ.get("QUICK") == "1"
JOBS = {
    "cd-n4": dict(family="condiff", config={}, n_systems=4),
    "cd-n128": dict(family="condiff", config={}, n_systems=128),
    "cd-n128-w32": dict(family="condiff", config={"width": 32}, n_systems=128),
    "cd-n128-lf10": dict(family="condiff", config={}, n_systems=128, low_fraction=0.1),
    "ob-feat": dict(family="obstacles", config={}, n_systems=32),
    "ob-plain": dict(family="obstacles", config={"features": False, "jacobi": False}, n_systems=32),
}
FAM = {"condiff": dict(pde="condiff", params={"variance": 2.0}, res=64, maxiter=1000,
                       evals=[(64, 100, None), (128, 100, None), (64, 101, None), (64, 102, None), (128, 101, None),
                              (64, 100, 2), (128, 100, 2), (64, 101, 2), (64, 102, 2), (128, 101, 2)]),
       "obstacles": dict(pde="poisson3d", params={}, res=32, maxiter=300,
                         evals=[(32, 100, None), (32, 101, None), (64, 100, None), (128, 100, None),
                                (32, 100, 2), (32, 101, 2), (64, 100, 2), (128, 100, 2)])}
if QUICK:
    FAM["condiff"].update(res=16, evals=[(16, 100, None), (24, 100, 2)])
    FAM["obstacles"].update(res=8, evals=[(8, 100, None), (16, 100, 2)])


def log(rec):
    with open(OUT / "results.jsonl", "a") as f:
        f.write(json.dumps(rec) + "\n")


def job(name, t_start):
    import numpy as np
    import torch
    from sciml import datasets, runtime
    from sciml.learned.dcdm import Direction, dcdm_solve, load_dcdm, train_dcdm
    spec = JOBS[name]
    fam = FAM[spec["family"]]
    run = OUT.parent / "runs" / name if "RUNS" not in os.environ else Path(os.environ["RUNS"]) / name
    opts = {k: v for k, v in spec.items() if k not in ("family", "config")}
    if opts["n_systems"] > 8:
        opts["val_vectors"] = 4
    r = train_dcdm(run, dict(spec["config"]), progress=False, pde=fam["pde"], params=fam["params"], resolution=fam["res"],
                   seed=0, steps=100000, lr=3e-3, max_seconds=T_TRAIN, log_every=100, **opts)
    log({"job": name, "train": r, "t": time.time() - t_start})
    net, _ = load_dcdm(run)
    dev = runtime.device("auto")
    for n, seed, mem in fam["evals"]:
        if time.time() - t_start > DEADLINE:
            log({"job": name, "skipped": [n, seed, mem]})
            continue
        A, b, _ = datasets.system(fam["pde"], resolution=n, seed=seed, **fam["params"])
        t0 = time.perf_counter()
        d = Direction.for_matrix(net, A, device=dev)
        res = dcdm_solve(A, b, d, tol=1e-6, maxiter=fam["maxiter"], memory=mem)
        h = res.residuals
        log({"job": name, "n": n, "seed": seed, "memory": mem, "iterations": res.iterations, "converged": res.converged,
             "residual": float(res.residual), "seconds": time.perf_counter() - t0,
             "hist": [float(h[i]) for i in range(0, len(h), 10)]})


if __name__ == "__main__":
    t_start = float(os.environ.get("T_START", time.time()))
    if len(sys.argv) > 1:
        job(sys.argv[1], t_start)
        sys.exit(0)
    OUT.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "T_START": str(t_start), "OMP_NUM_THREADS": "2", "PYTHONUNBUFFERED": "1"}
    procs = {n: subprocess.Popen([sys.executable, __file__, n], env=env, stdout=open(OUT / "log.txt", "a"),
                                 stderr=subprocess.STDOUT) for n in JOBS}
    for n, p in procs.items():
        try:
            p.wait(timeout=max(1, DEADLINE + 25 - (time.time() - t_start)))
        except subprocess.TimeoutExpired:
            p.kill()
            log({"job": n, "killed": True})
    print(open(OUT / "results.jsonl").read() if (OUT / "results.jsonl").exists() else "no results")
    subprocess.run(["tar", "czf", str(OUT / "runs.tgz"), "-C", str(Path(os.environ["RUNS"]).parent), Path(os.environ["RUNS"]).name])
