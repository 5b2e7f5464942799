import pytest

pytestmark = pytest.mark.usefixtures("one_thread")

import json  # noqa: E402

import numpy as np  # noqa: E402
import scipy.sparse as sp  # noqa: E402
import torch  # noqa: E402

from sciml.learned.graphs import greedy_policy, pore_network, random_mdp, value_iteration  # noqa: E402
from sciml.errors import CheckpointError, ConfigError, DataError  # noqa: E402
from sciml.learned import cgs  # noqa: E402
from sciml.runs import META, WEIGHTS, read_metrics  # noqa: E402

F64 = torch.float64


def _porenet_batch(n=3, dtype=F64, n_pores=(6, 12)):
    return cgs.collate([pore_network(np.random.default_rng([7, i]), n_pores=n_pores) for i in range(n)], dtype=dtype)


def _random_operator(batch, heads=4, seed=0, mode="clip"):
    """Edge weights from logits spread beyond [0, 1], so that clipping and the bound both matter."""
    g = torch.Generator().manual_seed(seed)
    logits = torch.rand(batch.edge_index.shape[1], heads, generator=g, dtype=F64) * 1.6 - 0.3
    w = cgs.contraction_weights(logits, batch.dst, batch.num_nodes, mode)
    b = torch.randn(batch.num_nodes, heads, generator=g, dtype=F64)
    return w, b


# --------------------------------------------------------------------------- the linear map


@pytest.mark.parametrize("mode", ["clip", "sigmoid"])
def test_operator_inf_norm_at_most_one(mode):
    batch = _porenet_batch()
    w, _ = _random_operator(batch, heads=8, mode=mode)
    a = cgs.dense_operators(w, batch.src, batch.dst, batch.num_nodes)
    row_sums = a.abs().sum(dim=-1)  # (H, N)
    assert float(row_sums.max()) <= 1.0 + 1e-12
    assert float((0.5 * a).abs().sum(dim=-1).max()) <= 0.5 + 1e-12
    # the bound is tight: logits >= 1 with clipping give row sums of exactly 1
    ones = cgs.contraction_weights(torch.full_like(w, 2.0), batch.dst, batch.num_nodes, "clip")
    full = cgs.dense_operators(ones, batch.src, batch.dst, batch.num_nodes).sum(dim=-1)
    np.testing.assert_allclose(full.numpy(), 1.0, rtol=1e-14)
    # and the encoder of an untrained model respects it too
    net = cgs.CGS(cgs.CGSConfig(heads=8, edge_weight=mode)).double()
    w_net, _ = net.encode(batch)
    a_net = cgs.dense_operators(w_net.detach(), batch.src, batch.dst, batch.num_nodes)
    assert float(a_net.abs().sum(dim=-1).max()) <= 1.0 + 1e-12
    assert float(w_net.detach().min()) >= 0.0


def test_segmented_matvec_matches_dense():
    batch = _porenet_batch()
    w, z = _random_operator(batch, heads=5, seed=1)
    a = cgs.dense_operators(w, batch.src, batch.dst, batch.num_nodes)
    dense = torch.einsum("hij,jh->ih", a, z)
    dense_t = torch.einsum("hji,jh->ih", a, z)
    torch.testing.assert_close(cgs.matvec(w, z, batch.src, batch.dst), dense, rtol=1e-13, atol=1e-13)
    torch.testing.assert_close(cgs.rmatvec(w, z, batch.src, batch.dst), dense_t, rtol=1e-13, atol=1e-13)


def test_fixed_point_residual_below_tol():
    batch = _porenet_batch(dtype=torch.float32)
    torch.manual_seed(0)
    net = cgs.CGS(cgs.CGSConfig(heads=16, tol=1e-5))
    stats: dict = {}
    with torch.no_grad():
        w, b = net.encode(batch)
        z = cgs.fixed_point(w, b, batch.src, batch.dst, 0.5, 1e-5, 50, stats)
    residual = (z - 0.5 * cgs.matvec(w, z, batch.src, batch.dst) - b).abs().max()
    assert stats["forward_iterations"] < 50 and stats["forward_change"] <= 1e-5
    assert float(residual) <= 0.5 * 1e-5 * 1.01  # z_k - gamma A z_k - b = z_k - z_k+1 = gamma (z_k-1 - z_k)
    a = cgs.dense_operators(w.double(), batch.src, batch.dst, batch.num_nodes)
    exact = torch.linalg.solve(torch.eye(batch.num_nodes, dtype=F64) - 0.5 * a, b.double().T.unsqueeze(-1))
    # a contraction with factor 1/2: |z_k - z*| <= gamma / (1 - gamma) |z_k - z_k-1| = tol
    assert float((z.double() - exact.squeeze(-1).T).abs().max()) <= 1.1e-5


# --------------------------------------------------------------------------- implicit gradients


def _unrolled(w, b, src, dst, iterations=200, gamma=0.5):
    z = torch.zeros_like(b)
    for _ in range(iterations):
        z = gamma * cgs.matvec(w, z, src, dst) + b
    return z


def test_implicit_gradient_equals_unrolled_gradient():
    batch = _porenet_batch()
    w0, b0 = _random_operator(batch, heads=4, seed=2)
    upstream = torch.randn(b0.shape, generator=torch.Generator().manual_seed(3), dtype=F64)
    grads = []
    for solve in (lambda w, b: cgs.fixed_point(w, b, batch.src, batch.dst, 0.5, 1e-15, 500),
                  lambda w, b: _unrolled(w, b, batch.src, batch.dst)):
        w, b = w0.clone().requires_grad_(), b0.clone().requires_grad_()
        (solve(w, b) * upstream).sum().backward()
        grads.append((w.grad, b.grad))
    (gw_imp, gb_imp), (gw_unr, gb_unr) = grads
    assert float(gw_imp.abs().max()) > 1e-3  # a real gradient, not zeros on both sides
    torch.testing.assert_close(gw_imp, gw_unr, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(gb_imp, gb_unr, rtol=1e-10, atol=1e-12)


def test_implicit_gradient_passes_gradcheck():
    batch = _porenet_batch(n=2, n_pores=5)
    w, b = _random_operator(batch, heads=2, seed=4)
    w.requires_grad_()
    b.requires_grad_()
    fn = lambda w, b: cgs.fixed_point(w, b, batch.src, batch.dst, 0.5, 1e-15, 500)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (w, b), eps=1e-6, atol=1e-9, rtol=1e-6)


def test_model_gradients_equal_unrolled_differentiation():
    """Every parameter's gradient through encoder -> implicit fixed point -> decoder equals the
    gradient of the same network with 200 unrolled iterations in its graph."""
    batch = _porenet_batch()
    torch.manual_seed(5)
    net = cgs.CGS(cgs.CGSConfig(heads=4, gn_layers=1, tol=1e-14, max_iter=300, edge_weight="sigmoid")).double()
    target = torch.randn(batch.num_nodes, dtype=F64)
    ((net(batch) - target) ** 2).mean().backward()
    implicit = {k: p.grad.clone() for k, p in net.named_parameters()}
    assert net.stats["backward_iterations"] > 10
    net.zero_grad()
    w, b = net.encode(batch)
    ((net.decode(_unrolled(w, b, batch.src, batch.dst), batch) - target) ** 2).mean().backward()
    for k, p in net.named_parameters():
        torch.testing.assert_close(implicit[k], p.grad, rtol=1e-8, atol=1e-12, msg=k)
    # every parameter matters, except the last bias of the attention scores (a softmax ignores a shift)
    dead = [k for k, g in implicit.items() if float(g.abs().max()) < 1e-12]
    assert dead == [f"encoder.{k}.attn_rest.0.bias" for k in range(2)], dead


# --------------------------------------------------------------------------- pore networks


def test_pore_network_conserves_mass_and_obeys_maximum_principle():
    for i in range(5):
        net = pore_network(np.random.default_rng([11, i]))
        p, inner = net.pressure, ~net.boundary
        i_, j_ = net.throats.T
        q = net.conductance * (p[i_] - p[j_])  # flow i -> j through each throat
        out = np.bincount(i_, q, net.n_nodes) - np.bincount(j_, q, net.n_nodes)
        scale = np.bincount(i_, np.abs(q), net.n_nodes) + np.bincount(j_, np.abs(q), net.n_nodes)
        assert np.all(np.abs(out[inner]) <= 1e-10 * scale[inner])
        assert p.min() >= -1e-12 and p.max() <= 1 + 1e-12
        assert np.all(p[net.inlet] == 1.0) and np.all(p[net.outlet] == 0.0)
        # inflow equals outflow through the whole network
        assert abs(out[net.inlet].sum() + out[net.outlet].sum()) <= 1e-10 * out[net.inlet].sum()
        assert 13 <= inner.sum() <= 86


def test_pore_network_pressure_matches_dense_solve():
    net = pore_network(np.random.default_rng(3), n_pores=30)
    lap = net.laplacian().toarray()
    assert np.allclose(lap.sum(axis=1), 0.0, atol=1e-12 * np.abs(lap).max()) and np.allclose(lap, lap.T)
    rows = lap.copy()
    rows[net.boundary] = np.eye(net.n_nodes)[net.boundary]  # Dirichlet rows
    rhs = np.where(net.inlet, 1.0, 0.0)
    np.testing.assert_allclose(net.pressure, np.linalg.solve(rows, rhs), rtol=1e-10, atol=1e-12)


def test_pore_network_geometry_and_features():
    net = pore_network(np.random.default_rng(5), n_pores=40, n_face=7)
    assert net.n_nodes == 54 and net.inlet.sum() == 7 and net.outlet.sum() == 7
    assert np.all(net.positions[net.inlet, 0] == 0) and np.all(net.positions[net.outlet, 0] == 1)
    centre = np.linalg.norm(net.positions[net.throats[:, 0]] - net.positions[net.throats[:, 1]], axis=1)
    assert net.pore_diameter.max() <= 0.9 * centre.min() + 1e-15  # radius cap 0.45 x shortest throat
    assert np.all(net.throat_length > 0)
    np.testing.assert_allclose(net.conductance, (net.throat_diameter / 1e-2) ** 4 / net.throat_length)
    # every pore is a Delaunay vertex; throats appear once per direction
    assert np.unique(net.throats).size == net.n_nodes
    ei = net.edge_index
    assert ei.shape == (2, 2 * len(net.throats)) and set(map(tuple, ei.T)) == set(map(tuple, ei[::-1].T))
    x, e = net.node_features, net.edge_features
    assert x.shape == (54, 5) and e.shape == (ei.shape[1], 3)
    np.testing.assert_array_equal(x[:, 4], np.where(net.inlet, 1.0, 0.0))  # masked pressure
    np.testing.assert_array_equal(x[:, 3], net.boundary.astype(float))
    # graph draws are a pure function of the seed
    again = pore_network(np.random.default_rng(5), n_pores=40, n_face=7)
    np.testing.assert_array_equal(again.pressure, net.pressure)


# --------------------------------------------------------------------------- MDPs


def test_mdp_values_satisfy_bellman_optimality():
    for atol in (1e-3, 1e-8):
        mdp = random_mdp(np.random.default_rng([2, int(-np.log10(atol))]), atol=atol)
        q = mdp.reward + mdp.gamma * mdp.value[mdp.successor]
        assert np.abs(q.max(axis=1) - mdp.value).max() <= mdp.gamma * atol  # Bellman residual
        np.testing.assert_array_equal(mdp.policy, q.argmax(axis=1))
        np.testing.assert_array_equal(greedy_policy(mdp, mdp.value), mdp.policy)
        assert 20 <= mdp.n_states <= 49 and 5 <= mdp.n_actions <= 9


def _policy_iteration(succ, reward, gamma):
    n = succ.shape[0]
    policy = np.zeros(n, dtype=int)
    while True:
        p = sp.csr_matrix((np.ones(n), (np.arange(n), succ[np.arange(n), policy])), shape=(n, n)).toarray()
        value = np.linalg.solve(np.eye(n) - gamma * p, reward[np.arange(n), policy])
        new = (reward + gamma * value[succ]).argmax(axis=1)
        if np.array_equal(new, policy):
            return value, policy
        policy = new


def test_value_iteration_matches_policy_iteration():
    mdp = random_mdp(np.random.default_rng(9), n_states=8, n_actions=3, atol=1e-3)
    v_pi, pol_pi = _policy_iteration(mdp.successor, mdp.reward, mdp.gamma)
    assert np.abs(mdp.value - v_pi).max() <= mdp.gamma * 1e-3 / (1 - mdp.gamma)
    np.testing.assert_array_equal(mdp.policy, pol_pi)
    v_tight, _ = value_iteration(mdp.successor, mdp.reward, mdp.gamma, atol=1e-12)
    np.testing.assert_allclose(v_tight, v_pi, rtol=0, atol=1e-10)


def test_mdp_graph_encoding():
    mdp = random_mdp(np.random.default_rng(1), n_states=(20, 49), n_actions=(5, 9))
    src, dst = mdp.edge_index
    assert np.all(src != dst)  # no self transitions
    np.testing.assert_array_equal(np.bincount(dst, minlength=mdp.n_states), mdp.n_actions)
    np.testing.assert_array_equal(src, mdp.successor.reshape(-1))
    np.testing.assert_array_equal(mdp.edge_features[:, 0], mdp.reward.reshape(-1))
    assert mdp.reward.min() >= -1 and mdp.reward.max() <= 1 and mdp.node_features.shape == (mdp.n_states, 1)


# --------------------------------------------------------------------------- training, runs, errors


@pytest.fixture(scope="module")
def porenet_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("cgs") / "porenet"
    # a module fixture is set up before the function-scoped one_thread fixture: set the thread count here
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        summary = cgs.train_cgs("porenet", run, updates=250, batch_graphs=8, lr=1e-3, seed=0, heads=16, gn_layers=0,
                                progress=False, n_pores=(8, 20))
    finally:
        torch.set_num_threads(threads)
    return run, summary


def test_porenet_training_beats_linear_pressure_baseline(porenet_run):
    run, summary = porenet_run
    metrics = cgs.evaluate_cgs(run, n_graphs=40)
    # measured over seeds 0-4: MSE ratio to p = 1 - x 0.27-0.33, relative L2 ratio 0.51-0.57
    assert metrics["mse"] < 0.5 * metrics["baseline_mse"]
    assert metrics["rel_l2"] < 0.7 * metrics["baseline_rel_l2"]
    assert 5 <= metrics["fixed_point_iterations"] < 50
    assert json.loads((run / "evaluation.json").read_text())["mse"] == metrics["mse"]
    rows = read_metrics(run)
    assert [r["update"] for r in rows] == list(range(1, 251))
    # measured: the last 32 losses average 1.1-1.6 % of the first 10
    assert np.mean([r["loss"] for r in rows[-32:]]) < 0.1 * np.mean([r["loss"] for r in rows[:10]])


def test_mdp_training_learns_values_and_policy(tmp_path):
    run = tmp_path / "mdp"
    cgs.train_cgs("mdp", run, updates=500, batch_graphs=16, lr=1e-3, seed=0, heads=16, gn_layers=1, progress=False,
                  n_states=(10, 16), n_actions=(3, 5), model=dict(node_hidden=32, edge_hidden=32, mlp_hidden=(64,)))
    metrics = cgs.evaluate_cgs(run, n_graphs=40)
    # measured over seeds 0-4: policy accuracy 0.78-0.83 (chance 0.26, myopic argmax-reward 0.74),
    # MAPE 9.2-9.8 % against 20-22 % for the constant training-mean value
    assert metrics["chance_policy_accuracy"] < 0.3
    assert metrics["policy_accuracy"] > 0.7
    assert metrics["mape"] < 0.65 * metrics["baseline_mape"]


def test_saved_run_reloads_with_identical_outputs(porenet_run):
    run, _ = porenet_run
    net, meta = cgs.load_cgs(run)
    again, _ = cgs.load_cgs(run)
    assert meta["task"] == "porenet" and meta["task_params"] == {"n_pores": [8, 20]}
    assert meta["normalisation"]["edge_std"][1] > 0
    batch = cgs.collate(cgs.draw_graphs("porenet", 99, 0, 4, n_pores=(8, 20)))
    with torch.no_grad():
        torch.testing.assert_close(net(batch), again(batch), rtol=0, atol=0)
    # the reloaded model is the trained one, not a fresh initialisation
    fresh = cgs.CGS(net.config).set_normalisation(meta["normalisation"])
    with torch.no_grad():
        assert float((fresh(batch) - net(batch)).abs().max()) > 1e-3


def test_damaged_or_missing_run_raises_checkpoint_error(porenet_run, tmp_path):
    run, _ = porenet_run
    with pytest.raises(CheckpointError, match="not a run directory"):
        cgs.load_cgs(tmp_path / "nowhere")
    with pytest.raises(CheckpointError):
        cgs.evaluate_cgs(tmp_path / "nowhere")
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / META).write_text((run / META).read_text())
    (bad / WEIGHTS).write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00garbage!")
    with pytest.raises(CheckpointError, match="not a readable safetensors file") as info:
        cgs.load_cgs(bad)
    assert "\n" not in str(info.value)
    (bad / WEIGHTS).write_bytes((run / WEIGHTS).read_bytes())
    meta = json.loads((run / META).read_text())
    (bad / META).write_text(json.dumps({**meta, "task": "pagerank"}))
    with pytest.raises(CheckpointError, match="task"):
        cgs.load_cgs(bad)
    (bad / META).write_text(json.dumps({**meta, "config": {**meta["config"], "heads": 3}}))
    with pytest.raises(CheckpointError, match="do not match"):
        cgs.load_cgs(bad)


def test_bad_task_or_parameters_raise_config_error(tmp_path):
    with pytest.raises(ConfigError, match="valid tasks are: porenet, mdp"):
        cgs.train_cgs("pagerank", tmp_path / "r", updates=1, batch_graphs=1)
    with pytest.raises(ConfigError, match="unknown parameter 'n_nodes'"):
        cgs.train_cgs("porenet", tmp_path / "r", updates=1, batch_graphs=1, n_nodes=10)
    with pytest.raises(ConfigError, match="updates"):
        cgs.train_cgs("porenet", tmp_path / "r", updates=0, batch_graphs=1)
    with pytest.raises(ConfigError, match="n_actions"):
        cgs.train_cgs("mdp", tmp_path / "r", updates=1, batch_graphs=1, n_states=(6, 10), n_actions=(5, 9))
    with pytest.raises(ConfigError, match="n_pores"):
        cgs.train_cgs("porenet", tmp_path / "r", updates=1, batch_graphs=1, n_pores=(20, 10))
    with pytest.raises(ConfigError, match="gamma"):
        cgs.CGSConfig(gamma=1.0)
    with pytest.raises(DataError):
        cgs.collate([])
    assert not (tmp_path / "r").exists()  # nothing written by a run that never started


def test_cli_trains_and_scores_cgs(tmp_path, capsys):
    from test_cli import assert_one_line_error, run_cli

    out = tmp_path / "cgs"
    code, stdout, err = run_cli(["train", "cgs", "--task", "porenet", "--steps", 60, "--batch-size", 8, "--out", out,
                                 "--no-progress", "--option", "n_pores=[13,30]"], capsys)
    assert code in (0, None), err
    assert "fixed-point iterations" in stdout
    code, stdout, err = run_cli(["evaluate", out, "--graphs", 10], capsys)
    assert code in (0, None), err
    saved = json.loads((out / "evaluation.json").read_text())
    assert saved["n_graphs"] == 10 and np.isfinite(saved["mse"]) and saved["fixed_point_iterations"] <= 50
    assert f"{saved['mse']:.4g}"[:4] in stdout
    code, _, err = run_cli(["train", "cgs", "--task", "porenet", "--out", out, "--steps", 1], capsys)
    assert_one_line_error(code, err, "already holds a run")
    code, _, err = run_cli(["train", "cgs", "--task", "pagerank", "--out", tmp_path / "x"], capsys)
    assert_one_line_error(code, err, "porenet", "mdp")
    code, _, err = run_cli(["train", "cgs", "--out", tmp_path / "x"], capsys)
    assert_one_line_error(code, err, "--task is required")
    code, _, err = run_cli(["evaluate", out, "--data", tmp_path / "t.h5"], capsys)
    assert_one_line_error(code, err, "drop --data")
