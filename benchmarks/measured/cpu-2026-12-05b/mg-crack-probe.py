"""Probe (2026-12-05): PCG-MG at 128^3 (seed 100) with exact solves on 13^3 boxes of fluid cells around the
slowest V-cycle mode, found one at a time (results in dcdm-cycle-probes.md, section 4)."""
import numpy as np, scipy.sparse as sp, scipy.sparse.linalg as spl, torch
torch.set_num_threads(2)
from sciml import datasets
from sciml.solvers import multigrid as mgm
n=128
A, b, info = datasets.system("poisson3d", resolution=n, seed=100)
A = sp.csr_matrix(A)
solid = info["inputs"]["mask"].reshape(n,n,n) > 0.5
mg = mgm.Multigrid(mgm.stencils([A], (n,n,n)))
blocks = []
def cyc(r):
    r = np.asarray(r, dtype=np.float64).ravel()
    f = torch.from_numpy(r.reshape(1,n,n,n))
    x = mg.smooth(f).reshape(-1).numpy().copy()
    for idx, lu in blocks: x[idx] += lu.solve((r - A @ x)[idx])
    x = x + mg.coarse_correction(torch.from_numpy((r - A @ x).reshape(1,n,n,n))).reshape(-1).numpy()
    for idx, lu in blocks[::-1]: x[idx] += lu.solve((r - A @ x)[idx])
    return mg.smooth(f, torch.from_numpy(x.reshape(1,n,n,n)), reverse=True).reshape(-1).numpy()
fl = ~solid.ravel()
for rnd in range(4):
    its = []
    spl.cg(A, b, rtol=1e-6, M=spl.LinearOperator(A.shape, cyc), callback=lambda xk: its.append(1))
    e = np.random.default_rng(0).standard_normal(n**3) * fl
    for k in range(25):
        e = e - cyc(A @ e)
    a1 = np.sqrt(e @ (A @ e)); e2 = e - cyc(A @ e); a2 = np.sqrt(e2 @ (A @ e2))
    E = np.abs(e.reshape(n,n,n)); i,j,k = np.unravel_index(np.argmax(E), E.shape)
    print(f"blocks {len(blocks)}: pcg its {len(its)}, asymptotic factor {a2/a1:.3f}, slowest at {(i,j,k)}", flush=True)
    lo = [max(c-6,0) for c in (i,j,k)]; hi = [min(c+7,n) for c in (i,j,k)]
    box = np.zeros((n,n,n), bool); box[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]] = True
    idx = np.nonzero(box.ravel() & fl)[0]
    blocks.append((idx, spl.splu(A[idx][:, idx].tocsc())))
