"""Convergent Graph Solvers (Park, Choo, Park, ICLR 2022), in plain torch.

An encoder (attention message passing) reads a graph and builds, per head ``h = 1..H``, a linear
map ``A_h`` on the nodes and a bias ``b_h``; the fixed point of ``z = gamma A_h z + b_h`` is found
by iteration and a decoder reads the node output out of the ``H`` fixed-point values:

    A_h[i, j] = w_h(j -> i) / indeg(i),  w in [0, 1]  =>  ||A_h||_inf <= 1,
    z_h = gamma A_h z_h + b_h  (a contraction with factor gamma = 0.5),   y_i = MLP(z_1..H[i]).

The forward iterations run without autograd; the backward pass differentiates the fixed point
implicitly: with ``u = gamma A^T u + dL/dz`` (again a fixed point, found by iteration),
``dL/db = u`` and ``dL/dA[i, j] = gamma u_i z_j`` (implicit function theorem).

Graph batches are plain tensors (:class:`GraphBatch`, made by :func:`collate`): node features
``(N, Fn)``, edges ``(2, E)`` source -> destination, edge features ``(E, Fe)``, the graph of
every node ``(N,)``. Tasks (``"porenet"``, ``"mdp"``) draw their graphs from
:mod:`sciml.learned.graphs`; :func:`train_cgs` trains on fresh graphs, :func:`evaluate_cgs`
compares a run with the exact solutions and a trivial baseline, :func:`load_cgs` rebuilds it.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import math
import time
from pathlib import Path
from typing import Any, Callable, Literal, Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..config import from_dict, to_dict
from ..errors import CheckpointError, ConfigError, DataError
from ..training.api import register_trainer
from ..io import atomic_write_text
from .. import runs as learned_runs
from .. import runtime
from ..runs import register_kind

KIND = "cgs"

# --------------------------------------------------------------------------- graph batches


@dataclasses.dataclass
class GraphBatch:
    """Graphs stacked into one disconnected graph; node ``i`` belongs to graph ``batch[i]``.

    ``x (N, Fn)`` node features, ``edge_index (2, E)`` rows source and destination,
    ``edge_attr (E, Fe)`` edge features, ``batch (N,)``, ``y (N,)`` targets (or None).
    """

    x: torch.Tensor
    edge_index: torch.Tensor
    edge_attr: torch.Tensor
    batch: torch.Tensor
    num_graphs: int
    y: torch.Tensor | None = None

    @property
    def num_nodes(self) -> int:
        return self.x.shape[0]

    @property
    def src(self) -> torch.Tensor:
        return self.edge_index[0]

    @property
    def dst(self) -> torch.Tensor:
        return self.edge_index[1]

    def to(self, device: str | torch.device) -> "GraphBatch":
        move = lambda t: None if t is None else t.to(device)  # noqa: E731
        return GraphBatch(move(self.x), move(self.edge_index), move(self.edge_attr), move(self.batch),
                          self.num_graphs, move(self.y))


def collate(graphs: list, dtype: torch.dtype = torch.float32) -> GraphBatch:
    """Stack graphs (objects with ``node_features``, ``edge_index``, ``edge_features`` and
    optionally ``target``, as :mod:`sciml.learned.graphs` returns) into a :class:`GraphBatch`."""
    if not graphs:
        raise DataError("collate needs at least one graph, got an empty list")
    xs, eis, eas, ys, owner = [], [], [], [], []
    offset = 0
    for k, g in enumerate(graphs):
        x = np.asarray(g.node_features, np.float64)
        ei = np.asarray(g.edge_index, np.int64)
        ea = np.asarray(g.edge_features, np.float64)
        if x.ndim != 2 or ei.ndim != 2 or ei.shape[0] != 2 or ea.shape[0] != ei.shape[1]:
            raise DataError(f"graph {k}: need node_features (N, F), edge_index (2, E) and edge_features (E, F'), "
                            f"got shapes {x.shape}, {ei.shape}, {ea.shape}")
        if ei.size and (ei.min() < 0 or ei.max() >= x.shape[0]):
            raise DataError(f"graph {k}: edge_index refers to nodes outside 0..{x.shape[0] - 1}")
        xs.append(x)
        eis.append(ei + offset)
        eas.append(ea)
        target = getattr(g, "target", None)
        ys.append(None if target is None else np.asarray(target, np.float64).reshape(-1))
        owner.append(np.full(x.shape[0], k))
        offset += x.shape[0]
    if len({x.shape[1] for x in xs}) > 1 or len({e.shape[1] for e in eas}) > 1:
        raise DataError("collate: all graphs need the same numbers of node and edge features")
    y = None if any(v is None for v in ys) else torch.as_tensor(np.concatenate(ys), dtype=dtype)
    return GraphBatch(
        x=torch.as_tensor(np.concatenate(xs), dtype=dtype),
        edge_index=torch.as_tensor(np.concatenate(eis, axis=1)),
        edge_attr=torch.as_tensor(np.concatenate(eas), dtype=dtype),
        batch=torch.as_tensor(np.concatenate(owner)),
        num_graphs=len(graphs),
        y=y,
    )


# --------------------------------------------------------------------------- the linear maps


def contraction_weights(logits: torch.Tensor, dst: torch.Tensor, num_nodes: int, mode: str = "clip") -> torch.Tensor:
    """Edge weights ``(E, H)`` of ``A_h[dst, src]``: ``w / indeg(dst)`` with ``w`` in [0, 1].

    Each row ``i`` of ``A_h`` sums ``indeg(i)`` weights at most ``1 / indeg(i)`` each, so
    ``||A_h||_inf <= 1``. ``mode``: ``"clip"`` (the paper's clamp to [0, 1]) or ``"sigmoid"``.
    """
    w = logits.clamp(0.0, 1.0) if mode == "clip" else torch.sigmoid(logits)
    deg = torch.bincount(dst, minlength=num_nodes).clamp_min(1).to(w.dtype)
    return w / deg[dst].unsqueeze(-1)


def matvec(w: torch.Tensor, z: torch.Tensor, src: torch.Tensor, dst: torch.Tensor) -> torch.Tensor:
    """``(A_h z_h)`` for all heads at once: ``w (E, H)``, ``z (N, H)`` -> ``(N, H)``."""
    return torch.zeros_like(z).index_add_(0, dst, w * z.index_select(0, src))


def rmatvec(w: torch.Tensor, u: torch.Tensor, src: torch.Tensor, dst: torch.Tensor) -> torch.Tensor:
    """``(A_h^T u_h)`` for all heads at once: ``w (E, H)``, ``u (N, H)`` -> ``(N, H)``."""
    return torch.zeros_like(u).index_add_(0, src, w * u.index_select(0, dst))


def dense_operators(w: torch.Tensor, src: torch.Tensor, dst: torch.Tensor, num_nodes: int) -> torch.Tensor:
    """``(H, N, N)`` dense ``A_h`` (for tests and small graphs)."""
    heads = w.shape[1]
    a = w.new_zeros(heads, num_nodes, num_nodes)
    a.index_put_((torch.arange(heads).repeat_interleave(w.shape[0]), dst.repeat(heads), src.repeat(heads)),
                 w.T.reshape(-1), accumulate=True)
    return a


@torch.no_grad()
def iterate_fixed_point(w: torch.Tensor, b: torch.Tensor, src: torch.Tensor, dst: torch.Tensor, gamma: float,
                        tol: float, max_iter: int, transpose: bool = False) -> tuple[torch.Tensor, int, float]:
    """``z = gamma A z + b`` (``A^T`` if ``transpose``) by iteration from ``z = 0``.

    Stops when ``max |z_k+1 - z_k| <= tol`` or after ``max_iter`` products. Returns
    ``(z (N, H), products, last max |z_k+1 - z_k|)``.
    """
    apply = rmatvec if transpose else matvec
    z = b.clone()  # the first iterate from z = 0
    change = float(b.abs().max()) if b.numel() else 0.0
    its = 0
    while its < max_iter and change > tol:
        new = gamma * apply(w, z, src, dst) + b
        change = float((new - z).abs().max())
        z = new
        its += 1
    return z, its, change


class _FixedPoint(torch.autograd.Function):
    """``z* (w, b)`` with the implicit-function-theorem backward pass."""

    @staticmethod
    def forward(ctx, w, b, src, dst, gamma, tol, max_iter, stats):
        z, its, change = iterate_fixed_point(w, b, src, dst, gamma, tol, max_iter)
        stats.update(forward_iterations=its, forward_change=change)
        ctx.save_for_backward(w, z, src, dst)
        ctx.settings = (gamma, tol, max_iter, stats)
        return z

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_z):
        w, z, src, dst = ctx.saved_tensors
        gamma, tol, max_iter, stats = ctx.settings
        # adjoint: (I - gamma A)^T u = dL/dz, again a contraction (spectral radius <= gamma). It is
        # linear in dL/dz, whose scale is the loss's business, so its tolerance is relative.
        grad_z = grad_z.contiguous()
        scale = float(grad_z.abs().max()) if grad_z.numel() else 0.0
        u, its, change = iterate_fixed_point(w, grad_z, src, dst, gamma, tol * scale, max_iter, transpose=True)
        stats.update(backward_iterations=its, backward_change=change)
        grad_w = gamma * u[dst] * z[src] if ctx.needs_input_grad[0] else None
        grad_b = u if ctx.needs_input_grad[1] else None
        return grad_w, grad_b, None, None, None, None, None, None


def fixed_point(w: torch.Tensor, b: torch.Tensor, src: torch.Tensor, dst: torch.Tensor, gamma: float = 0.5,
                tol: float = 1e-6, max_iter: int = 50, stats: dict | None = None) -> torch.Tensor:
    """Fixed point ``z (N, H)`` of ``z = gamma A z + b`` with implicit gradients w.r.t. ``w`` and ``b``.

    ``w (E, H)`` the entries ``A_h[dst, src]``, ``b (N, H)``. The forward iteration stops at
    ``max |z_k+1 - z_k| <= tol``; the adjoint ``u = gamma A^T u + dL/dz`` at
    ``max |u_k+1 - u_k| <= tol max |dL/dz|``; both after ``max_iter`` products at most.
    ``stats`` (a dict, optional) receives the iteration counts and last changes of the forward
    and, after ``backward``, the adjoint solve.
    """
    return _FixedPoint.apply(w, b, src, dst, float(gamma), float(tol), int(max_iter), {} if stats is None else stats)


# --------------------------------------------------------------------------- the network

_ACTIVATIONS = {"leaky_relu": nn.LeakyReLU, "relu": nn.ReLU, "silu": nn.SiLU, "gelu": nn.GELU}


def _mlp(sizes: list[int], activation: str) -> nn.Sequential:
    layers: list[nn.Module] = []
    for k in range(len(sizes) - 1):
        layers.append(nn.Linear(sizes[k], sizes[k + 1]))
        if k < len(sizes) - 2:
            layers.append(_ACTIVATIONS[activation]())
    return nn.Sequential(*layers)


def segment_softmax(scores: torch.Tensor, index: torch.Tensor, num_segments: int) -> torch.Tensor:
    """Softmax of ``scores (E, K)`` over the edges sharing ``index`` (their destination)."""
    top = scores.new_full((num_segments, scores.shape[1]), -math.inf)
    top = top.scatter_reduce(0, index.unsqueeze(-1).expand_as(scores), scores, "amax", include_self=True)
    e = torch.exp(scores - top[index])
    total = torch.zeros_like(top).index_add_(0, index, e)
    return e / total[index]


class AttentionGN(nn.Module):
    """One attention graph-network layer (edge update, attention over in-edges, node update).

    ``m = [e_ij, h_i, h_j]``, ``e'_ij = phi_e(m)``, ``alpha_ij = softmax_{i -> j}(phi_a(m))``,
    ``h'_j = phi_n([sum_i alpha_ij e'_ij, h_j])`` (edge ``i -> j``; MLPs ``phi`` with ``hidden``
    layers). The first layers of ``phi_e`` and ``phi_a`` act on the concatenation ``m``, so they
    are applied as ``W_e e + (W_s h)[i] + (W_d h)[j]``: the node parts once per node, not per edge.
    """

    def __init__(self, node_in: int, edge_in: int, node_out: int, edge_out: int, hidden: tuple[int, ...],
                 activation: str):
        super().__init__()
        self.widths = (hidden[0], hidden[0]) if hidden else (edge_out, 1)
        width = sum(self.widths)
        self.from_edge = nn.Linear(edge_in, width)
        self.from_src = nn.Linear(node_in, width, bias=False)
        self.from_dst = nn.Linear(node_in, width, bias=False)
        bound = 1 / math.sqrt(edge_in + 2 * node_in)  # nn.Linear's init of the concatenated layer
        for layer in (self.from_edge, self.from_src, self.from_dst):
            for p in layer.parameters():
                nn.init.uniform_(p, -bound, bound)
        self.edge_rest = _mlp([self.widths[0], *hidden[1:], edge_out], activation) if hidden else nn.Identity()
        self.attn_rest = _mlp([self.widths[1], *hidden[1:], 1], activation) if hidden else nn.Identity()
        self.act = _ACTIVATIONS[activation]() if hidden else nn.Identity()
        self.node_mlp = _mlp([edge_out + node_in, *hidden, node_out], activation)

    def forward(self, h: torch.Tensor, e: torch.Tensor, src: torch.Tensor, dst: torch.Tensor):
        pre = self.from_edge(e) + self.from_src(h).index_select(0, src) + self.from_dst(h).index_select(0, dst)
        pre_e, pre_a = self.act(pre).split(self.widths, dim=-1)
        e_new = self.edge_rest(pre_e)
        alpha = segment_softmax(self.attn_rest(pre_a), dst, h.shape[0])
        agg = torch.zeros(h.shape[0], e_new.shape[1], dtype=h.dtype, device=h.device).index_add_(0, dst, alpha * e_new)
        return self.node_mlp(torch.cat([agg, h], dim=-1)), e_new


@dataclasses.dataclass(frozen=True)
class CGSConfig:
    """CGS architecture. Defaults: the paper's pore-network model (16 heads, no hidden GN layer,
    hidden 32, GN MLPs [64], decoder [64, 32], LeakyReLU, gamma 0.5, tol 1e-6, 50 iterations).

    ``gn_layers`` hidden attention-GN layers come before the one that outputs the ``heads`` edge
    logits and biases. ``edge_weight``: ``"clip"`` (paper) or ``"sigmoid"`` maps logits to [0, 1].
    ``decode_features``: the decoder also reads the (normalised) node features.
    """

    node_in: int = 5
    edge_in: int = 3
    heads: int = 16
    gn_layers: int = 0
    node_hidden: int = 32
    edge_hidden: int = 32
    mlp_hidden: tuple[int, ...] = (64,)
    decoder_hidden: tuple[int, ...] = (64, 32)
    gamma: float = 0.5
    tol: float = 1e-6
    max_iter: int = 50
    edge_weight: Literal["clip", "sigmoid"] = "clip"
    activation: Literal["leaky_relu", "relu", "silu", "gelu"] = "leaky_relu"
    decode_features: bool = False

    def __post_init__(self) -> None:
        for key in ("node_in", "edge_in", "heads", "node_hidden", "edge_hidden", "max_iter"):
            if not isinstance(getattr(self, key), int) or getattr(self, key) < 1:
                raise ConfigError(f"cgs {key} must be an integer >= 1, got {getattr(self, key)!r}")
        if not isinstance(self.gn_layers, int) or self.gn_layers < 0:
            raise ConfigError(f"cgs gn_layers must be an integer >= 0, got {self.gn_layers!r}")
        if not 0 < self.gamma < 1:
            raise ConfigError(f"cgs gamma must lie in (0, 1) for z = gamma A z + b to contract, got {self.gamma}")
        if not self.tol > 0:
            raise ConfigError(f"cgs tol must be > 0, got {self.tol}")
        if any(n < 1 for n in (*self.mlp_hidden, *self.decoder_hidden)):
            raise ConfigError("cgs mlp_hidden and decoder_hidden must hold positive layer widths")
        if self.edge_weight not in ("clip", "sigmoid") or self.activation not in _ACTIVATIONS:
            raise ConfigError(f"cgs edge_weight must be 'clip' or 'sigmoid' and activation one of "
                              f"{sorted(_ACTIVATIONS)}, got {self.edge_weight!r}, {self.activation!r}")


class CGS(nn.Module):
    """Convergent graph solver: ``forward(batch: GraphBatch) -> (N,)`` node outputs.

    Features are standardised with ``normalisation`` statistics (set by :meth:`set_normalisation`,
    saved in the run's metadata, not in the weights); the output is in target units.
    """

    def __init__(self, config: CGSConfig | dict | None = None):
        super().__init__()
        if not isinstance(config, CGSConfig):
            config = from_dict(CGSConfig, config or {}, where="cgs config")
        self.config = c = config
        nodes = [c.node_in] + [c.node_hidden] * c.gn_layers + [c.heads]
        edges = [c.edge_in] + [c.edge_hidden] * c.gn_layers + [c.heads]
        self.encoder = nn.ModuleList(
            AttentionGN(nodes[k], edges[k], nodes[k + 1], edges[k + 1], c.mlp_hidden, c.activation)
            for k in range(c.gn_layers + 1)
        )
        self.act = _ACTIVATIONS[c.activation]()
        dec_in = c.heads + (c.node_in if c.decode_features else 0)
        self.decoder = _mlp([dec_in, *c.decoder_hidden, 1], c.activation)
        self.stats: dict = {}
        for name, size in (("node_mean", c.node_in), ("edge_mean", c.edge_in), ("target_mean", 1)):
            self.register_buffer(name, torch.zeros(size), persistent=False)
            self.register_buffer(name.replace("mean", "std"), torch.ones(size), persistent=False)

    def config_dict(self) -> dict:
        return to_dict(self.config)

    def normalisation(self) -> dict:
        return {k: getattr(self, k).tolist() for k in
                ("node_mean", "node_std", "edge_mean", "edge_std", "target_mean", "target_std")}

    def set_normalisation(self, stats: dict) -> "CGS":
        """Set ``node_mean/std (Fn)``, ``edge_mean/std (Fe)``, ``target_mean/std (1)`` from lists."""
        valid = set(self.normalisation())
        for key, value in stats.items():
            if key not in valid:
                raise ConfigError(f"unknown normalisation statistic {key!r}; valid: {', '.join(sorted(valid))}")
            buf = getattr(self, key)
            value = torch.as_tensor(value, dtype=buf.dtype).reshape(buf.shape)
            buf.copy_(value)
        return self

    def encode(self, batch: GraphBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """``(weights (E, H) of A_h, bias (N, H))``."""
        h = (batch.x - self.node_mean) / self.node_std
        e = (batch.edge_attr - self.edge_mean) / self.edge_std
        for k, layer in enumerate(self.encoder):
            h, e = layer(h, e, batch.src, batch.dst)
            if k < len(self.encoder) - 1:
                h, e = self.act(h), self.act(e)
        return contraction_weights(e, batch.dst, batch.num_nodes, self.config.edge_weight), h

    def solve(self, batch: GraphBatch) -> torch.Tensor:
        """The fixed points ``z (N, H)``; the iteration counts land in ``self.stats``."""
        w, b = self.encode(batch)
        self.stats = {}
        return fixed_point(w, b, batch.src, batch.dst, self.config.gamma, self.config.tol, self.config.max_iter,
                           self.stats)

    def decode(self, z: torch.Tensor, batch: GraphBatch) -> torch.Tensor:
        if self.config.decode_features:
            z = torch.cat([z, (batch.x - self.node_mean) / self.node_std], dim=-1)
        return self.decoder(z).squeeze(-1) * self.target_std + self.target_mean

    def forward(self, batch: GraphBatch) -> torch.Tensor:
        return self.decode(self.solve(batch), batch)


# --------------------------------------------------------------------------- tasks


@dataclasses.dataclass(frozen=True)
class _Task:
    name: str
    make: Callable  # (rng, **params) -> graph
    model: dict  # the paper's model for the task (CGSConfig fields)
    train: dict  # the paper's protocol (updates, batch_graphs, heads, gn_layers)


def _tasks() -> dict[str, _Task]:
    from . import graphs

    return {
        "porenet": _Task("porenet", graphs.pore_network, dict(node_in=5, edge_in=3, node_hidden=32, edge_hidden=32,
                                                             mlp_hidden=(64,), decoder_hidden=(64, 32)),
                         dict(updates=1000, batch_graphs=32, heads=16, gn_layers=0)),
        "mdp": _Task("mdp", graphs.random_mdp, dict(node_in=1, edge_in=1, node_hidden=64, edge_hidden=64,
                                                    mlp_hidden=(128,), decoder_hidden=(64, 32)),
                     dict(updates=5000, batch_graphs=64, heads=64, gn_layers=3)),
    }


TASKS = ("porenet", "mdp")


def _task(name: str) -> _Task:
    tasks = _tasks()
    if name not in tasks:
        raise ConfigError(f"unknown CGS task {name!r}; valid tasks are: {', '.join(TASKS)}")
    return tasks[name]


def _check_task_params(task: _Task, params: dict) -> dict:
    valid = [p for p in inspect.signature(task.make).parameters if p != "rng"]
    for key in params:
        if key not in valid:
            raise ConfigError(f"unknown parameter {key!r} for CGS task {task.name!r}; valid: {', '.join(valid)}")
    try:
        plain = json.loads(json.dumps(params, default=lambda v: v.tolist() if hasattr(v, "tolist") else list(v)))
        task.make(np.random.default_rng(0), **plain)  # bad values fail here, not mid-training
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"bad parameters {params} for CGS task {task.name!r} ({exc})") from None
    return plain


def draw_graphs(task: str, seed: int, index: int, n: int, **params: Any) -> list:
    """``n`` graphs of ``task`` drawn from ``numpy.random.default_rng([seed, index])``."""
    make = _task(task).make
    rng = np.random.default_rng([seed, index])
    return [make(rng, **params) for _ in range(n)]


def _normalisation(batch: GraphBatch) -> dict:
    def stats(t: torch.Tensor) -> tuple[list, list]:
        std = t.std(dim=0)
        # a constant feature (the MDP's dummy node feature) is left unscaled
        return t.mean(dim=0).tolist(), torch.where(std > 1e-8, std, torch.ones_like(std)).tolist()

    nm, ns = stats(batch.x)
    em, es = stats(batch.edge_attr)
    tm, ts = stats(batch.y.unsqueeze(-1))
    return dict(node_mean=nm, node_std=ns, edge_mean=em, edge_std=es, target_mean=tm, target_std=ts)


# --------------------------------------------------------------------------- training


def _check_training(updates, batch_graphs, lr, heads, gn_layers, regenerate_every, log_every) -> None:
    ints = dict(updates=updates, batch_graphs=batch_graphs, heads=heads, regenerate_every=regenerate_every,
                log_every=log_every)
    for key, value in ints.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"train_cgs {key} must be an integer >= 1, got {value!r}")
    if isinstance(gn_layers, bool) or not isinstance(gn_layers, int) or gn_layers < 0:
        raise ConfigError(f"train_cgs gn_layers must be an integer >= 0, got {gn_layers!r}")
    if not (isinstance(lr, (int, float)) and math.isfinite(lr) and lr > 0):
        raise ConfigError(f"train_cgs lr must be a positive number, got {lr!r}")


def train_cgs(
    task: str,
    out: str | Path,
    *,
    updates: int | None = None,
    batch_graphs: int | None = None,
    lr: float = 1e-3,
    seed: int = 0,
    heads: int | None = None,
    gn_layers: int | None = None,
    progress: bool = True,
    regenerate_every: int = 32,
    log_every: int = 25,
    model: dict | None = None,
    **task_params: Any,
) -> dict:
    """Train a CGS on fresh random graphs of ``task`` ("porenet" or "mdp") into run directory ``out``.

    The paper's protocol is the default (None: take it): Adam (``lr`` 1e-3) with cosine warm
    restarts (T0 = 32 updates), MSE loss (on standardised targets), a new batch of graphs every
    ``regenerate_every`` = 32 updates; porenet: 1000 updates of 32 graphs, 16 heads, no hidden GN
    layer; mdp: 5000 updates of 64 graphs, 64 heads, 3 hidden GN layers. Measured on one CPU
    thread: ~0.1 s per porenet update (1000 in ~2 min), ~0.35 s per mdp update (5000 in ~30 min);
    pass fewer updates for a quick run. Batch ``j`` of graphs is drawn
    from ``default_rng([seed, j])``; the weights start from ``torch.manual_seed(seed)``.
    ``model``: overrides of :class:`CGSConfig` fields; ``task_params``: keywords of the graph
    generator (``pore_network`` / ``random_mdp``), e.g. ``n_pores=(13, 86)``.

    Writes the run directory (:mod:`sciml.runs`: weights, ``run.json`` with config, task, task_params, normalisation) and
    ``metrics.jsonl`` (loss per update, written every ``log_every`` updates and at the end).
    Returns a summary dict.
    """
    spec = _task(task)
    updates = spec.train["updates"] if updates is None else updates
    batch_graphs = spec.train["batch_graphs"] if batch_graphs is None else batch_graphs
    heads = spec.train["heads"] if heads is None else heads
    gn_layers = spec.train["gn_layers"] if gn_layers is None else gn_layers
    _check_training(updates, batch_graphs, lr, heads, gn_layers, regenerate_every, log_every)
    params = _check_task_params(spec, task_params)
    overrides = dict(model or {})
    for key in ("heads", "gn_layers", "node_in", "edge_in"):
        if key in overrides:
            raise ConfigError(f"model override {key!r} is set by train_cgs itself (pass heads=/gn_layers=)")
    config = from_dict(CGSConfig, {**spec.model, "heads": heads, "gn_layers": gn_layers, **overrides},
                       where="cgs model config")

    out = learned_runs.check_new(out)
    torch.manual_seed(seed)
    net = CGS(config)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(opt, T_0=32)
    rows: list[dict] = []
    start = time.perf_counter()
    with runtime.progress(updates, f"cgs {task}", enabled=progress, text="loss {task.fields[loss]}",
                          fields={"loss": "-"}) as advance:
        for i in range(updates):
            if i % regenerate_every == 0:
                batch = collate(draw_graphs(task, seed, i // regenerate_every, batch_graphs, **params))
                if i == 0:
                    net.set_normalisation(_normalisation(batch))
            pred = net(batch)
            loss = F.mse_loss(pred, batch.y)
            scaled = loss / net.target_std.square().squeeze()  # MSE of standardised targets
            opt.zero_grad(set_to_none=True)
            scaled.backward()
            opt.step()
            sched.step()
            value = loss.item()
            rows.append(dict(update=i + 1, loss=value, lr=opt.param_groups[0]["lr"],
                             forward_iterations=net.stats.get("forward_iterations"),
                             backward_iterations=net.stats.get("backward_iterations"),
                             time_s=round(time.perf_counter() - start, 3)))
            advance(loss=f"{value:.3e}")
            if (i + 1) % log_every == 0:
                learned_runs.write_metrics(out, rows)
    train_time = time.perf_counter() - start
    learned_runs.write_metrics(out, rows)
    training = dict(updates=updates, batch_graphs=batch_graphs, lr=lr, seed=seed, regenerate_every=regenerate_every,
                    train_time_s=round(train_time, 3))
    learned_runs.save_network(out, KIND, net.config_dict(), net, extra=dict(
        task=task, task_params=params, normalisation=net.normalisation(), training=training))
    tail = rows[-min(len(rows), regenerate_every):]
    return dict(run_dir=str(out), task=task, updates=updates, train_time_s=train_time,
                final_loss=float(np.mean([r["loss"] for r in tail])),
                mean_forward_iterations=float(np.mean([r["forward_iterations"] for r in rows])),
                parameters=sum(p.numel() for p in net.parameters()))


# --------------------------------------------------------------------------- loading, evaluation


def load_cgs(run_dir: str | Path) -> tuple[CGS, dict]:
    """``(model in eval mode, metadata)`` of a :func:`train_cgs` run; CheckpointError if it is
    missing, damaged or not a CGS run."""
    state, meta = learned_runs.read_network(run_dir, kind=KIND)
    if meta.get("task") not in TASKS or not isinstance(meta.get("normalisation"), dict):
        raise CheckpointError(f"{Path(run_dir) / learned_runs.META} lacks a valid 'task' or 'normalisation'; "
                              "retrain the run")
    try:
        net = CGS(from_dict(CGSConfig, meta["config"], where=f"{run_dir} cgs config"))
        net.set_normalisation(meta["normalisation"])
    except (ConfigError, AttributeError, RuntimeError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{run_dir}: the saved CGS config or normalisation is invalid ({exc}); "
                              "retrain the run") from None
    learned_runs.load_state(net, state, run_dir)
    return net, meta


register_kind(KIND, load_cgs)


def _porenet_metrics(graphs: list, pred: np.ndarray) -> dict:
    mse, rel, base_mse, base_rel = [], [], [], []
    for g, p in zip(graphs, pred):
        base = 1.0 - g.positions[:, 0]  # linear in x, exact on the inlet and outlet
        for guess, m, r in ((p, mse, rel), (base, base_mse, base_rel)):
            err = guess - g.pressure
            m.append(np.mean(err**2))
            r.append(np.linalg.norm(err) / np.linalg.norm(g.pressure))
    return dict(mse=float(np.mean(mse)), rel_l2=float(np.mean(rel)), baseline="1 - x",
                baseline_mse=float(np.mean(base_mse)), baseline_rel_l2=float(np.mean(base_rel)))


def _mdp_metrics(graphs: list, pred: np.ndarray, constant: float) -> dict:
    from .graphs import greedy_policy

    mape, acc, base_mape, base_acc, chance = [], [], [], [], []
    for g, v in zip(graphs, pred):
        mape.append(100 * np.mean(np.abs((v - g.value) / g.value)))
        acc.append(np.mean(greedy_policy(g, v) == g.policy))
        base_mape.append(100 * np.mean(np.abs((constant - g.value) / g.value)))
        base_acc.append(np.mean(g.reward.argmax(axis=1) == g.policy))
        chance.append(1.0 / g.n_actions)
    return dict(mape=float(np.mean(mape)), policy_accuracy=float(np.mean(acc)),
                baseline="constant value (training mean), myopic policy (argmax reward)",
                baseline_mape=float(np.mean(base_mape)), baseline_policy_accuracy=float(np.mean(base_acc)),
                chance_policy_accuracy=float(np.mean(chance)))


@torch.no_grad()
def predict(net: CGS, graphs: list, batch_graphs: int = 32) -> tuple[list[np.ndarray], list[int]]:
    """Node outputs of ``net`` for each graph (float64 arrays) and the forward iterations per batch."""
    outputs, iterations = [], []
    for k in range(0, len(graphs), batch_graphs):
        chunk = graphs[k:k + batch_graphs]
        batch = collate(chunk)
        y = net(batch).double().numpy()
        iterations.append(int(net.stats["forward_iterations"]))
        sizes = np.cumsum([g.n_nodes for g in chunk])[:-1]
        outputs.extend(np.split(y, sizes))
    return outputs, iterations


def evaluate_cgs(run_dir: str | Path, n_graphs: int = 100, seed: int = 12345, batch_graphs: int = 32) -> dict:
    """Metrics of a trained CGS on ``n_graphs`` fresh graphs (graph ``i`` from ``default_rng([seed, i])``).

    porenet: pressure MSE and relative L2 against the exact sparse solve, per graph, averaged, and
    the same for the linear profile ``p = 1 - x``. mdp: value MAPE (%) and greedy-policy accuracy
    per graph, averaged (paper §6.2), with a constant-value / myopic-policy baseline and chance.
    Both: the mean number of fixed-point iterations per batch. Written to ``evaluation.json``.
    """
    if isinstance(n_graphs, bool) or not isinstance(n_graphs, int) or n_graphs < 1:
        raise ConfigError(f"evaluate_cgs n_graphs must be an integer >= 1, got {n_graphs!r}")
    net, meta = load_cgs(run_dir)
    task = meta["task"]
    make = _task(task).make
    params = meta.get("task_params") or {}
    graphs = [make(np.random.default_rng([seed, i]), **params) for i in range(n_graphs)]
    start = time.perf_counter()
    pred, iterations = predict(net, graphs, batch_graphs)
    elapsed = time.perf_counter() - start
    if task == "porenet":
        metrics = _porenet_metrics(graphs, pred)
    else:
        metrics = _mdp_metrics(graphs, pred, float(meta["normalisation"]["target_mean"][0]))
    metrics.update(task=task, n_graphs=n_graphs, seed=seed, mean_nodes=float(np.mean([g.n_nodes for g in graphs])),
                   fixed_point_iterations=float(np.mean(iterations)), inference_s=elapsed)
    atomic_write_text(Path(run_dir) / "evaluation.json", json.dumps(metrics, indent=2) + "\n")
    return metrics


@dataclasses.dataclass(frozen=True)
class CGSTrainOptions:
    """Options of ``sciml.training.train("cgs", ...)`` (the shared vocabulary; see :func:`train_cgs`).

    task: ``porenet`` or ``mdp``. steps: optimiser updates; epochs: the same count (each update is
    one pass over the graphs held; a new batch is drawn every ``regenerate_every`` updates); give
    one of them or neither (the paper's count). batch_size: graphs per batch. params: keywords
    of the task's graph generator. model_config: :class:`CGSConfig` overrides. device: cgs
    trains on the CPU.
    """

    task: Optional[str] = None
    steps: Optional[int] = None
    epochs: Optional[int] = None
    batch_size: Optional[int] = None
    lr: float = 1e-3
    seed: int = 0
    heads: Optional[int] = None
    gn_layers: Optional[int] = None
    regenerate_every: int = 32
    log_every: int = 25
    params: dict = dataclasses.field(default_factory=dict)
    model_config: dict = dataclasses.field(default_factory=dict)
    device: str = "cpu"

    def __post_init__(self) -> None:
        if self.task is None:
            raise ConfigError("--task is required for cgs: porenet (pore-network pressure) or mdp (graph value iteration)")
        if self.steps is not None and self.epochs is not None:
            raise ConfigError("give cgs either steps or epochs (one update is one pass over the graphs held), not both")
        if self.device not in ("auto", "cpu"):
            raise ConfigError("cgs trains on the CPU (its graphs are small); drop --device")


def _summary(r: dict) -> str:
    return (f"run {r['run_dir']}: cgs {r['task']}, {r['updates']} updates, {r['parameters']} parameters, "
            f"final loss {r['final_loss']:.4g}, {r['mean_forward_iterations']:.1f} fixed-point iterations; "
            f"score it with `sciml evaluate {r['run_dir']}`")


@register_trainer(KIND, CGSTrainOptions, _summary, needs_data=False)
def _fit(model, data, out: Path, options: dict, progress: bool, test_data) -> dict:
    """``sciml.training.train("cgs", task="porenet", steps=...)``."""
    options.pop("model", None)
    spec = _task(options["task"]) if options.get("task") in TASKS else None
    if spec is not None:  # the graph generator's keywords may also be given as options (--option n_pores=...)
        make = [p for p in inspect.signature(spec.make).parameters if p != "rng"]
        moved = {k: options.pop(k) for k in list(options) if k in make}
        options["params"] = {**options.get("params", {}), **moved}
    o = from_dict(CGSTrainOptions, options, "cgs training options")
    return train_cgs(o.task, out, updates=o.epochs if o.steps is None else o.steps, batch_graphs=o.batch_size, lr=o.lr,
                     seed=o.seed, heads=o.heads, gn_layers=o.gn_layers, progress=progress,
                     regenerate_every=o.regenerate_every, log_every=o.log_every, model=o.model_config or None, **o.params)
