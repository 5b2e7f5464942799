"""Probe (2026-12-05, 2-core AMD EPYC): PCG relative-residual histories of PCG-MG and nmg runs on the
benchmark's seed-1 system (ConDiff variance VAR, default 2.0; FAM=poisson for Poisson). RUNS: variant names
(condiff-high-<v>-100x400) or full run names under benchmarks/results/precond-full2/runs.
    [FAM=condiff VAR=2.0] python benchmarks/measured/cpu-2026-12-05d/nmg-residual-history-probe.py 256,1024 nmg3c3,nmg3c3pcg
"""
import sys, numpy as np, torch
from sciml import datasets
from sciml.learned import nmg
from sciml.solvers import multigrid as mgm
torch.set_num_threads(2)
R="benchmarks/results/precond-full2/runs/"
for n in [int(a) for a in sys.argv[1].split(",")]:
    import os; fam=os.environ.get("FAM","condiff"); A,b,info=datasets.system(fam,resolution=n,seed=1,**({"variance":float(os.environ.get("VAR","2.0"))} if fam=="condiff" else {}))
    S=mgm.stencils([A],(n,n))
    bt=torch.from_numpy(np.asarray(b,dtype=np.float64)).reshape(1,n,n)
    mg=mgm.Multigrid(S)
    out=mg.solve(bt,1e-8,200)
    print(n,"pcg-mg",out.iterations.tolist(), " ".join(f"{float(r):.1e}" for r in out.residuals[:,0]/out.residuals[0,0]))
    for v in sys.argv[2].split(","):
        net=nmg.load_nmg(R+(v if v.startswith(("condiff","darcy")) else f"condiff-high-{v}-100x400"))[0]
        with torch.no_grad():
            cyc=nmg.NeuralMultigrid(nmg.hierarchy(S,net)[0],net)
            o,_=cyc.solve(bt,1e-8,200)
        print(n,v,o.iterations.tolist()," ".join(f"{float(r):.1e}" for r in o.residuals[:,0]/o.residuals[0,0]))
