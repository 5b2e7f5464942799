"""GNO: the radius graph against a brute-force search, the whole model against a slow loop over
points, invariances (point order, receptive radius), batching, caching, training and resolution
transfer."""

from __future__ import annotations

import math

import pytest
import torch

from sciml import datasets, evaluation, training
from sciml.errors import ConfigError, ModelError
from sciml.operators import as_grid_model, create
from sciml.operators import gno as gno_module
from sciml.operators.adapters import grid_points
from sciml.operators.gno import GNO, GNOConfig, radius_graph


def brute_neighbours(q: torch.Tensor, points: torch.Tensor, radius: float, cap: int | None) -> list[int]:
    """Input points within ``radius`` of ``q``, the ``cap`` nearest (without those tied with the
    first one left out), never none."""
    dist = [math.dist(q.tolist(), p.tolist()) for p in points]
    order = sorted(range(len(points)), key=dist.__getitem__)
    near = [j for j in order if dist[j] <= radius * (1 + 1e-5)]
    if cap is not None and len(points) > cap:
        left_out = dist[order[cap]]
        near = [j for j in near[:cap] if dist[j] < left_out * (1 - 1e-5)]
    return near or order[:1]


def edge_sets(dst: torch.Tensor, src: torch.Tensor, n_out: int) -> list[set[int]]:
    sets: list[set[int]] = [set() for _ in range(n_out)]
    for i, j in zip(dst.tolist(), src.tolist()):
        assert j not in sets[i], "duplicate edge"
        sets[i].add(j)
    return sets


@pytest.mark.parametrize("d", [1, 2, 3])
@pytest.mark.parametrize("cap", [None, 5])
@pytest.mark.parametrize("queries", ["same", "other"])
def test_radius_graph_equals_brute_force_search(d, cap, queries, monkeypatch):
    torch.manual_seed(d)
    points = torch.rand(70, d, dtype=torch.float64)
    out = points if queries == "same" else torch.rand(40, d, dtype=torch.float64) * 1.4 - 0.2  # some far outside
    radius = {1: 0.05, 2: 0.2, 3: 0.35}[d]
    monkeypatch.setattr(gno_module, "_BLOCK_ENTRIES", 3 * 70 + 1)  # several blocks, a ragged last one
    dst, src = radius_graph(out, points, radius, cap)
    got = edge_sets(dst, src, len(out))
    for i, q in enumerate(out):
        assert got[i] == set(brute_neighbours(q, points, radius, cap)), i
    if queries == "same":
        assert all(i in got[i] for i in range(len(out)))  # the self edge
    sizes = [len(s) for s in got]
    assert max(sizes) > 1 and (cap is None or max(sizes) == cap)  # the cases are not trivial


def test_radius_graph_keeps_whole_rings_of_a_grid():
    # float32 grid coordinates: equal distances differ by rounding, yet a radius of exactly 2h
    # keeps the points two steps away, and a cap never splits a ring of equidistant points
    points = grid_points((5,))
    dst, src = radius_graph(points, points, 0.5, None)
    assert edge_sets(dst, src, 5)[2] == {0, 1, 2, 3, 4}
    points = grid_points((31, 31))
    for cap, ring in [(8, 5), (9, 9), (12, 9), (16, 13), (24, 21)]:
        dst, src = radius_graph(points, points, 0.2, cap)
        degree = torch.bincount(dst, minlength=len(points)).view(31, 31)
        assert (degree[6:-6, 6:-6] == ring).all(), cap  # interior points: whole rings 0, h, sqrt2 h, 2h, sqrt5 h


def test_isolated_point_still_has_its_self_edge_and_a_finite_output():
    points = torch.tensor([[0.0, 0.0], [0.05, 0.0], [0.9, 0.9]])
    dst, src = radius_graph(points, points, 0.1, None)
    assert edge_sets(dst, src, 3) == [{0, 1}, {0, 1}, {2}]
    torch.manual_seed(0)
    model = GNO(GNOConfig(width=4, kernel_width=8, depth=2, radius=0.1, projection=0))
    out = model(torch.randn(1, 3, 1), points[None], points[None])
    assert torch.isfinite(out).all()


# ----------------------------------------------------------------------------- the slow reference


def slow_gno(model: GNO, v: torch.Tensor, x_in: torch.Tensor, x_out: torch.Tensor | None) -> torch.Tensor:
    """One sample, straight from the definition, one point and one edge at a time.

    ``v_0(x_i) = P(a_i, x_i)``; ``v_{t+1}(x_i) = act(W v_t(x_i) + mean_{j in N(i)} k_ij v_t(x_j))`` with
    ``k_ij = kappa(x_i, x_j, a_i, a_j)`` applied as ``k * v`` (diagonal) or ``k^T v`` for the
    ``(width, width)`` matrix ``k`` (full); at other query points ``q`` one more
    ``mean_{j in N(q)} kappa_out(q, x_j, a_j) v_T(x_j)``; then ``Q``. ``x_out=None``: the input points.
    """
    c = model.config

    def apply(net, features, h):
        k = net(features[None])[0]
        return k * h if c.kernel == "diagonal" else k.T @ h

    def neighbours(q):
        return brute_neighbours(q, x_in, c.radius, c.max_neighbors)

    n = len(x_in)
    h = [model.lift(torch.cat([v[i], x_in[i]])) for i in range(n)]
    for _ in range(c.depth):
        h = [
            model.act(model.local(h[i]) + sum(
                apply(model.kernel, torch.cat([x_in[i], x_in[j], v[i], v[j]]), h[j]) for j in neighbours(x_in[i])
            ) / len(neighbours(x_in[i])))
            for i in range(n)
        ]
    if x_out is not None:
        h = [
            sum(apply(model.query_kernel, torch.cat([q, x_in[j], v[j]]), h[j]) for j in neighbours(q))
            / len(neighbours(q))
            for q in x_out
        ]
    return torch.stack([model.project(hi) for hi in h])


@pytest.mark.parametrize(
    "config",
    [
        dict(kernel="diagonal", max_neighbors=4, activation="gelu", projection=8),
        dict(kernel="full", max_neighbors=None, activation="relu", projection=0),
        dict(kernel="full", max_neighbors=3, activation="tanh", projection=8, in_channels=2, coord_dim=3),
    ],
    ids=["diagonal-capped", "full", "full-capped-3d"],
)
def test_model_equals_slow_loop_over_points(config):
    torch.manual_seed(0)
    c = GNOConfig(**{"width": 5, "kernel_width": 7, "depth": 2, "radius": 0.45, "out_channels": 2, **config})
    model = GNO(c).double()
    x_in = torch.rand(2, 11, c.coord_dim, dtype=torch.float64)  # per-sample point sets
    x_out = torch.rand(2, 6, c.coord_dim, dtype=torch.float64)
    v = torch.randn(2, 11, c.in_channels, dtype=torch.float64)
    with torch.no_grad():
        at_inputs, at_queries = model(v, x_in, x_in), model(v, x_in, x_out)
        for b in range(2):
            torch.testing.assert_close(at_inputs[b], slow_gno(model, v[b], x_in[b], None), rtol=1e-12, atol=1e-12)
            torch.testing.assert_close(at_queries[b], slow_gno(model, v[b], x_in[b], x_out[b]), rtol=1e-12, atol=1e-12)


# ----------------------------------------------------------------------------- invariances


def _model(**kw) -> GNO:
    torch.manual_seed(0)
    config = {"width": 8, "kernel_width": 16, "depth": 2, "radius": 0.25, "max_neighbors": 6, **kw}
    return GNO(GNOConfig(**config)).double()


def test_permuting_input_points_leaves_the_output_unchanged():
    model = _model(kernel="full")
    x_in, v = torch.rand(1, 40, 2, dtype=torch.float64), torch.randn(1, 40, 1, dtype=torch.float64)
    x_out = torch.rand(1, 9, 2, dtype=torch.float64)
    perm = torch.randperm(40)
    with torch.no_grad():
        torch.testing.assert_close(model(v[:, perm], x_in[:, perm], x_out), model(v, x_in, x_out),
                                   rtol=1e-12, atol=1e-12)
        # at the input points themselves the output is permuted along
        torch.testing.assert_close(model(v[:, perm], x_in[:, perm], x_in[:, perm]), model(v, x_in, x_in)[:, perm],
                                   rtol=1e-12, atol=1e-12)


def _changed(model, v, x_in, x_out, j) -> torch.Tensor:
    w = v.clone()
    w[0, j] += 1.0
    with torch.no_grad():
        return (model(w, x_in, x_out) - model(v, x_in, x_out)).abs().amax(-1)[0] > 1e-9


def test_output_depends_only_on_inputs_within_the_receptive_radius():
    # depth 1: the output at x_i moves with a(x_j) iff j is a neighbour of i (|x_i - x_j| <= r);
    # at another query point q iff some neighbour of q has j as a neighbour (within 2r)
    model = _model(depth=1, max_neighbors=None, radius=0.2)
    torch.manual_seed(3)
    x_in, v = torch.rand(1, 60, 2, dtype=torch.float64), torch.randn(1, 60, 1, dtype=torch.float64)
    x_out = torch.rand(1, 25, 2, dtype=torch.float64)
    dist = torch.cdist(x_in[0], x_in[0])
    near = dist <= 0.2
    near_q = torch.cdist(x_out[0], x_in[0]) <= 0.2
    assert near_q.any(1).all()  # every query has an input neighbour: no nearest-point fallback
    for j in range(0, 60, 7):
        assert torch.equal(_changed(model, v, x_in, x_in, j), near[:, j])
        assert torch.equal(_changed(model, v, x_in, x_out, j), (near_q.double() @ near[:, j].double()) > 0)
        assert 0 < int(near[:, j].sum()) < 60


# ----------------------------------------------------------------------------- batches, caching, shapes


def test_irregular_points_per_sample_and_other_queries_match_one_sample_at_a_time():
    model = _model(kernel="diagonal")
    x_in, v = torch.rand(3, 50, 2, dtype=torch.float64), torch.randn(3, 50, 1, dtype=torch.float64)
    x_out = torch.rand(3, 17, 2, dtype=torch.float64)
    with torch.no_grad():
        out = model(v, x_in, x_out)
        assert out.shape == (3, 17, 1) and torch.isfinite(out).all()
        for b in range(3):
            torch.testing.assert_close(out[b : b + 1], model(v[b : b + 1], x_in[b : b + 1], x_out[b : b + 1]),
                                       rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("points", ["shared", "per-sample"])
def test_batch_in_chunks_equals_the_whole_batch(points, monkeypatch):
    # the CPU path runs cache-sized chunks of samples; the results and gradients must not change
    model = _model(kernel="full")
    x_in = torch.rand(1 if points == "shared" else 5, 30, 2, dtype=torch.float64).expand(5, -1, -1)
    v, x_out = torch.randn(5, 30, 1, dtype=torch.float64, requires_grad=True), torch.rand(5, 7, 2, dtype=torch.float64)
    whole = [model(v, x_in, x_in), model(v, x_in, x_out)]
    grad_whole = torch.autograd.grad(sum(o.sum() for o in whole), model.kernel.layers[0].weight)
    monkeypatch.setattr(gno_module, "_CHUNK_FLOATS", 30 * 6 * 64 * 2)  # two samples per chunk
    assert model._samples_per_chunk(x_in) == 2
    chunked = [model(v, x_in, x_in), model(v, x_in, x_out)]
    grad_chunked = torch.autograd.grad(sum(o.sum() for o in chunked), model.kernel.layers[0].weight)
    for a, b in zip(whole + list(grad_whole), chunked + list(grad_chunked)):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_query_kernel_is_used_only_at_other_points():
    model = _model()
    x = torch.rand(2, 30, 2, dtype=torch.float64)
    v = torch.randn(2, 30, 1, dtype=torch.float64)
    with torch.no_grad():
        same = model(v, x, x)
        torch.testing.assert_close(model(v, x, x.clone()), same, rtol=0, atol=0)  # equal values, not identity
        for p in model.query_kernel.parameters():
            p.add_(1.0)
        assert torch.equal(model(v, x, x), same)
        assert not torch.allclose(model(v, x, x[:, :20]), same[:, :20])


def test_model_without_query_kernel_evaluates_at_its_input_points_only():
    model = _model(query_kernel=False)
    assert not any(name.startswith("query_kernel") for name, _ in model.named_parameters())
    x, v = torch.rand(1, 30, 2, dtype=torch.float64), torch.randn(1, 30, 1, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(model(v, x, x), _model()(v, x, x), rtol=0, atol=0)  # same weights otherwise
    with pytest.raises(ModelError, match="query_kernel=False"):
        model(v, x, x[:, :10])


def test_graph_is_built_once_for_a_grid_shared_by_the_batch(monkeypatch):
    calls = []
    real = gno_module.radius_graph

    def counting(*args):
        calls.append(args[0].shape)
        return real(*args)

    monkeypatch.setattr(gno_module, "radius_graph", counting)
    model = as_grid_model(create("gno", width=4, kernel_width=8, depth=1, projection=0))
    for _ in range(3):
        model(torch.randn(5, 1, 9, 7))  # new values, same grid
    assert calls == [(63, 2)]
    model(torch.randn(2, 1, 12, 12))
    model(torch.randn(2, 1, 9, 7))  # still cached
    assert calls == [(63, 2), (144, 2)]


@pytest.mark.parametrize("sizes", [(33,), (9, 7), (5, 4, 6)])
def test_runs_on_grids_of_every_dimension_through_the_adapter(sizes):
    model = as_grid_model(create("gno", coord_dim=len(sizes), in_channels=2, out_channels=3, width=4,
                                 kernel_width=8, depth=2, radius=0.3, max_neighbors=8, projection=8))
    out = model(torch.randn(2, 2, *sizes))
    assert out.shape == (2, 3, *sizes) and torch.isfinite(out).all() and out.std() > 0


def test_bad_shapes_and_configs_raise_clear_errors():
    model = create("gno", width=4, kernel_width=4, depth=1)
    x = torch.rand(2, 10, 2)
    with pytest.raises(ModelError, match="in_channels=1"):
        model(torch.randn(2, 10, 3), x, x)
    with pytest.raises(ModelError, match="coord_dim=2"):
        model(torch.randn(2, 10, 1), x, torch.rand(2, 5, 3))
    with pytest.raises(ModelError, match="x_in of shape"):
        model(torch.randn(2, 10, 1), x[:, :9], x)
    for bad, match in [({"radius": 0.0}, "radius"), ({"radius": math.inf}, "radius"),
                       ({"max_neighbors": 0}, "max_neighbors"), ({"kernel": "low-rank"}, "kernel"),
                       ({"coord_dim": 4}, "coord_dim"), ({"depth": 0}, "depth")]:
        with pytest.raises(ConfigError, match=match):
            create("gno", **bad)


# ----------------------------------------------------------------------------- training


@pytest.fixture(scope="module")
def trained(darcy16, tmp_path_factory):
    train, test = darcy16
    out = tmp_path_factory.mktemp("gno-run")
    summary = training.train("gno", data=train, test_data=test, out=out, epochs=30, batch_size=4, lr=3e-3,
                             progress=False, figures=False, num_threads=2)
    return out, summary


def test_training_on_darcy16_lowers_the_error(trained):
    _, summary = trained
    # measured: test rel. L2 0.098-0.105 (seeds 0-2) after 30 epochs; predicting the training mean: 0.20
    assert summary["test_loss"] < 0.14, summary


def test_trained_run_evaluates_at_another_resolution(trained, tmp_path):
    run, summary = trained
    data = datasets.generate("darcy", n=4, resolution=24, seed=5, out=tmp_path / "d24.h5", progress=False)
    result = evaluation.evaluate(run, data=[data], n_solver_samples=0)
    entry = result["datasets"][0]
    assert entry["resolution"] == "24x24"
    # measured 0.11 (at 16x16: 0.10): the graph is rebuilt on the new points, the kernel carries over
    assert math.isfinite(entry["rel_l2_mean"]) and entry["rel_l2_mean"] < 0.2, entry
