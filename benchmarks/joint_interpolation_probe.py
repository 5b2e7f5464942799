"""Probe for the neural multigrid's next learned component: learn the interpolation together with
the smoother.

``benchmarks/interpolation_bound.py`` shows that, with the trained NMG smoothers, even the best
interpolation of Dendy's sparsity lowers the two-grid factor only 1.2-1.7x: those smoothers were
trained with Dendy's interpolation fixed and leave a broad band of error. This probe trains, on
the two-grid cycle of ``N`` unseen-size systems, a small CNN that corrects Dendy's interpolation
weights (every offset of every fine class, so the Galerkin coarse stencils stay 9-point), alone
or jointly with the NMG smoother network, and reports the held-out two-grid factor. The probe
led to ``sciml train nmg --set interpolation=learned``, which learns the same correction on
every level of the V-cycle; it now uses the package's network (``SmootherNet.interp``) and its
transfers (out of place when the weights require gradients).

The two-grid cycle (exact coarse solve, dense Cholesky of the Galerkin matrix) is

    Gauss-Seidel, H_1 .. H_s, coarse correction with P, H_s .. H_1, reverse Gauss-Seidel,

the NMG cycle on two levels; the loss is the NMG training loss (mean log energy reduction of the
last of 4 cycles applied to random errors); the factor is the energy-norm convergence per cycle
over the last 6 of 12 cycles (``sciml.learned.nmg.convergence_factor``'s definition).

Modes: ``interpolation`` (the CNN on P, smoother frozen), ``smoother`` (the smoother alone,
fine-tuned on the same loss: the control), ``joint`` (both).

    python benchmarks/joint_interpolation_probe.py --run RUN --family darcy --quick
    python benchmarks/joint_interpolation_probe.py --run benchmarks/results/precond-full2/runs/darcy-nmg2-100x400 \\
        --family darcy --steps 150
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from precond import FAMILIES  # noqa: E402  (benchmarks/precond.py)
from solvers import add_row, markdown_report, write_report  # noqa: E402

from sciml import datasets  # noqa: E402
from sciml.learned import nmg  # noqa: E402
from sciml.learned.neural_precond import load_matrices  # noqa: E402
from sciml.solvers import multigrid as mgm  # noqa: E402

MODES = ("interpolation", "smoother", "joint")


def prolong(level: mgm.Level, coarse: torch.Tensor, weights: dict) -> torch.Tensor:
    """``P e`` (zero-padded) with interpolation ``weights`` (out of place when they require gradients)."""
    level.weights = weights
    return mgm.prolong(level, coarse)


def restrict(level: mgm.Level, r: torch.Tensor, weights: dict) -> torch.Tensor:
    """``P^T r`` with interpolation ``weights``."""
    level.weights = weights
    return mgm.restrict(level, r)


def with_interpolation(run: str) -> nmg.SmootherNet:
    """The trained smoother of ``run`` with a learned interpolation added (zero correction at first)."""
    smoother = nmg.load_nmg(run)[0]
    config = dataclasses.replace(smoother.config, interpolation="learned")
    net = nmg.SmootherNet(config)
    net.body.load_state_dict(smoother.body.state_dict())
    return net.double()


class TwoGrid:
    """The NMG cycle on two levels with interpolation ``weights`` and an exact coarse solve."""

    def __init__(self, S: torch.Tensor, smoother: nmg.SmootherNet, interp: nmg.SmootherNet | None):
        self.level = level = mgm.Level(S)
        self.nmg = nmg.NeuralMultigrid(mgm.Multigrid(S, coarsest=math.prod(mgm.coarse_shape(level.shape))), smoother,
                                       grad=torch.is_grad_enabled())
        self.W = interp.interpolation_weights(level) if interp is not None else nmg.dendy_all_offsets(level)
        cshape = mgm.coarse_shape(level.shape)
        eye = torch.eye(math.prod(cshape), dtype=S.dtype)
        cols = [restrict(level, level.matvec(prolong(level, eye[j].reshape(1, *cshape).expand(level.B, *cshape), self.W)),
                         self.W).reshape(level.B, -1) for j in range(eye.shape[0])]
        Ac = torch.stack(cols, 2)
        self.L = torch.linalg.cholesky(0.5 * (Ac + Ac.transpose(1, 2)))

    def matvec(self, x: torch.Tensor) -> torch.Tensor:
        u = self.level.padded()
        u[mgm._interior(self.level.dim)] = x
        return self.level.matvec(u)

    def __call__(self, f: torch.Tensor) -> torch.Tensor:
        level, pad = self.level, (1, 1) * self.level.dim
        stages = range(self.nmg.net.config.stages)
        u = level.padded()
        level.smooth(u, f)
        r = f - level.matvec(u)
        for i in stages:
            du = F.pad(self.nmg.smoother(0, r, i), pad)
            u, r = u + du, r - level.matvec(du)
        rc = restrict(level, r, self.W)
        u = u + prolong(level, torch.cholesky_solve(rc.reshape(level.B, -1, 1), self.L).reshape(rc.shape), self.W)
        for i in reversed(stages):
            u = u + F.pad(self.nmg.smoother(0, f - level.matvec(u), i), pad)
        u = u.clone()
        level.smooth(u, f, reverse=True)
        return u[mgm._interior(level.dim)]

    def propagate(self, e: torch.Tensor) -> torch.Tensor:
        return e - self(self.matvec(e))

    def energy(self, e: torch.Tensor) -> torch.Tensor:
        return (e * self.matvec(e)).flatten(1).sum(1)

    def factor(self, cycles: int = 12) -> float:
        gen = torch.Generator().manual_seed(0)
        e = torch.randn((self.level.B, *self.level.shape), generator=gen, dtype=torch.float64)
        with torch.no_grad():
            for k in range(cycles):
                e = self.propagate(e)
                if k == cycles // 2 - 1:
                    half = self.energy(e)
        return float(((self.energy(e) / half) ** (0.5 / (cycles - cycles // 2))).mean())


def probe(mode: str, S_train, S_val, run: str, steps: int, batch: int, seed: int = 0) -> dict:
    smoother = with_interpolation(run)
    interp = smoother if mode != "smoother" else None
    params = list(smoother.interp.parameters()) if interp is not None else []
    for p in smoother.body.parameters():
        p.requires_grad_(mode != "interpolation")
    if mode != "interpolation":
        params += list(smoother.body.parameters())
    with torch.no_grad():
        before = TwoGrid(S_val, smoother, interp).factor()
    opt = torch.optim.Adam(params, lr=1e-3 if mode == "joint" else 3e-3)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps, eta_min=3e-5)
    gen = torch.Generator().manual_seed(seed)
    t0 = time.perf_counter()
    for _ in range(steps):
        idx = torch.randperm(len(S_train), generator=gen)[:batch]
        tg = TwoGrid(S_train[idx], smoother, interp)
        e = torch.randn((len(idx), *S_train.shape[2:]), generator=gen, dtype=torch.float64)
        for _ in range(4):
            prev, e = e, tg.propagate(e)
        loss = (0.5 * (tg.energy(e) / tg.energy(prev)).log()).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        schedule.step()
    with torch.no_grad():
        after = TwoGrid(S_val, smoother, interp).factor()
    return {"mode": mode, "before": before, "after": after, "seconds": time.perf_counter() - t0}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", required=True, help="a trained nmg run (sciml train nmg)")
    parser.add_argument("--family", default="darcy", choices=list(FAMILIES))
    parser.add_argument("--n", type=int, default=32, help="unknowns per axis of the probe's systems")
    parser.add_argument("--samples", type=int, default=48, help="systems: the last 8 are held out")
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument("--quick", action="store_true", help="16^2, 16 systems, 10 steps (seconds)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/joint-interpolation.md"))
    args = parser.parse_args()
    if args.quick:
        args.n, args.samples, args.steps = 16, 16, 10
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if set(modes) - set(MODES):
        parser.error(f"unknown mode {sorted(set(modes) - set(MODES))}; choose from {list(MODES)}")
    torch.set_num_threads(2)
    spec = FAMILIES[args.family]
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "probe.h5"
        datasets.generate(spec["pde"], n=args.samples, resolution=args.n + spec["offset"], seed=0, out=data,
                          progress=False, **spec["params"])
        matrices, shape, _ = load_matrices(data, None)
    S = mgm.stencils(matrices, shape)
    S_train, S_val = S[:-8], S[-8:]
    lines = markdown_report(
        f"Learning the interpolation with the NMG smoother: two-grid probe ({args.family}, {args.n}^2)",
        f"smoother network: `{args.run}`; {len(S_train)} training and 8 held-out systems (seed 0); {args.steps} Adam "
        "steps, batch 8, cosine schedule; factor: held-out two-grid energy-norm convergence factor per cycle (mean "
        "over the 8 systems)",
        ["trained", "factor before", "factor after", "change", "seconds"])
    for mode in modes:
        r = probe(mode, S_train, S_val, args.run, args.steps, batch=8)
        add_row(lines, [mode, f"{r['before']:.4f}", f"{r['after']:.4f}", f"{100 * (r['after'] / r['before'] - 1):+.0f} %",
                        f"{r['seconds']:.0f}"])
    write_report(args.out, lines)


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
