"""Probe (2026-12-05, 2-core AMD EPYC): Ritz values of the nmg-preconditioned operator B A from STEPS
Lanczos steps (PCG coefficients, random right-hand side), printed as 1 - theta (eigenvalues of E = I - B A).
    python benchmarks/measured/cpu-2026-12-05d/nmg-ritz-probe.py N VARIANCE RUN [STEPS]
"""
import os, sys, numpy as np, torch, scipy.linalg as sl
torch.set_num_threads(2)
from sciml import datasets
from sciml.learned import nmg
from sciml.solvers import multigrid as mgm
R="benchmarks/results/precond-full2/runs/"
n=int(sys.argv[1]); var=float(sys.argv[2]); run=sys.argv[3]; steps=int(sys.argv[4]) if len(sys.argv)>4 else 20
A,b,info=datasets.system("condiff",resolution=n,seed=1,variance=var)
S=mgm.stencils([A],(n,n)); net=nmg.load_nmg(R+run)[0]
with torch.no_grad():
    B=nmg.NeuralMultigrid(nmg.hierarchy(S,net)[0],net)
    dot=lambda a,c: float((a*c).sum())
    # Lanczos on B^1/2 A B^1/2 via PCG on a random rhs
    g=torch.from_numpy(np.random.default_rng(0).standard_normal((1,n,n)))
    x=torch.zeros_like(g); r=g.clone(); z=B(r); p=z.clone(); rz=dot(r,z)
    al,be=[],[]
    for k in range(steps):
        Ap=B.matvec(p); a=rz/dot(p,Ap); x=x+a*p; r=r-a*Ap; z=B(r); rzn=dot(r,z); bb=rzn/rz
        al.append(a); be.append(bb); p=z+bb*p; rz=rzn
        if rz<1e-28*dot(g,g): break
    m=len(al); d=np.zeros(m); e=np.zeros(m-1)
    for k in range(m):
        d[k]=1/al[k]+(be[k-1]/al[k-1] if k>0 else 0)
        if k<m-1: e[k]=np.sqrt(be[k])/al[k]
    th=sl.eigh_tridiagonal(d,e,eigvals_only=True)
    print(run, n, var, "steps", m, "1-ritz (sorted):", " ".join(f"{1-t:.4f}" for t in sorted(th)))
