"""The neural multigrid (``sciml.learned.nmg``, method ``nmg:RUN``).

The fast cycle against a slow dense version built level by level (the network applied to each
level's features in an explicit loop, the learned stencils as dense matrices, the classical
cycle of ``test_multigrid.ReferenceCycle``); the cycle as a dense matrix is symmetric positive
definite (trained, random and over-scaled networks); the Lanczos guard bounds the learned step;
the fallback hands over to the classical cycle and says when; a test-sized training run at
32^2 beats the classical V-cycle at 64^2 on a held-out sample; the CLI trains and solves.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from test_cli import assert_one_line_error, run_cli
from test_multigrid import ReferenceCycle, jumping

from sciml import datasets, solvers
from sciml.errors import ConfigError
from sciml.learned import nmg
from sciml.learned.stencil_features import dense_features
from sciml.solvers import multigrid as mgm

pytestmark = pytest.mark.usefixtures("one_thread")


def random_net(scale: float, seed: int = 0, **config) -> nmg.SmootherNet:
    torch.manual_seed(seed)
    net = nmg.SmootherNet(nmg.NMGConfig(**config))
    last = net.body[-1]
    torch.nn.init.normal_(last.weight, std=scale)
    torch.nn.init.normal_(last.bias, std=scale)
    return net.double().eval()


def dense_local(W: np.ndarray, shape, offs) -> np.ndarray:
    """The matrix of ``v -> sum_k W[k, p] v[p + o_k]`` point by point."""
    n = math.prod(shape)
    M = np.zeros((n, n))
    for p in np.ndindex(*shape):
        for k, o in enumerate(offs):
            q = tuple(a + b for a, b in zip(p, o))
            if all(0 <= c < m for c, m in zip(q, shape)):
                M[np.ravel_multi_index(p, shape), np.ravel_multi_index(q, shape)] = W[(k, *p)]
    return M


class NeuralReference(ReferenceCycle):
    """The neural cycle in numpy: per level, features by a point loop, the network on them, ``H``
    as a dense matrix; classical sweeps, ``P`` and Galerkin operators of ``ReferenceCycle``."""

    def __init__(self, A, shape, coarsest, net):
        super().__init__(A, shape, coarsest)
        offs = nmg.local_offsets(net.config.dim, net.config.kernel)
        K = len(offs)
        self.H = []  # per level, the stages' dense H_i
        self.top = 0.0
        for l in range(len(self.P)):  # the explicit per-level loop over the shared network
            Al = self.A[l].toarray()
            feats = torch.from_numpy(dense_features(Al, self.shapes[l])[None]).to(next(net.parameters()).dtype)
            with torch.no_grad():
                W = net(feats)[0].double().numpy()
            dis = np.diag(1.0 / np.sqrt(np.diag(Al)))
            self.H.append([])
            for i in range(net.config.stages):
                Wd = dense_local(W[i * K:(i + 1) * K], self.shapes[l], offs)
                self.H[l].append(dis @ Wd @ Wd.T @ dis)
                self.top = max(self.top, np.linalg.eigvalsh(Wd.T @ dis @ Al @ dis @ Wd)[-1])

    def __call__(self, f, l=0):
        A = self.A[l]
        if l == len(self.P):
            return np.linalg.solve(A.toarray(), f)
        u = np.zeros_like(f)
        self.sweep(l, u, f, False)
        for H in self.H[l]:
            u += H @ (f - A @ u)
        u += self.P[l] @ self(self.P[l].T @ (f - A @ u), l + 1)
        for H in reversed(self.H[l]):
            u += H @ (f - A @ u)
        self.sweep(l, u, f, True)
        return u


def directional_derivatives(loss, params, direction, h: float = 1e-5) -> tuple[float, float]:
    """The autograd derivative of ``loss()`` along ``direction`` and its central difference (the
    parameters are restored)."""
    slope = sum(float((g * d).sum()) for g, d in zip(torch.autograd.grad(loss(), params), direction))
    with torch.no_grad():
        for q, d in zip(params, direction):
            q += h * d
        up = float(loss())
        for q, d in zip(params, direction):
            q -= 2 * h * d
        down = float(loss())
        for q, d in zip(params, direction):
            q += h * d
    return slope, (up - down) / (2 * h)


def dense_cycle(cycle, n: int) -> np.ndarray:
    """Columns ``B e_j`` of a cycle acting on ``(1, *shape)`` tensors."""
    shape = cycle.shape
    cols = [cycle(torch.eye(n, dtype=torch.float64)[j].reshape(1, *shape)).reshape(-1).numpy() for j in range(n)]
    return np.stack(cols, axis=1)


@pytest.mark.parametrize("kernel", [3, 5])
def test_local_stencil_transpose_is_the_adjoint(kernel):
    gen = torch.Generator().manual_seed(1)
    for shape in ((7, 9), (4, 5, 6)):
        offs = nmg.local_offsets(len(shape), kernel)
        W = torch.randn((2, len(offs), *shape), generator=gen, dtype=torch.float64)
        v, u = (torch.randn((2, *shape), generator=gen, dtype=torch.float64) for _ in range(2))
        lhs = (nmg.apply_local(W, v, offs) * u).sum()
        rhs = (v * nmg.apply_local_T(W, u, offs)).sum()
        assert abs(float(lhs - rhs)) <= 1e-12 * float(lhs.abs())
        dense = dense_local(W[0].numpy(), shape, offs)
        np.testing.assert_allclose(nmg.apply_local(W, v, offs)[0].reshape(-1).numpy(), dense @ v[0].reshape(-1).numpy(),
                                   atol=1e-12)


@pytest.mark.parametrize("name, make, shape, coarsest, stages", [
    ("jump-30", lambda: jumping(30), (30, 30), 10, 1),
    ("poisson-31", lambda: solvers.laplacian(31, 2), (31, 31), 10, 1),
    ("jump-30, two stages", lambda: jumping(30), (30, 30), 10, 2),
    ("jump-30, three stages", lambda: jumping(30), (30, 30), 10, 3),
])
def test_shared_weights_cycle_equals_the_explicit_per_level_loop(name, make, shape, coarsest, stages):
    A = make()
    net = random_net(0.02, seed=3, stages=stages)
    ref = NeuralReference(A, shape, coarsest, net)
    assert ref.top * nmg.MARGIN < nmg.BOUND  # the guard does not act: both sides use the raw stencils
    mg = mgm.Multigrid(mgm.stencils([A], shape), coarsest=coarsest)
    fast = nmg.NeuralMultigrid(mg, net)
    assert len(fast.local) == len(ref.P) >= 2 and not fast.notes
    f = np.random.default_rng(4).standard_normal(A.shape[0])
    want = ref(f)
    got = fast(torch.from_numpy(f).reshape(1, *shape)).reshape(-1).numpy()
    assert np.linalg.norm(got - want) <= 1e-11 * np.linalg.norm(want)


def spd_report(cycle, A) -> tuple[float, float, float]:
    """``(asymmetry, min eig(BA), max eig(BA))`` of the cycle as a dense matrix."""
    B = dense_cycle(cycle, A.shape[0])
    asym = np.abs(B - B.T).max() / np.abs(B).max()
    L = np.linalg.cholesky(A.toarray())
    ev = np.linalg.eigvalsh(L.T @ (0.5 * (B + B.T)) @ L)  # spectrum of B A
    return asym, ev[0], ev[-1]


@pytest.mark.parametrize("scale, stages, repeats, sweeps", [(0.0, 1, 1, True), (0.05, 1, 1, True), (3.0, 1, 1, True),
                                                            (0.05, 2, 1, True), (3.0, 2, 1, True), (0.05, 2, 3, True),
                                                            (0.05, 3, 1, True), (3.0, 3, 1, True), (0.05, 3, 3, False)])
def test_the_cycle_is_symmetric_positive_definite(scale, stages, repeats, sweeps):
    """Untrained (Jacobi start), small random and large random networks, one to three learned
    stages per side, the coarse levels' smoothing once or repeated (with or without its sweeps): the large networks need the
    Lanczos guard, which scales their stencils down; every cycle stays SPD with eig(BA) in (0, 1]."""
    A, _, info = datasets.system("darcy", resolution=18, seed=2)
    shape = tuple(info["shape"])
    mg = mgm.Multigrid(mgm.stencils([A], shape), coarsest=10)
    cycle = nmg.NeuralMultigrid(mg, random_net(scale, seed=5, stages=stages, repeat_sweeps=sweeps), coarse_repeats=repeats)
    asym, lo, hi = spd_report(cycle, A)
    assert asym <= 1e-12
    assert 0.0 < lo and hi <= 1.0 + 1e-10
    if scale >= 1:
        assert any("scaled by" in n for n in cycle.notes)
        for l, level in enumerate(mg.levels[:-1]):  # the guard holds exactly, not only for its estimate
            W, dis = cycle.local[l]
            offs = cycle.offs
            Al = mgm.dense_matrix(level.S[0]).numpy()
            D = np.diag(dis[0].reshape(-1).numpy())
            for i in range(stages):
                Wd = dense_local(W[0, i * len(offs):(i + 1) * len(offs)].numpy(), level.shape, offs)
                assert np.linalg.eigvalsh(Wd.T @ D @ Al @ D @ Wd)[-1] <= nmg.BOUND * 1.0001


def test_classical_coarse_repeats_is_the_neural_cycle_without_its_learned_steps():
    """The fair reference of a neural cycle with coarse_repeats=k: the classical V(1,1) cycle whose
    coarse levels sweep k times per side. With zero learned stencils the neural cycle is exactly
    that (so the two count the same classical sweeps), it differs from k=1, stays SPD, and its
    cost counts the extra sweeps."""
    A, _, info = datasets.system("condiff", resolution=31, seed=3, variance=2.0)
    shape = tuple(info["shape"])
    S = mgm.stencils([A], shape)
    zero = nmg.SmootherNet(nmg.NMGConfig(base=0.0)).double()
    with torch.no_grad():
        for p in zero.parameters():
            p.zero_()
    f = torch.randn((1, *shape), generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    c3 = mgm.Multigrid(S, coarsest=10, coarse_repeats=3)
    neural = nmg.NeuralMultigrid(mgm.Multigrid(S, coarsest=10), zero, coarse_repeats=3)
    assert len(c3.levels) >= 3
    assert torch.allclose(c3(f), neural(f), rtol=1e-12, atol=1e-14 * float(c3(f).abs().max()))
    c1 = mgm.Multigrid(S, coarsest=10)
    assert float((c3(f) - c1(f)).norm() / c1(f).norm()) > 1e-3
    # repeat_sweeps=False repeats only the learned steps: with zero stencils it is plain V(1,1)
    learned_only = nmg.SmootherNet(nmg.NMGConfig(base=0.0, coarse_repeats=3, repeat_sweeps=False)).double()
    learned_only.load_state_dict(zero.state_dict())
    v11 = nmg.NeuralMultigrid(mgm.Multigrid(S, coarsest=10), learned_only)
    assert torch.allclose(v11(f), c1(f), rtol=1e-12, atol=1e-14 * float(c1(f).abs().max()))
    asym, lo, hi = spd_report(c3, A)
    assert asym <= 1e-12 and 0.0 < lo and hi <= 1.0 + 1e-10
    # the cycle converges faster than V(1,1) on this system (energy-norm factor over 16 cycles)
    assert float(nmg.convergence_factor(c3).mean()) < float(nmg.convergence_factor(c1).mean())
    deep = mgm.Multigrid(mgm.stencils([solvers.laplacian(31, 2)]), coarsest=100)
    deep3 = mgm.Multigrid(mgm.stencils([solvers.laplacian(31, 2)]), coarsest=100, coarse_repeats=3)
    extra = 2 * 2 * 225 * (len(deep.levels[1].active) + 1)  # 2 more sweeps per side on level 1 (15^2, 9 points)
    assert (nmg.cycle_cost(deep3)["classical"] - nmg.cycle_cost(deep)["classical"]) * 961 * 5 == pytest.approx(extra)
    with pytest.raises(ConfigError, match="coarse_repeats"):
        mgm.Multigrid(S, coarse_repeats=0)


def test_cycle_cost_counts_the_operations_of_a_two_level_cycle():
    mg = mgm.Multigrid(mgm.stencils([solvers.laplacian(15, 2)]), coarsest=100)
    cost = nmg.cycle_cost(mg, local_points=9)
    # 2 sweeps + 1 residual of 5 entries on 225 points, P and P^T with 480 weights, 49^2 for the
    # coarse triangular solves; the learned steps: 2 more residuals and 4 applications of 9 points
    unit = 225 * 5
    classical = 3 * 225 * 5 + 2 * 480 + 49**2
    assert cost["classical"] == pytest.approx(classical / unit)
    assert cost["neural"] == pytest.approx((classical + 2 * 225 * 5 + 4 * 225 * 9) / unit)
    two = nmg.cycle_cost(mg, local_points=9, stages=2)
    assert two["neural"] == pytest.approx((classical + 2 * (2 * 225 * 5 + 4 * 225 * 9)) / unit)
    # coarse_repeats=3 on three levels (31^2, 15^2, 7^2 solved densely): level 1's sweeps, residual and
    # learned step run twice more; the finest level and the classical cycle do not change
    deep = mgm.Multigrid(mgm.stencils([solvers.laplacian(31, 2)]), coarsest=100)
    nnz1 = len(deep.levels[1].active) + 1
    assert nnz1 == 9  # the Galerkin operator of the 5-point Laplacian is a 9-point stencil
    once, thrice = nmg.cycle_cost(deep, local_points=9), nmg.cycle_cost(deep, local_points=9, coarse_repeats=3)
    assert thrice["classical"] == once["classical"]
    assert (thrice["neural"] - once["neural"]) * 961 * 5 == pytest.approx(2 * (3 * 225 * nnz1 + 2 * 225 * nnz1 + 4 * 225 * 9))
    # repeat_sweeps=False: only the learned steps (2 residuals, 4 stencil applications) run twice more
    learned = nmg.cycle_cost(deep, local_points=9, coarse_repeats=3, repeat_sweeps=False)
    assert (learned["neural"] - once["neural"]) * 961 * 5 == pytest.approx(2 * (2 * 225 * nnz1 + 4 * 225 * 9))


# ----------------------------------------------------------------------------- training


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A test-sized run: 16 Darcy coefficient samples at 32^2, 60 steps."""
    root = tmp_path_factory.mktemp("nmg")
    data = root / "darcy34.h5"
    datasets.generate("darcy", n=16, resolution=34, seed=0, out=data)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        summary = nmg.train_nmg(data, root / "run", progress=False, steps=60, batch_size=4, log_every=30)
    finally:
        torch.set_num_threads(threads)
    return summary


def test_training_beats_the_classical_cycle_at_a_larger_size_on_a_held_out_sample(trained):
    assert trained["val_factor"] < 0.6 * trained["classical_factor"]
    A, b, _ = datasets.system("darcy", resolution=66, seed=7)  # unseen seed, twice the training size
    nmg_out = solvers.solve(A, b, method=f"nmg:{trained['run_dir']}", tol=1e-8)
    classical = solvers.solve(A, b, method="pcg-mg", tol=1e-8)
    assert nmg_out.converged and classical.converged
    assert nmg_out.iterations <= classical.iterations - 2, (nmg_out.iterations, classical.iterations)
    assert not any("classical V-cycle finished" in n for n in nmg_out.notes)
    assert np.linalg.norm(A @ nmg_out.x - b) <= 1e-8 * np.linalg.norm(b) * 1.0001


def test_trained_cycle_is_spd_and_grid_independent(trained):
    net = nmg.load_nmg(trained["run_dir"])[0]
    A, _, info = datasets.system("darcy", resolution=20, seed=9)
    mg = mgm.Multigrid(mgm.stencils([A], tuple(info["shape"])), coarsest=10)
    asym, lo, hi = spd_report(nmg.NeuralMultigrid(mg, net), A)
    assert asym <= 1e-12 and 0.0 < lo and hi <= 1.0 + 1e-10
    factors = []
    for n in (64, 128, 256):
        A, _, _ = datasets.system("darcy", resolution=n + 2, seed=1)
        factors.append(float(nmg.convergence_factor(nmg.NeuralMultigrid(mgm.Multigrid(mgm.stencils([A])), net))))
    assert max(factors) < 0.15 and max(factors) <= 1.5 * min(factors), factors


# ----------------------------------------------------------------------------- learned interpolation


def learned_net(scale: float, seed: int = 0, **config) -> nmg.SmootherNet:
    """A random smoother with a learned interpolation whose last layer has std ``scale``."""
    net = random_net(0.02, seed=seed, interpolation="learned", **config)
    torch.manual_seed(seed + 100)
    for p in net.interp[-1].parameters():
        torch.nn.init.normal_(p, std=scale)
    return net


def dense_interpolation(weights: dict, shape) -> np.ndarray:
    """``P`` point by point from per-class weights: coarse point ``i`` is fine ``2 i + 1`` and
    injects; a fine point of class ``F`` (in the classes' order) is the weighted sum of the rows
    of its neighbours ``p + o`` (zero beyond the grid)."""
    dim, n = len(shape), math.prod(shape)
    cshape = tuple(m // 2 for m in shape)
    P = np.zeros((n, math.prod(cshape)))
    for c in np.ndindex(*cshape):
        P[np.ravel_multi_index(tuple(2 * i + 1 for i in c), shape), np.ravel_multi_index(c, cshape)] = 1.0
    for F, ws in weights.items():
        start = [0 if a in F else 1 for a in range(dim)]
        for p in np.ndindex(*shape):
            if any((p[a] - start[a]) % 2 for a in range(dim)):
                continue
            j = tuple((p[a] - start[a]) // 2 for a in range(dim))
            row = np.zeros(P.shape[1])
            for off, w in ws:
                q = tuple(a + o for a, o in zip(p, off))
                if all(0 <= x < m for x, m in zip(q, shape)):
                    row += float(w[(0, *j)]) * P[np.ravel_multi_index(q, shape)]
            P[np.ravel_multi_index(p, shape)] = row
    return P


@pytest.mark.parametrize("shape", [(30, 30), (11, 11, 11)])
def test_learned_interpolation_starts_as_dendy(shape):
    """At initialisation the correction is zero: the cycle equals the one on Dendy's hierarchy."""
    dim = len(shape)
    A = jumping(shape[0], dim)
    net = learned_net(0.0, seed=3, stages=2, dim=dim)
    assert net.interp[-1].out_channels == nmg.interpolation_outputs(dim) == {2: 12, 3: 56}[dim]
    plain = nmg.SmootherNet(nmg.NMGConfig(stages=2, dim=dim)).double()
    plain.body.load_state_dict(net.body.state_dict())
    mg = mgm.Multigrid(mgm.stencils([A], shape), coarsest=10)
    assert len(mg.levels) >= 3
    f = torch.from_numpy(np.random.default_rng(4).standard_normal(math.prod(shape))).reshape(1, *shape)
    want = nmg.NeuralMultigrid(mg, plain)(f)
    got = nmg._neural(mg, net)(f)
    assert float((got - want).abs().max()) <= 1e-13 * float(want.abs().max())


@pytest.mark.parametrize("name, make, shape", [("jump-30", lambda: jumping(30), (30, 30)),
                                               ("poisson-31", lambda: solvers.laplacian(31, 2), (31, 31)),
                                               ("jump3d-11", lambda: jumping(11, 3, seed=2), (11, 11, 11))])
def test_learned_interpolation_hierarchy_equals_a_dense_per_level_reference(name, make, shape):
    """Per level, in an explicit loop: the shared network on the level's features (point-loop
    features) gives the weights; ``P`` assembled point by point from them equals the fast
    prolongation, ``P^T`` the restriction, and ``P^T A P`` the next level's Galerkin stencil."""
    A = make()
    dim = len(shape)
    net = learned_net(0.05, seed=7, dim=dim)
    mg, notes = nmg.hierarchy(mgm.stencils([A], shape), net, coarsest=10)
    assert not notes and len(mg.levels) >= 3
    Al = A.toarray()
    for l, level in enumerate(mg.levels[:-1]):
        feats = torch.from_numpy(dense_features(Al, level.shape)[None])
        with torch.no_grad():
            delta = net.interp(feats)[0].numpy()
        base = nmg.dendy_all_offsets(level)
        k = 0
        for F, ws in level.weights.items():
            start, counts = mgm._class_start_counts(level.shape, F)
            index = tuple(slice(a, a + 2 * (c - 1) + 1, 2) for a, c in zip(start, counts))
            raw = delta[k:k + len(ws)][(slice(None),) + index]
            want = raw - raw.mean(axis=0)  # the class's correction, projected to zero sum
            for i, ((off, w), (off0, w0)) in enumerate(zip(ws, base[F])):
                assert off == off0
                np.testing.assert_allclose(w[0].numpy(), w0[0].numpy() + want[i], rtol=1e-12, atol=1e-12)
            k += len(ws)
            # so constants are interpolated as Dendy's P does
            total = sum(w[0] for _, w in ws) - sum(w0[0] for _, w0 in base[F])
            assert float(total.abs().max()) <= 1e-12 and float(np.abs(want).max()) > 1e-3
        assert k == nmg.interpolation_outputs(dim)
        P = dense_interpolation(level.weights, level.shape)
        gen = np.random.default_rng(l)
        c = gen.standard_normal(P.shape[1])
        r = gen.standard_normal(P.shape[0])
        cshape = mgm.coarse_shape(level.shape)
        fast_p = mgm.prolong(level, torch.from_numpy(c).reshape(1, *cshape))[mgm._interior(dim)].reshape(-1).numpy()
        fast_r = mgm.restrict(level, torch.from_numpy(r).reshape(1, *level.shape)).reshape(-1).numpy()
        np.testing.assert_allclose(fast_p, P @ c, atol=1e-12 * np.abs(P @ c).max())
        np.testing.assert_allclose(fast_r, P.T @ r, atol=1e-12 * np.abs(P.T @ r).max())
        Al = P.T @ Al @ P
        got = mgm.dense_matrix(mg.levels[l + 1].S[0]).numpy()
        np.testing.assert_allclose(got, Al, atol=1e-11 * np.abs(Al).max())


@pytest.mark.parametrize("scale, stages, repeats, sweeps", [(0.05, 2, 1, True), (0.5, 2, 1, True), (0.05, 5, 3, False),
                                                            (0.5, 5, 3, False)])
def test_learned_interpolation_cycle_is_symmetric_positive_definite(scale, stages, repeats, sweeps):
    """Any interpolation weights keep the cycle SPD (P injects the coarse points: full rank), also in
    the configuration that meets issue 19 at contrast 1e5 (5 stages, coarse learned steps x3)."""
    A, _, info = datasets.system("darcy", resolution=18, seed=2)
    shape = tuple(info["shape"])
    net = learned_net(scale, seed=5, stages=stages, coarse_repeats=repeats, repeat_sweeps=sweeps)
    mg, notes = nmg.hierarchy(mgm.stencils([A], shape), net, coarsest=10)
    assert not notes and len(mg.levels) >= 3
    cycle = nmg.NeuralMultigrid(mg, net)
    assert cycle.coarse_repeats == repeats
    asym, lo, hi = spd_report(cycle, A)
    assert asym <= 1e-12
    assert 0.0 < lo and hi <= 1.0 + 1e-10


def test_learned_interpolation_gradient_equals_finite_differences():
    """Training differentiates through the hierarchy (weights, Galerkin products, coarsest
    Cholesky, sweeps on coarse levels): the autograd derivative of the cycle loss along a random
    direction of the interpolation network's parameters equals a central difference; the
    out-of-place transfers used then equal the in-place ones."""
    A = jumping(22)
    S = mgm.stencils([A, jumping(22, seed=4)], (22, 22))
    net = learned_net(0.05, seed=2)
    mg = mgm.Multigrid(S, coarsest=10)
    e = torch.from_numpy(np.random.default_rng(0).standard_normal((2, 22, 22)))
    params = list(net.interp.parameters())
    gen = torch.Generator().manual_seed(1)
    direction = [torch.randn(p.shape, generator=gen, dtype=p.dtype) for p in params]

    def loss() -> torch.Tensor:
        return nmg.cycle_loss(nmg._neural(mg, net, grad=True), e, 3).mean()

    slope, difference = directional_derivatives(loss, params, direction)
    assert abs(slope) > 1e-3
    assert slope == pytest.approx(difference, rel=1e-5)
    learned, _ = nmg.hierarchy(S, net, coarsest=10, grad=True)
    level = learned.levels[0]
    c = torch.randn((2, 11, 11), generator=gen, dtype=torch.float64)
    with torch.enable_grad():
        p_graph, r_graph = mgm.prolong(level, c), mgm.restrict(level, e)
    with torch.no_grad():
        p_plain, r_plain = mgm.prolong(level, c), mgm.restrict(level, e)
    assert p_graph.requires_grad and not p_plain.requires_grad
    assert float((p_graph - p_plain).detach().abs().max()) <= 1e-13
    assert float((r_graph - r_plain).detach().abs().max()) <= 1e-13


def test_pcg_loss_equals_a_dense_pcg_reference_and_trains():
    """``loss="pcg"``: the loss equals the per-step log energy-norm error reduction of a plain
    dense PCG with the cycle's matrix as preconditioner, and its gradient equals a central
    difference; a few training steps with it give a valid run."""
    n = 14
    A = jumping(n)
    S = mgm.stencils([A], (n, n))
    net = random_net(0.05, seed=3)
    cycle = nmg.NeuralMultigrid(mgm.Multigrid(S, coarsest=4), net)
    B = dense_cycle(cycle, n * n)
    e = torch.from_numpy(np.random.default_rng(1).standard_normal((1, n, n)))
    steps = 3
    Ad, ev = A.toarray(), e.reshape(-1).numpy()
    x, r = np.zeros(n * n), Ad @ ev
    z = B @ r
    p, rz = z.copy(), r @ z
    for _ in range(steps):
        Ap = Ad @ p
        alpha = rz / (p @ Ap)
        x, r = x + alpha * p, r - alpha * Ap
        z = B @ r
        p, rz = z + (r @ z) / rz * p, r @ z
    err = ev - x
    reference = 0.5 * np.log((err @ Ad @ err) / (ev @ Ad @ ev)) / steps
    assert float(nmg.pcg_loss(cycle, e, steps)[0]) == pytest.approx(reference, rel=1e-10)
    assert reference < np.log(0.5)  # it measures a real reduction

    params = list(net.parameters())
    gen = torch.Generator().manual_seed(2)
    direction = [torch.randn(q.shape, generator=gen, dtype=q.dtype) for q in params]

    def loss() -> torch.Tensor:
        return nmg.pcg_loss(nmg._neural(mgm.Multigrid(S, coarsest=4), net, grad=True), e, steps).mean()

    slope, difference = directional_derivatives(loss, params, direction)
    assert slope == pytest.approx(difference, rel=1e-5)


def test_pcg_loss_option_trains_and_refuses_an_unknown_loss(tmp_path, capsys):
    data = tmp_path / "darcy.h5"
    datasets.generate("darcy", n=4, resolution=18, seed=1, out=data)
    r = nmg.train_nmg(data, tmp_path / "run", progress=False, steps=2, batch_size=2, loss="pcg", cycles=3,
                      val_fraction=0.5)
    assert 0 < r["train_factor"] < 1 and r["val_factor"] < 1
    code, _, err = run_cli(["train", "nmg", "--data", str(data), "--out", str(tmp_path / "bad"), "--steps", "1",
                            "--option", "loss=pgc"], capsys)
    assert_one_line_error(code, err, "loss")


def test_non_finite_learned_interpolation_falls_back_to_dendy():
    net = learned_net(0.05, seed=1, stages=2)
    with torch.no_grad():
        net.interp[-1].bias[3] = float("nan")
    A, b, _ = datasets.system("darcy", resolution=34, seed=1)
    S = mgm.stencils([A])
    mg, notes = nmg.hierarchy(S, net)
    assert isinstance(mg.interpolation, str) and any("Dendy's ran instead" in n for n in notes)
    out, at = nmg.NeuralMultigrid(mg, net, notes=notes).solve(torch.from_numpy(b).reshape(1, *mg.shape), 1e-8, 100)
    assert bool(out.converged[0]) and any("Dendy's ran instead" in n for n in out.notes)


# ----------------------------------------------------------------------------- safety


def test_non_finite_network_runs_the_classical_cycle_from_iteration_0():
    net = random_net(0.1)
    with torch.no_grad():
        net.body[-1].bias[0] = float("nan")
    A, b, _ = datasets.system("darcy", resolution=34, seed=1)
    mg = mgm.Multigrid(mgm.stencils([A]))
    cycle = nmg.NeuralMultigrid(mg, net)
    out, at = cycle.solve(torch.from_numpy(b).reshape(1, *mg.shape), 1e-8, 100)
    classical = mg.solve(torch.from_numpy(b).reshape(1, *mg.shape), 1e-8, 100)
    assert at == 0 and bool(out.converged[0]) and int(out.iterations[0]) == int(classical.iterations[0])
    assert any("non-finite" in n for n in out.notes)


def test_random_and_mismatched_networks_still_converge(trained):
    """A random network, and the Darcy network on ConDiff at contrast 1e5: both reach 1e-8 (the
    guard keeps the cycle SPD; the stall rule hands over to the classical cycle when it stops helping)."""
    A, b, _ = datasets.system("condiff", resolution=64, seed=1, variance=2.0)
    classical = solvers.solve(A, b, method="pcg-mg", tol=1e-8)
    mg = mgm.Multigrid(mgm.stencils([A]))
    bt = torch.from_numpy(b).reshape(1, *mg.shape)
    for net in (random_net(1.0, seed=11), nmg.load_nmg(trained["run_dir"])[0]):
        out, at = nmg.NeuralMultigrid(mg, net).solve(bt, 1e-8, 200)
        assert bool(out.converged[0])
        assert float(out.residuals[-1, 0]) <= 1e-8
        assert int(out.iterations[0]) <= 3 * classical.iterations + 3
        assert (at is None) == (not any("classical V-cycle finished" in n for n in out.notes))


def test_stall_rule_hands_over_and_reports_the_iteration():
    A, b, _ = datasets.system("darcy", resolution=34, seed=1)
    mg = mgm.Multigrid(mgm.stencils([A]))
    cycle = nmg.NeuralMultigrid(mg, random_net(0.0))
    bt = torch.from_numpy(b).reshape(1, *mg.shape)
    # demand an impossible 1e6-fold drop per iteration: the hand-over comes at iteration 1
    out, at = cycle.solve(bt, 1e-8, 100, patience=1, drop=1e6)
    assert at == 1 and bool(out.converged[0])
    assert any("iteration 1" in n for n in out.notes)
    history = out.residuals[:, 0].numpy()
    assert len(history) == int(out.iterations[0]) + 1 and history[-1] <= 1e-8
    x = out.x.reshape(-1).numpy()
    assert np.linalg.norm(A @ x - b) <= 1.0001e-8 * np.linalg.norm(b)


def test_fine_tuning_starts_from_the_init_run(trained, tmp_path, capsys):
    """``--option init=RUN``: the network starts as RUN's (one step at a tiny learning rate moves
    it by at most lr per weight); the config comes from RUN, so ``--set`` with it is refused."""
    data = tmp_path / "darcy.h5"
    datasets.generate("darcy", n=6, resolution=18, seed=1, out=data)
    r = nmg.train_nmg(data, tmp_path / "ft", progress=False, steps=1, batch_size=2, lr=1e-7, init=trained["run_dir"])
    before, after = nmg.load_nmg(trained["run_dir"])[0], nmg.load_nmg(r["run_dir"])[0]
    assert after.config == before.config
    gap = max(float((a - b).detach().abs().max()) for a, b in zip(after.parameters(), before.parameters()))
    assert 0 < gap <= 2e-7
    code, _, err = run_cli(["train", "nmg", "--data", str(data), "--out", str(tmp_path / "ft2"), "--steps", "1",
                            "--option", f"init={trained['run_dir']}", "--set", "stages=2"], capsys)
    assert_one_line_error(code, err, "init run")


# ----------------------------------------------------------------------------- CLI


@pytest.mark.parametrize("stages, interpolation, repeats", [(1, "dendy", 1), (2, "dendy", 3), (2, "learned", 1)])
def test_cli_trains_and_solves(tmp_path, capsys, stages, interpolation, repeats):
    data = tmp_path / "darcy.h5"
    datasets.generate("darcy", n=6, resolution=18, seed=0, out=data)
    run = tmp_path / "run"
    code, out, err = run_cli(["train", "nmg", "--data", str(data), "--out", str(run), "--steps", "4",
                              "--option", "batch_size=2", "--option", "log_every=2", "--set", f"stages={stages}",
                              "--set", f"interpolation={interpolation}", "--set", f"coarse_repeats={repeats}"], capsys)
    assert code == 0, err
    assert f"nmg:{run}" in out
    net = nmg.load_nmg(run)[0]
    assert net.config.stages == stages and net.body[-1].out_channels == 9 * stages
    assert net.config.coarse_repeats == repeats
    A, _, _ = datasets.system("darcy", resolution=34, seed=3)
    assert nmg.NeuralMultigrid(mgm.Multigrid(mgm.stencils([A], (32, 32))), net).coarse_repeats == repeats
    assert net.config.interpolation == interpolation and hasattr(net, "interp") == (interpolation == "learned")
    if interpolation == "learned":  # the correction trained: not all zero any more
        assert float(net.interp[-1].weight.detach().abs().max()) > 0
    code, out, err = run_cli(["solve", "darcy", "-s", "34", "--seed", "3", "--method", f"nmg:{run},pcg-mg",
                              "--tol", "1e-8"], capsys)
    assert code == 0, err
    assert "nmg" in out and "pcg-mg" in out


def test_cli_refuses_a_3d_matrix_for_a_2d_network(trained, capsys):
    code, out, err = run_cli(["solve", "poisson3d", "-s", "12", "--method", f"nmg:{trained['run_dir']}"], capsys)
    assert_one_line_error(code, err, "2-D")
