"""Probe (2026-12-05, 2-core AMD EPYC, alone on the machine): does a coarse space make DCDM's
iteration count size-independent on the 3-D obstacles?

Deflated conjugate directions (Saad, Yeung, Erhel & Guyomarc'h 2000; Nicolaides 1987): ``Z`` holds
one indicator vector per ``B^3`` block of cells (fluid cells only), ``E = Z^T A Z`` is factorised
once, the start is ``x0 = Z E^-1 Z^T b`` and every search direction (the network's, or IC(0)'s) is
projected ``p <- p - Z E^-1 (A Z)^T p`` before the usual A-orthogonalisation (all previous
directions for DCDM, the previous one for PCG-IC(0)), so the residual stays orthogonal to ``Z``.
B = 0: no deflation. Unseen geometry seed 100, relative residual 1e-6.

    python benchmarks/measured/cpu-2026-12-05/dcdm-deflation-probe.py \
        obstacles-dcdm-plain-16-32u2-s32,obstacles-dcdm-plain-16-s16 32,64 4,8
    python benchmarks/measured/cpu-2026-12-05/dcdm-deflation-probe.py obstacles-dcdm-plain-16-32u2-s32 128 4,8

(the runs are ``benchmarks/dcdm.py``'s, in ``benchmarks/results/dcdm-cpu3d/runs``; results in
``dcdm-deflation-probe.md``)
"""
import sys, time, numpy as np, scipy.sparse as sp, scipy.sparse.linalg as spl, torch
from sciml import datasets
from sciml.learned.dcdm import load_dcdm, Direction, dcdm_solve, fluid_rows
from sciml.solvers.linear import classical_preconditioner
torch.set_num_threads(2)

def coarse(A, n, B):
    fl = fluid_rows(A)
    idx = np.arange(n**3).reshape(n, n, n)
    i, j, k = np.unravel_index(np.arange(n**3), (n, n, n))
    m = n // B
    blk = (i // B) * m * m + (j // B) * m + (k // B)
    rows = np.nonzero(fl)[0]
    Z = sp.csr_matrix((np.ones(len(rows)), (rows, blk[rows])), shape=(n**3, m**3))
    keep = np.asarray(Z.sum(0)).ravel() > 0
    Z = sp.csr_matrix(Z[:, keep])
    AZ = sp.csr_matrix(A @ Z)
    E = sp.csc_matrix(Z.T @ AZ)
    lu = spl.splu(E)
    return Z, AZ, lu

class Defl:
    def __init__(s, A, n, B): s.Z, s.AZ, s.lu = coarse(A, n, B)
    def x0(s, b): return s.Z @ s.lu.solve(s.Z.T @ b)
    def proj(s, p): return p - s.Z @ s.lu.solve(s.AZ.T @ p)

def solve(A, b, direction, defl, tol=1e-6, maxiter=300, memory=None):
    x = defl.x0(b) if defl else np.zeros_like(b)
    nb = np.linalg.norm(b); r = b - A @ x; dirs = []; it = 0
    while np.linalg.norm(r) / nb > tol and it < maxiter:
        p = direction(r)
        if defl: p = defl.proj(p)
        for pj, Apj, pAp in dirs: p = p - (p @ Apj) / pAp * pj
        Ap = A @ p; pAp = p @ Ap
        x = x + (p @ r) / pAp * p; r = b - A @ x
        dirs.append((p, Ap, pAp))
        if memory: dirs = dirs[-memory:]
        it += 1
    return it, np.linalg.norm(r) / nb

runs = sys.argv[1].split(",")
sizes = [int(s) for s in sys.argv[2].split(",")]
blocks = [int(s) for s in sys.argv[3].split(",")]
nets = {r: load_dcdm(f"benchmarks/results/dcdm-cpu3d/runs/{r}")[0] for r in runs}
for n in sizes:
    A, b, _ = datasets.system("poisson3d", resolution=n, seed=100)
    A = sp.csr_matrix(A)
    ic = classical_preconditioner(A, "ic")
    for B in [0] + blocks:
        t = time.time(); d = Defl(A, n, B) if B else None; ts = time.time() - t
        line = f"n={n} B={B} setup {ts:.1f}s"
        it, res = solve(A, b, ic, d, memory=1); line += f" | ic {it}"
        for r, net in nets.items():
            t = time.time(); it, res = solve(A, b, Direction.for_matrix(net, A), d); line += f" | {r[10:]} {it} ({time.time()-t:.0f}s)"
        print(line, flush=True)
