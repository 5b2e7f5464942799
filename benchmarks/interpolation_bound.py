"""How much a better interpolation could give the multigrid cycle: the two-grid convergence factor
of the structured multigrid's coarse space (Dendy's black-box interpolation, Galerkin coarse
matrix) against the best interpolation with the same sparsity, for a few sweep counts.

Why: the neural multigrid (``sciml.learned.nmg``) learns a smoother. With 8x the classical
sweeps, PCG with the classical cycle still takes 5-6 iterations where the 0.6x target of
issue 19 allows 4-5 (``benchmarks/precond.py``, "smoothing limit"), so the error left is what
the coarse space misses. This script asks whether a learned *interpolation* (the next learned
component) could remove it, without training a network: on one small system it makes every
nonzero weight of the interpolation ``P`` a free parameter and minimises the two-grid factor
directly (coarse points keep their identity rows). That is an upper bound of what any network predicting those weights could reach on
that system (it sees the system it is tuned on).

The two-grid error propagator with ``nu`` multicolour Gauss-Seidel sweeps per side,

    E = S_b^nu (I - P (P^T A P)^-1 P^T A) S_f^nu,

is self-adjoint in the A inner product; its spectrum is that of ``L^T E L^-T`` (``A = L L^T``),
computed densely (``eigvalsh``). The loss is a smooth maximum of the top 20 eigenvalues, Adam
on the ``P`` entries inside Dendy's sparsity pattern (300 steps). Dense: 16^2 unknowns by default.

    python benchmarks/interpolation_bound.py --quick      # 8^2, seconds
    python benchmarks/interpolation_bound.py              # 16^2, about a minute on one core
    python benchmarks/interpolation_bound.py --nmg-runs benchmarks/results/precond-full2/runs

``--nmg-runs DIR`` adds, per family with a trained run ``DIR/<family>-nmg*``, the rows of the
neural multigrid's smoother (one sweep per side and the learned steps, ``sciml.learned.nmg``)
in place of the classical sweeps.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from precond import FAMILIES  # noqa: E402  (benchmarks/precond.py)
from solvers import add_row, markdown_report, write_report  # noqa: E402

from sciml import datasets  # noqa: E402
from sciml.learned import nmg  # noqa: E402
from sciml.solvers import multigrid as mgm  # noqa: E402

SWEEPS = (1, 2, 8)
STEPS = 300


def _probe(fn, m: int) -> torch.Tensor:
    """The dense matrix of the linear map ``fn`` on ``R^m`` (columns ``fn(e_j)``)."""
    eye = torch.eye(m, dtype=torch.float64)
    return torch.stack([fn(eye[j]) for j in range(m)], 1)


class TwoGrid:
    """Dense two-grid analysis of the system ``A`` on an ``n x n`` grid with ``nu`` sweeps per side."""

    def __init__(self, A, n: int, nu: int, net: "nmg.SmootherNet | None" = None):
        self.mg = mg = mgm.Multigrid(mgm.stencils([A]), presmooth=nu, coarsest=(n // 2) ** 2)
        assert len(mg.levels) == 2
        self.level = level = mg.levels[0]
        inner = mgm._interior(2)
        N, Nc = n * n, (n // 2) ** 2
        self.A = torch.from_numpy(A.toarray())
        self.P0 = _probe(lambda e: mgm.prolong(level, e.reshape(1, n // 2, n // 2))[inner].reshape(-1), Nc)
        zero = torch.zeros(1, n, n, dtype=torch.float64)

        def sweeps(e, reverse):
            u = level.padded()
            u[inner] = e.reshape(1, n, n)
            for _ in range(nu):
                level.smooth(u, zero, reverse=reverse)
            return u[inner].reshape(-1)

        self.Sf = _probe(lambda e: sweeps(e, False), N)
        self.Sb = _probe(lambda e: sweeps(e, True), N)
        self.cycle = mg
        if net is not None:  # the neural cycle's smoothing: sweeps, then H_1 .. H_s; the adjoint after
            self.cycle = cycle = nmg.NeuralMultigrid(mg, net)
            eye = torch.eye(N, dtype=torch.float64)
            for i in range(net.config.stages):
                H = _probe(lambda e: cycle.smoother(0, e.reshape(1, n, n), i).reshape(-1), N)
                self.Sf = (eye - H @ self.A) @ self.Sf
                self.Sb = self.Sb @ (eye - H @ self.A)
        odd = torch.arange(n) % 2 == 1  # the coarse points are the fine points (odd, odd), see mgm.prolong
        self.coarse_rows = (odd[:, None] & odd[None, :]).reshape(-1)
        self.L = torch.linalg.cholesky(self.A)
        self.Linv_T = torch.linalg.inv(self.L.T)
        self.N = N

    def spectrum(self, P: torch.Tensor) -> torch.Tensor:
        """Eigenvalues (ascending) of the two-grid error propagator with interpolation ``P``."""
        A = self.A
        C = torch.eye(self.N, dtype=torch.float64) - P @ torch.linalg.solve(P.T @ A @ P, P.T @ A)
        Es = self.L.T @ (self.Sb @ C @ self.Sf) @ self.Linv_T
        return torch.linalg.eigvalsh(0.5 * (Es + Es.T))

    def optimise(self, steps: int = STEPS, lr: float = 3e-3) -> torch.Tensor:
        """The spectrum with the best interpolation of Dendy's sparsity found by Adam."""
        mask = (self.P0 != 0).to(torch.float64)
        mask[self.coarse_rows] = 0.0  # coarse points keep their identity row: only the F-point weights move
        delta = torch.zeros_like(self.P0, requires_grad=True)
        opt = torch.optim.Adam([delta], lr=lr)
        best = self.spectrum(self.P0).detach()
        for _ in range(steps):
            ev = self.spectrum(self.P0 + mask * delta)
            if float(ev[-1].detach()) < float(best[-1]):
                best = ev.detach()
            loss = torch.logsumexp(200 * ev[-20:], 0) / 200
            opt.zero_grad()
            loss.backward()
            opt.step()
        return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="8^2 unknowns, 100 steps (seconds)")
    parser.add_argument("--n", type=int, default=16, help="unknowns per axis (even)")
    parser.add_argument("--families", default=",".join(FAMILIES))
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/interpolation-bound.md"))
    parser.add_argument("--nmg-runs", type=Path, default=None,
                        help="folder of trained nmg runs named <family>-nmg*: adds the learned smoothers' rows")
    args = parser.parse_args()
    n, steps = (8, 100) if args.quick else (args.n, STEPS)
    torch.set_num_threads(1)
    families = [f.strip() for f in args.families.split(",") if f.strip()]
    unknown = [f for f in families if f not in FAMILIES]
    if unknown:
        parser.error(f"unknown family {unknown}; choose from {list(FAMILIES)}")
    lines = markdown_report(
        f"Two-grid factor: Dendy's interpolation vs the best interpolation of its sparsity ({n}^2 unknowns)",
        f"one system per family (seed 1), {steps} Adam steps on the free interpolation weights; factor = largest "
        "eigenvalue of the two-grid error propagator (A-norm), '> 0.01' = how many eigenvalues exceed 0.01; 'check': "
        "the same factor estimated from 40 applications of the fast two-level cycle (`sciml.solvers.multigrid`) to a "
        "random error",
        ["family", "smoothing per side (sweeps, + learned run)", "Dendy: factor", "check", "Dendy: > 0.01",
         "best P: factor", "best P: > 0.01", "seconds"])
    for family in families:
        spec = FAMILIES[family]
        A, _, info = datasets.system(spec["pde"], resolution=n + spec["offset"], seed=1, **spec["params"])
        assert tuple(info["shape"]) == (n, n)
        smoothers = [(str(nu), nu, None) for nu in SWEEPS]
        if args.nmg_runs is not None:
            smoothers += [(f"1 + {Path(r).name}", 1, nmg.load_nmg(r)[0])
                          for r in sorted(args.nmg_runs.glob(f"{family}-nmg*")) if (r / "run.json").exists()]
        for label, nu, net in smoothers:
            t0 = time.perf_counter()
            tg = TwoGrid(A, n, nu, net)
            with torch.no_grad():
                dendy = tg.spectrum(tg.P0)
            check = float(nmg.convergence_factor(tg.cycle, cycles=40)[0])
            best = tg.optimise(steps)
            add_row(lines, [family, label, f"{float(dendy[-1]):.4f}", f"{check:.4f}", int((dendy > 0.01).sum()),
                            f"{float(best[-1]):.4f}", int((best > 0.01).sum()), f"{time.perf_counter() - t0:.0f}"])
    write_report(args.out, lines)


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
