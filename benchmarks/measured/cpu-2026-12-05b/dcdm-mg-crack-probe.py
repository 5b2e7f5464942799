"""Probe (2026-12-05): dcdm-mg at 128^3 (seed 100) with an exact solve on the 13^3 box around the crack
before and after the network steps (results in dcdm-cycle-probes.md, section 4)."""
import numpy as np, scipy.sparse as sp, scipy.sparse.linalg as spl, torch, time
torch.set_num_threads(2)
from sciml import datasets
from sciml.learned.dcdm import load_dcdm, Direction, dcdm_solve
from sciml.solvers import multigrid as mgm
net = load_dcdm("benchmarks/results/dcdm-cpu3d/runs/obstacles-dcdm-plain-16-32u2-s32")[0]
n=128
A, b, info = datasets.system("poisson3d", resolution=n, seed=100)
A = sp.csr_matrix(A)
solid = info["inputs"]["mask"].reshape(n,n,n) > 0.5
fl = ~solid.ravel()
mg = mgm.Multigrid(mgm.stencils([A], (n,n,n)))
d = Direction.for_matrix(net, A)
box = np.zeros((n,n,n), bool); box[84:97, 84:97, 71:84] = True
idx = np.nonzero(box.ravel() & fl)[0]; lu = spl.splu(A[idx][:, idx].tocsc())
def step(x, r):
    res = r - A @ x; q = d(res); return x + (q @ res) / (q @ (A @ q)) * q
def cyc(r):
    f = torch.from_numpy(r.reshape(1,n,n,n))
    x = mg.smooth(f).reshape(-1).numpy().copy()
    x[idx] += lu.solve((r - A @ x)[idx])
    x = step(x, r)
    x = x + mg.coarse_correction(torch.from_numpy((r - A @ x).reshape(1,n,n,n))).reshape(-1).numpy()
    x = step(x, r)
    x[idx] += lu.solve((r - A @ x)[idx])
    return mg.smooth(f, torch.from_numpy(x.reshape(1,n,n,n)), reverse=True).reshape(-1).numpy()
t = time.time(); r = dcdm_solve(A, b, cyc, tol=1e-6, memory=None); print("dcdm-mg + crack block", r.iterations, time.time()-t)
