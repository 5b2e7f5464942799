"""Probe (2026-12-05, 2-core AMD EPYC); results in dcdm-cycle-probes.md, section 5."""
import time, numpy as np, scipy.sparse as sp, torch
torch.set_num_threads(2)
from sciml import datasets
from sciml.learned.dcdm import load_dcdm, dcdm_solve
from sciml.learned.dcdm_mg import CycleDirection
net = load_dcdm("benchmarks/results/dcdm-cpu3d/runs/obstacles-dcdm-plain-16-32u2-s32")[0]
for n in (32, 64, 128):
    A, b, _ = datasets.system("poisson3d", resolution=n, seed=100, n_boxes=0, n_spheres=0)
    A = sp.csr_matrix(A)
    t = time.time(); r = dcdm_solve(A, b, CycleDirection.for_matrix(net, A), tol=1e-6, memory=None, maxiter=100)
    c = dcdm_solve(A, b, CycleDirection(A, None, (n, n, n)), tol=1e-6, memory=None, maxiter=100)
    print(f"empty cube n={n}: dcdm-mg {r.iterations} ({time.time()-t:.0f}s), classical cycle {c.iterations}", flush=True)
