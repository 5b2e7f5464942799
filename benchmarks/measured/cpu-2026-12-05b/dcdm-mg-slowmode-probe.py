"""Probe (2026-12-05, 2-core AMD EPYC); results in dcdm-cycle-probes.md, section 5."""
import sys, numpy as np, scipy.sparse as sp, torch
torch.set_num_threads(2)
from sciml import datasets
from sciml.learned.dcdm import load_dcdm
from sciml.learned.dcdm_mg import CycleDirection
net = load_dcdm("benchmarks/results/dcdm-cpu3d/runs/obstacles-dcdm-plain-16-32u2-s32")[0]
for n in (32, 128):
    A, b, info = datasets.system("poisson3d", resolution=n, seed=101)
    A = sp.csr_matrix(A)
    solid = info["inputs"]["mask"].reshape(n,n,n) > 0.5
    for name, cd in (("classical", CycleDirection(A, None, (n,n,n))), ("dcdm-mg", CycleDirection.for_matrix(net, A))):
        e = np.random.default_rng(0).standard_normal(n**3) * (~solid.ravel())
        norms = []
        for k in range(12):
            e = e - cd(A @ e); norms.append(np.sqrt(e @ (A @ e)))
        E = np.abs(e.reshape(n,n,n)); i,j,k = np.unravel_index(np.argmax(E), E.shape)
        big = E > 0.3*E.max()
        dist = np.array(np.nonzero(big)).T
        # distance of large-error cells to the nearest solid cell and to the domain boundary
        import scipy.ndimage as ndi
        dsolid = ndi.distance_transform_edt(~solid)
        dbound = np.minimum.reduce([dist.min(1)+1, (n - dist).min(1)])
        print(f"n={n} {name}: factors {[round(norms[t+1]/norms[t],3) for t in range(6,11)]}, >30%: {big.sum()} cells, "
              f"median distance to solid {np.median(dsolid[big]):.1f}, to boundary {np.median(dbound):.1f}, bbox span {dist.max(0)-dist.min(0)}", flush=True)
