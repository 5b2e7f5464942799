"""Probe (2026-12-05, 2-core AMD EPYC): the dcdm-mg:RUN cycle (product defaults) and the same cycle
without the network on more unseen obstacle geometries than the benchmark's protocol.

    python benchmarks/measured/cpu-2026-12-05c/dcdm-mg-seeds.py 102,103 32,128
"""
import sys, time, scipy.sparse as sp, torch
torch.set_num_threads(2)
from sciml import datasets
from sciml.learned.dcdm import load_dcdm, dcdm_solve
from sciml.learned.dcdm_mg import CycleDirection
net = load_dcdm("benchmarks/results/dcdm-cpu3d/runs/obstacles-dcdm-plain-16-32u2-s32")[0]
for n in [int(s) for s in sys.argv[2].split(",")]:
    for seed in [int(s) for s in sys.argv[1].split(",")]:
        A, b, _ = datasets.system("poisson3d", resolution=n, seed=seed)
        A = sp.csr_matrix(A)
        t = time.time(); r = dcdm_solve(A, b, CycleDirection.for_matrix(net, A), tol=1e-6, memory=None, maxiter=100)
        c = dcdm_solve(A, b, CycleDirection(A, None, (n, n, n)), tol=1e-6, memory=None, maxiter=100)
        print(f"n={n} seed={seed}: dcdm-mg {r.iterations} ({time.time() - t:.0f}s), mg-cycle {c.iterations}", flush=True)
