"""Probe (2026-12-05, 2-core AMD EPYC): PCG-MG on the 3-D obstacles with an extra exact solve, before and
after the coarse correction, on the fine fluid points the interpolation of the coarse constant reaches
by less than THRESHOLD (``python benchmarks/measured/cpu-2026-12-05b/mg-orphan-probe.py THRESHOLD``; the
size/seed list was edited between runs: see dcdm-cycle-probes.md)."""
import sys, numpy as np, scipy.sparse as sp, scipy.sparse.linalg as spl, torch, time
torch.set_num_threads(2)
from sciml import datasets
from sciml.solvers import multigrid as mgm
from sciml.learned.dcdm import fluid_rows
thr = float(sys.argv[1])
for n, seed in [(32,100),(128,100)]:
    A, b, info = datasets.system("poisson3d", resolution=n, seed=seed)
    A = sp.csr_matrix(A)
    mg = mgm.Multigrid(mgm.stencils([A], (n,n,n)))
    lev = mg.levels[0]
    cshape = mg.levels[1].shape
    v = mgm.prolong(lev, torch.ones((1,)+cshape, dtype=torch.float64))[:,1:-1,1:-1,1:-1].reshape(-1).numpy()
    fl = fluid_rows(A)
    orph = np.nonzero(fl & (v < thr))[0]
    AOO = A[orph][:, orph].tocsc()
    lu = spl.splu(AOO) if len(orph) else None
    def cyc(r):
        r = np.asarray(r, dtype=np.float64).ravel(); f = torch.from_numpy(r.reshape(1,n,n,n))
        x = mg.smooth(f).reshape(-1).numpy().copy()
        if lu is not None: x[orph] += lu.solve((r - A @ x)[orph])
        x = x + mg.coarse_correction(torch.from_numpy((r - A @ x).reshape(1,n,n,n))).reshape(-1).numpy()
        if lu is not None: x[orph] += lu.solve((r - A @ x)[orph])
        return mg.smooth(f, torch.from_numpy(x.reshape(1,n,n,n)), reverse=True).reshape(-1).numpy()
    M = spl.LinearOperator(A.shape, cyc)
    its = []
    spl.cg(A, b, rtol=1e-6, M=M, callback=lambda xk: its.append(1))
    its0 = []
    M0 = spl.LinearOperator(A.shape, lambda r: mg(torch.from_numpy(np.asarray(r, dtype=np.float64).reshape(1,n,n,n))).reshape(-1).numpy())
    spl.cg(A, b, rtol=1e-6, M=M0, callback=lambda xk: its0.append(1))
    print(f"n={n} seed={seed} orphans {len(orph)} (fluid {fl.sum()}) v-cycle {len(its0)} with orphan solve {len(its)}", flush=True)
