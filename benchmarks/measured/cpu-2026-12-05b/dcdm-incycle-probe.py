"""Probe (2026-12-05, 2-core AMD EPYC, alone on the machine): fine-tune the DCDM network *inside*
the multigrid cycle of ``dcdm-mg`` (the loss: DCDM's residual after one exact line search along
the cycle's direction, differentiated through the cycle: Gauss-Seidel, network step, classical
coarse correction, network step, Gauss-Seidel), at 32^3 on the 32 training geometries of
``benchmarks/dcdm.py``, from ``dcdm-plain-16-32u2``; then evaluate ``dcdm-mg`` with it.

    python benchmarks/measured/cpu-2026-12-05b/dcdm-incycle-probe.py SECONDS LR OUT [LEVELS]

LEVELS fixes the network's pooling depth (``DCDMConfig.levels``) in training and evaluation (a
smaller receptive field: at 32^3 the network can then not act on the whole domain).
"""
import sys, time, json, numpy as np, scipy.sparse as sp, torch
from sciml import datasets
from sciml.learned.dcdm import (DCDMTrainOptions, _training_matrices, _training_system, _draw, load_dcdm, dcdm_solve)
from sciml.learned.dcdm_mg import CycleDirection
from sciml.runs import save_network
from sciml.config import to_dict
from sciml.solvers import multigrid as mgm
torch.set_num_threads(2)
seconds, lr, out = float(sys.argv[1]), float(sys.argv[2]), sys.argv[3]
K = 8
RUN = "benchmarks/results/dcdm-cpu3d/runs/obstacles-dcdm-plain-16-32u2-s32"
net, meta = load_dcdm(RUN)
if len(sys.argv) > 4:
    import dataclasses
    net.config = dataclasses.replace(net.config, levels=int(sys.argv[4]))
opts = DCDMTrainOptions(pde="poisson3d", resolution=32, n_systems=32, seed=0, batch_size=K, lr=lr, val_vectors=4)
systems = []
for i, (A, shape) in enumerate(_training_matrices(opts)):
    At, shape, fluid, features, gen, val = _training_system(A, shape, i, opts, net.config, "cpu")
    mg = mgm.Multigrid(mgm.stencils([A], shape))
    systems.append((mg, shape, fluid.reshape(1, 1, *shape), gen, At))


def batch(mg, k):
    for lv in mg.levels:
        lv.B = k


def cycle(mg, fluid, f):
    """The dcdm-mg cycle for the batch ``f`` (k, *shape), differentiable in the network."""
    k = f.shape[0]
    dims = tuple(range(1, f.dim()))
    n = f[0].numel()

    def step(x):
        res = f - mg.matvec(x)
        inp = (res * (n ** 0.5) / res.flatten(1).norm(dim=1).clamp_min(1e-30).reshape(k, *(1,) * len(dims))).float()
        q = net(inp.unsqueeze(1), fluid.expand(k, 1, *f.shape[1:]), None).squeeze(1).double() * fluid[:, 0].double()
        Aq = mg.matvec(q)
        a = (q * res).sum(dims) / (q * Aq).sum(dims).clamp_min(1e-30)
        return x + a.reshape(k, *(1,) * len(dims)) * q

    x = mg.smooth(f)
    x = step(x)
    x = x + mg.coarse_correction(f - mg.matvec(x))
    x = step(x)
    return mg.smooth(f, x, reverse=True)


def loss_of(mg, fluid, r):
    p = cycle(mg, fluid, r)
    Ap = mg.matvec(p)
    dims = tuple(range(1, r.dim()))
    a = (p * r).sum(dims) / (p * Ap).sum(dims)
    res = r - a.reshape(-1, *(1,) * len(dims)) * Ap
    return (res ** 2).sum(dims).mean()


net.train()
opt = torch.optim.Adam(net.parameters(), lr=lr)
rng = np.random.default_rng([0, 2023])
t0, step, log = time.perf_counter(), 0, []
while time.perf_counter() - t0 < seconds:
    mg, shape, fluid, gen, At = systems[step % len(systems)]
    batch(mg, K)
    r = _draw(gen, At, K, rng, "cpu").double().T.reshape(K, *shape)
    loss = loss_of(mg, fluid, r)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    f = min(1.0, (time.perf_counter() - t0) / seconds)
    opt.param_groups[0]["lr"] = lr * (0.01 + 0.99 * 0.5 * (1 + np.cos(np.pi * f)))
    step += 1
    log.append(loss.item())
    if step % 10 == 0:
        print(f"step {step} loss {np.mean(log[-10:]):.3e} {time.perf_counter() - t0:.0f}s", flush=True)
net.eval()
save_network(out, "dcdm", to_dict(net.config), net, extra={**{k: v for k, v in meta.items() if k not in ("kind", "config", "format", "sciml_version", "saved")},
             "steps": step, "seconds": time.perf_counter() - t0, "incycle": {"lr": lr, "batch": K, "init": RUN}})
for n, seeds in ((32, (100, 101)), (64, (100,)), (128, (100, 101))):
    for seed in seeds:
        A, b, _ = datasets.system("poisson3d", resolution=n, seed=seed)
        A = sp.csr_matrix(A)
        t = time.time()
        r = dcdm_solve(A, b, CycleDirection.for_matrix(net, A), tol=1e-6, memory=None, maxiter=300)
        print(f"n={n} seed={seed} dcdm-mg {r.iterations} ({time.time() - t:.0f}s)", flush=True)
