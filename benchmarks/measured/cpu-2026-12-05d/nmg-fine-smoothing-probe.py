"""Probe (2026-12-05, 2-core AMD EPYC): is the finest level's smoothing what limits nmg at contrast 1e5
and 1024^2? The trained cycle with its finest-level smoothing (sweeps + learned stages) repeated x2, or
with 2 / 4 Gauss-Seidel sweeps there: PCG iterations, residual history, cycle factor.
    python benchmarks/measured/cpu-2026-12-05d/nmg-fine-smoothing-probe.py 1024 nmg3c3
"""
import sys, numpy as np, torch
import torch.nn.functional as F
from sciml import datasets
from sciml.learned import nmg
from sciml.solvers import multigrid as mgm
torch.set_num_threads(2)
R="benchmarks/results/precond-full2/runs/"

class Fine(nmg.NeuralMultigrid):
    fine_repeats, fine_sweeps = 1, 1
    def _cycle(self, l, f):
        mg = self.mg; level = mg.levels[l]
        if l == len(mg.levels) - 1:
            return torch.cholesky_solve(f.reshape(level.B, -1, 1), mg.coarse_factor).reshape(f.shape)
        inner = mgm._interior(level.dim); pad = (1, 1) * level.dim
        u = level.padded()
        repeats = self.fine_repeats if l == 0 else self.coarse_repeats
        sweeps = self.fine_sweeps if l == 0 else mg.presmooth
        stages = range(self.net.config.stages)
        for _ in range(repeats):
            for _ in range(sweeps):
                u = level.smooth(u, f)
            r = f - level.matvec(u)
            for i in stages:
                du = F.pad(self.smoother(l, r, i), pad); u, r = u + du, r - level.matvec(du)
        u = u + mgm.prolong(level, self._cycle(l + 1, mgm.restrict(level, r)))
        for _ in range(repeats):
            for i in reversed(stages):
                u = u + F.pad(self.smoother(l, f - level.matvec(u), i), pad)
            for _ in range(sweeps):
                u = level.smooth(u, f, reverse=True)
        return u[inner].contiguous()

for n in [int(a) for a in sys.argv[1].split(",")]:
    A,b,info=datasets.system("condiff",resolution=n,seed=1,variance=2.0)
    S=mgm.stencils([A],(n,n))
    bt=torch.from_numpy(np.asarray(b,dtype=np.float64)).reshape(1,n,n)
    for v in sys.argv[2].split(","):
        net=nmg.load_nmg(R+f"condiff-high-{v}-100x400")[0]
        for fr, fs in [(1,1),(2,1),(1,2),(1,4)]:
            with torch.no_grad():
                cyc=Fine(nmg.hierarchy(S,net)[0],net); cyc.fine_repeats, cyc.fine_sweeps = fr, fs
                o,_=cyc.solve(bt,1e-8,200)
                fac=float(nmg.convergence_factor(cyc,cycles=12)[0])
            print(n,v,f"fine x{fr} sweeps {fs}",o.iterations.tolist(),f"factor {fac:.4f}"," ".join(f"{float(r):.1e}" for r in o.residuals[:,0]/o.residuals[0,0]),flush=True)
