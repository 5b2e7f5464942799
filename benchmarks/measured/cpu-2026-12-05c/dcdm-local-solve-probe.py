"""Probe (2026-12-05, 2-core AMD EPYC): the dcdm-mg cycle with a K-cycle coarse solve (`kc` CG iterations on
level 1) and an exact local solve on the fluid points where P 1 < `thr` (`part`: all, only those 2+ cells inside
the boundary, or only the boundary layer); `net=False` without the network. Results in dcdm-kcycle-probes.md.

    python benchmarks/measured/cpu-2026-12-05c/dcdm-local-solve-probe.py SEED SIZES "kc=2,thr=0.95;..."
"""
import sys, time, numpy as np, scipy.sparse as sp, scipy.sparse.linalg as spl, torch
torch.set_num_threads(2)
from sciml import datasets
from sciml.learned.dcdm import load_dcdm, Direction, dcdm_solve, fluid_rows
from sciml.solvers import multigrid as mgm
net = load_dcdm("benchmarks/results/dcdm-cpu3d/runs/obstacles-dcdm-plain-16-32u2-s32")[0]
seed = int(sys.argv[1]); sizes = [int(s) for s in sys.argv[2].split(",")]
variants = [eval(f"dict({v})") for v in sys.argv[3].split(";")]
def _mv(c, v):
    ep = c.padded(); ep[:, 1:-1, 1:-1, 1:-1] = v
    return c.matvec(ep)
for n in sizes:
    A, b, info = datasets.system("poisson3d", resolution=n, seed=seed); A = sp.csr_matrix(A)
    mg = mgm.Multigrid(mgm.stencils([A], (n,n,n))); lev = mg.levels[0]
    d = Direction.for_matrix(net, A)
    v1 = mgm.prolong(lev, torch.ones((1,)+mg.levels[1].shape, dtype=torch.float64))[:,1:-1,1:-1,1:-1].reshape(-1).numpy()
    fl = fluid_rows(A)
    line = f"n={n} seed={seed}"
    for kw in variants:
        thr, kc, usenet = kw.get("thr", 0), kw.get("kc", 0), kw.get("net", True)
        inner = np.zeros((n,n,n), bool); inner[2:-2,2:-2,2:-2] = True; inner = inner.ravel()
        part = kw.get("part", "all")
        sel = fl & (v1 < thr) & (inner if part == "inner" else ~inner if part == "layer" else True)
        orph = np.nonzero(sel)[0]
        lu = spl.splu(A[orph][:, orph].tocsc()) if len(orph) else None
        def step(x, r):
            if not usenet: return x
            res = r - A @ x; q = d(res); return x + (q @ res) / (q @ (A @ q)) * q
        def osolve(x, r):
            if lu is not None: x = x.copy(); x[orph] += lu.solve((r - A @ x)[orph])
            return x
        def cgc(res):
            rc = mgm.restrict(lev, torch.from_numpy(res.reshape(1,n,n,n)))
            if kc: e = mgm.pcg(lambda v: _mv(mg.levels[1], v), rc, 1e-30, kc, None, lambda v: mg._cycle(1, v)).x
            else: e = mg._cycle(1, rc)
            return mgm.prolong(lev, e)[:,1:-1,1:-1,1:-1].reshape(-1).numpy()
        def cyc(r):
            f = torch.from_numpy(r.reshape(1,n,n,n))
            x = mg.smooth(f).reshape(-1).numpy().copy()
            x = step(osolve(x, r), r)
            x = x + cgc(r - A @ x)
            x = osolve(step(x, r), r)
            return mg.smooth(f, torch.from_numpy(x.reshape(1,n,n,n)), reverse=True).reshape(-1).numpy().copy()
        t = time.time(); res = dcdm_solve(A, b, cyc, tol=1e-6, memory=None, maxiter=100)
        line += f" | {kw} {res.iterations} (orph {len(orph)}, {time.time()-t:.0f}s)"
    print(line, flush=True)
