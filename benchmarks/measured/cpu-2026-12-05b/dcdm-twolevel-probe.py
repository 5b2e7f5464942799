"""Probe (2026-12-05, 2-core AMD EPYC): the DCDM network as the fine-level smoother of the
multigrid cycle, with the classical V-cycle below it as the coarse correction.

Direction for residual r (x from 0): `pre` Gauss-Seidel sweeps; one network step
x += a q, q = f(r - A x), a the exact A-line search; the classical V-cycle of levels >= 1 on the
restricted residual (coarse correction, multiplicative); one network step; `pre` reversed sweeps.
Then DCDM's A-orthogonalisation against all previous directions (the network is nonlinear).
Unseen geometry seed 100, relative residual 1e-6.

    python benchmarks/measured/cpu-2026-12-05b/dcdm-twolevel-probe.py RUN 32,64,128
"""
import sys, time, numpy as np, scipy.sparse as sp, torch
from sciml import datasets
from sciml.learned.dcdm import load_dcdm, Direction, dcdm_solve
from sciml.solvers import multigrid as mgm
torch.set_num_threads(2)


def conj_dirs(A, b, direction, tol=1e-6, maxiter=300):
    """DCDM's iteration, all directions kept (``sciml.learned.dcdm.dcdm_solve``): (iterations, residual)."""
    r = dcdm_solve(A, b, direction, tol=tol, maxiter=maxiter, memory=None)
    return r.iterations, r.residual


def _mv(c, v):
    ep = c.padded(); ep[:, 1:-1, 1:-1, 1:-1] = v
    return c.matvec(ep)


class TwoLevel:
    def __init__(self, A, n, net, pre=1, net_steps=1, coarse=1, net_post=True, post=None):
        self.A, self.n, self.pre, self.net_steps, self.coarse = A, n, pre, net_steps, coarse
        self.net_post, self.post = net_post, pre if post is None else post
        self.mg = mgm.Multigrid(mgm.stencils([A], (n, n, n)))
        self.f = Direction.for_matrix(net, A) if net is not None else None

    def net_step(self, x, r_full):
        r = r_full - self.A @ x
        q = self.f(r)
        Aq = self.A @ q
        return x + (q @ r) / (q @ Aq) * q

    def __call__(self, r):
        mg, lev, n = self.mg, self.mg.levels[0], self.n
        f = torch.from_numpy(r.reshape(1, n, n, n))
        u = lev.padded()
        for _ in range(self.pre): u = lev.smooth(u, f)
        x = u[:, 1:-1, 1:-1, 1:-1].reshape(-1).numpy().copy()
        if self.f is not None:
            for _ in range(self.net_steps): x = self.net_step(x, r)
        rr = torch.from_numpy((r - self.A @ x).reshape(1, n, n, n))
        rc = mgm.restrict(lev, rr)
        e = mg._cycle(1, rc)
        for _ in range(self.coarse - 1):  # more V-cycles on level 1 (coarse = 0: exact, by PCG)
            c = mg.levels[1]; ep = c.padded(); ep[:, 1:-1, 1:-1, 1:-1] = e
            e = e + mg._cycle(1, rc - c.matvec(ep))
        if self.coarse == 0:
            e = mgm.pcg(lambda v: _mv(mg.levels[1], v), rc, 1e-10, 200, None, lambda v: mg._cycle(1, v)).x
        x = x + mgm.prolong(lev, e)[:, 1:-1, 1:-1, 1:-1].reshape(-1).numpy()
        if self.f is not None and self.net_post:
            for _ in range(self.net_steps): x = self.net_step(x, r)
        u = lev.padded(); u[:, 1:-1, 1:-1, 1:-1] = torch.from_numpy(x.reshape(1, n, n, n))
        for _ in range(self.post): u = lev.smooth(u, f, reverse=True)
        return u[:, 1:-1, 1:-1, 1:-1].reshape(-1).numpy().copy()


VARIANTS = [(v, eval(f"dict({v})")) for v in sys.argv[3].split(";")]
SEEDS = [int(s) for s in (sys.argv[4] if len(sys.argv) > 4 else "100").split(",")]
run = sys.argv[1]
sizes = [int(s) for s in sys.argv[2].split(",")]
net = load_dcdm(f"benchmarks/results/dcdm-cpu3d/runs/{run}")[0]
for n in sizes:
    for seed in SEEDS:
        A, b, _ = datasets.system("poisson3d", resolution=n, seed=seed)
        A = sp.csr_matrix(A)
        line = f"n={n} seed={seed}"
        for name, kw in [(v, dict(k)) for v, k in VARIANTS]:
            d = TwoLevel(A, n, net if kw.pop("net", True) else None, **kw)
            t = time.time(); it, res = conj_dirs(A, b, d); line += f" | {name} {it} ({time.time() - t:.0f}s)"
        print(line, flush=True)
