"""Probe (2026-12-05): dcdm-mg with the network input scaled to c times unit RMS (spec "n,seed,c;...")."""
import sys, time, numpy as np, scipy.sparse as sp, torch
torch.set_num_threads(2)
from sciml import datasets
from sciml.learned.dcdm import load_dcdm, dcdm_solve
from sciml.learned.dcdm_mg import CycleDirection
net = load_dcdm("benchmarks/results/dcdm-cpu3d/runs/obstacles-dcdm-plain-16-32u2-s32")[0]
for spec in sys.argv[1].split(";"):
    n, seed, c = spec.split(",")
    n, seed, c = int(n), int(seed), float(c)
    A, b, _ = datasets.system("poisson3d", resolution=n, seed=seed)
    A = sp.csr_matrix(A)
    cd = CycleDirection.for_matrix(net, A)
    cd.direction.n = cd.direction.n * c * c  # the network's input scaled by c (unit RMS times c)
    t = time.time(); r = dcdm_solve(A, b, cd, tol=1e-6, memory=None, maxiter=100)
    print(f"n={n} seed={seed} input scale {c}: {r.iterations} ({time.time()-t:.0f}s)", flush=True)
