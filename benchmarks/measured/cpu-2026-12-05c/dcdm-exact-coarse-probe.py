"""Probe (2026-12-05, 2-core AMD EPYC): the two-level probe of ../cpu-2026-12-05b (class TwoLevel) on the
empty cube or on obstacles, with `kcycle=k`: the level-1 problem solved by k CG iterations preconditioned by
its V-cycle. Results in dcdm-kcycle-probes.md.

    python benchmarks/measured/cpu-2026-12-05c/dcdm-exact-coarse-probe.py empty|obst SEED SIZES "VARIANTS"
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
    def __init__(self, A, n, net, pre=1, net_steps=1, coarse=1, net_post=True, post=None, kcycle=0):
        self.kcycle = kcycle
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
        if self.kcycle:
            e = mgm.pcg(lambda v: _mv(mg.levels[1], v), rc, 1e-30, self.kcycle, None, lambda v: mg._cycle(1, v)).x
        if self.coarse == 0:
            e = mgm.pcg(lambda v: _mv(mg.levels[1], v), rc, 1e-10, 200, None, lambda v: mg._cycle(1, v)).x
        x = x + mgm.prolong(lev, e)[:, 1:-1, 1:-1, 1:-1].reshape(-1).numpy()
        if self.f is not None and self.net_post:
            for _ in range(self.net_steps): x = self.net_step(x, r)
        u = lev.padded(); u[:, 1:-1, 1:-1, 1:-1] = torch.from_numpy(x.reshape(1, n, n, n))
        for _ in range(self.post): u = lev.smooth(u, f, reverse=True)
        return u[:, 1:-1, 1:-1, 1:-1].reshape(-1).numpy().copy()



n_obs = sys.argv[1]  # "empty" or "obst"
seed = int(sys.argv[2]); sizes = [int(s) for s in sys.argv[3].split(",")]
variants = [(v, eval(f"dict({v})")) for v in sys.argv[4].split(";")]
net = load_dcdm("benchmarks/results/dcdm-cpu3d/runs/obstacles-dcdm-plain-16-32u2-s32")[0]
for n in sizes:
    kw = dict(n_boxes=0, n_spheres=0) if n_obs == "empty" else {}
    A, b, _ = datasets.system("poisson3d", resolution=n, seed=seed, **kw)
    A = sp.csr_matrix(A)
    line = f"{n_obs} n={n} seed={seed}"
    for name, k in variants:
        k = dict(k); d = TwoLevel(A, n, net if k.pop("net", True) else None, **k)
        t = time.time(); it, res = conj_dirs(A, b, d); line += f" | {name} {it} ({time.time() - t:.0f}s)"
    print(line, flush=True)
