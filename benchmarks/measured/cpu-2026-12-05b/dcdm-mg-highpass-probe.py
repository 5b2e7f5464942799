"""Probe (2026-12-05, 2-core AMD EPYC); results in dcdm-cycle-probes.md, section 5."""
import sys, time, numpy as np, scipy.sparse as sp, torch
torch.set_num_threads(2)
from sciml import datasets
from sciml.learned.dcdm import load_dcdm, dcdm_solve
from sciml.learned.dcdm_mg import CycleDirection
net = load_dcdm("benchmarks/results/dcdm-cpu3d/runs/obstacles-dcdm-plain-16-32u2-s32")[0]

class HP(CycleDirection):
    def _network_step(self, x, f):
        res = f - self.mg.matvec(x)
        q = self._tensor(self.direction(res.reshape(-1).cpu().numpy()))
        q = q - self.mg.coarse_correction(self.mg.matvec(q))  # drop what the coarse space represents
        qAq = float((q * self.mg.matvec(q)).sum())
        return x + float((q * res).sum()) / qAq * q

for spec in sys.argv[1].split(";"):
    n, seed = map(int, spec.split(","))
    A, b, _ = datasets.system("poisson3d", resolution=n, seed=seed)
    A = sp.csr_matrix(A)
    base = CycleDirection.for_matrix(net, A)
    hp = HP(A, base.direction, base.shape)
    t = time.time(); r = dcdm_solve(A, b, hp, tol=1e-6, memory=None, maxiter=100)
    print(f"n={n} seed={seed} high-pass network steps: {r.iterations} ({time.time()-t:.0f}s)", flush=True)
