"""Probe (2026-12-05, 2-core AMD EPYC): an oracle local solve for an nmg run (env RUN, default
condiff-high-nmg2c3-100x400) on ConDiff variance 2.0 (seed 1): the
points of the top FRAC energy density of the cycle's slowest error (CYCLES stationary cycles from VECS random
errors, the union), dilated by 2, solved exactly around the cycle (S, cycle, S). Results in nmg-local-probes.md
(nmg2c3) and ../cpu-2026-12-05d/nmg3c3-contrast-probes.md (nmg3c3); prints the residual histories.
    [RUN=condiff-high-nmg3c3-100x400] python benchmarks/measured/cpu-2026-12-05c/nmg-oracle-local-probe.py N CYCLES FRACS [VECS]
"""
import os, sys, numpy as np, scipy.sparse as sp, scipy.sparse.linalg as spl, torch
from scipy import ndimage
torch.set_num_threads(2)
from sciml import datasets
from sciml.learned.nmg import load_nmg, hierarchy, NeuralMultigrid
from sciml.solvers import multigrid as mgm
from sciml.solvers.krylov_torch import pcg
net = load_nmg("benchmarks/results/precond-full2/runs/" + os.environ.get("RUN", "condiff-high-nmg2c3-100x400"))[0]
n = int(sys.argv[1]); cycles = int(sys.argv[2]); fracs = [float(f) for f in sys.argv[3].split(",")]
A, b, info = datasets.system("condiff", resolution=n, seed=1, variance=2.0); A = sp.csr_matrix(A)
m = int(round(A.shape[0] ** 0.5)); shape = (m, m)
with torch.no_grad():
    mg, notes = hierarchy(mgm.stencils([A], shape), net, 1)
    nmg = NeuralMultigrid(mg, net, notes=notes)
    en = lambda v: float((v * mg.matvec(v)).sum()) ** 0.5
    vecs = int(sys.argv[4]) if len(sys.argv) > 4 else 1
    dens_list = []
    for v in range(vecs):
        e = torch.from_numpy(np.random.default_rng(v).standard_normal((1, *shape)))
        for k in range(cycles):
            e = nmg.error_propagation(e); e = e / en(e)
        ev = e.reshape(-1).numpy(); dens_list.append(np.abs(ev * (A @ ev)))
    bt = torch.from_numpy(b.reshape(1, *shape))
    for frac in fracs:
        top = np.zeros(A.shape[0], bool)
        for dens in dens_list:
            if frac > 0: top |= dens >= np.quantile(dens, 1 - frac)
        sel = ndimage.binary_dilation(top.reshape(shape), iterations=2).reshape(-1) if frac > 0 else top
        idx = np.nonzero(sel)[0]
        lu = spl.splu(A[idx][:, idx].tocsc()) if len(idx) else None
        line = f"n={n} vecs={vecs} cycles={cycles} frac={frac} points={len(idx)}"
        for name, B in (("nmg", nmg), ("mg", mg)):
            def S(r):
                x = np.zeros_like(r)
                if lu is not None: x[idx] = lu.solve(r[idx])
                return x
            def M(rt):
                r = rt.reshape(-1).numpy(); x = S(r)
                x = x + B(torch.from_numpy((r - A @ x).reshape(1, *shape))).reshape(-1).numpy()
                x = x + S(r - A @ x)
                return torch.from_numpy(x.reshape(1, *shape))
            out = pcg(mg.matvec, bt, 1e-8, 200, None, M)
            line += f" | {name} {int(out.iterations[0])} " + " ".join(f"{float(r):.1e}" for r in out.residuals[:, 0] / out.residuals[0, 0])
        print(line, flush=True)
