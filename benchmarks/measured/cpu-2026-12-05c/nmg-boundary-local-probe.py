"""Probe (2026-12-05, 2-core AMD EPYC): nmg2c3 (and PCG-MG) on ConDiff variance 2.0, seed 1, with an exact
local solve on the boundary-layer points where P 1 < 0.95, wrapped symmetrically around the cycle (S, cycle, S).
Results in nmg-local-probes.md.   python benchmarks/measured/cpu-2026-12-05c/nmg-boundary-local-probe.py RUN 64,128,256
"""
import sys, time, numpy as np, scipy.sparse as sp, scipy.sparse.linalg as spl, torch
torch.set_num_threads(1)
from sciml import datasets
from sciml.learned.nmg import load_nmg, hierarchy, NeuralMultigrid
from sciml.solvers import multigrid as mgm
from sciml.solvers.krylov_torch import pcg
run = sys.argv[1]; sizes = [int(s) for s in sys.argv[2].split(",")]
net = load_nmg(f"benchmarks/results/precond-full2/runs/{run}")[0]
for n in sizes:
    A, b, _ = datasets.system("condiff", resolution=n, seed=1, variance=2.0); A = sp.csr_matrix(A)
    N = A.shape[0]; m = int(round(N ** 0.5)); shape = (m, m)
    with torch.no_grad():
        mg, notes = hierarchy(mgm.stencils([A], shape), net, 1)
        nmg = NeuralMultigrid(mg, net, notes=notes)
        reach = mg.interpolated_constant().reshape(-1).numpy()
        bt = torch.from_numpy(b.reshape(1, *shape))
        line = f"n={n} local {int((reach < 0.95).sum())}"
        for name, B in (("nmg", nmg), ("mg", mg)):
            for thr in (0.0, 0.95):
                idx = np.nonzero(reach < thr)[0]
                lu = spl.splu(A[idx][:, idx].tocsc()) if len(idx) else None
                def S(r):
                    x = np.zeros_like(r)
                    if lu is not None: x[idx] = lu.solve(r[idx])
                    return x
                def M(rt):
                    r = rt.reshape(-1).numpy()
                    x = S(r)
                    x = x + B(torch.from_numpy((r - A @ x).reshape(1, *shape))).reshape(-1).numpy()
                    x = x + S(r - A @ x)
                    return torch.from_numpy(x.reshape(1, *shape))
                out = pcg(mg.matvec, bt, 1e-8, 200, None, M)
                line += f" | {name} thr={thr} {int(out.iterations[0])}"
        print(line, flush=True)
