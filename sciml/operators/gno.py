"""Graph neural operator (Li, Kovachki et al., "Neural Operator: Graph Kernel Network for Partial
Differential Equations", 2020; Kovachki et al., "Neural Operator", JMLR 2023, section on GNO).

A point operator: the kernel integral ``int_{B(x, r)} kappa(x, y, a(x), a(y)) v(y) dy`` is
approximated by the mean over the input points within radius ``r`` of ``x`` (a radius graph,
built in plain torch and cached), with the kernel ``kappa`` an MLP of the edge features.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Literal, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError, ModelError
from .base import Operator, register

_ACTIVATIONS = {"relu": F.relu, "gelu": F.gelu, "tanh": torch.tanh, "silu": F.silu}
_ACTIVATION_MODULES = {"relu": nn.ReLU, "gelu": nn.GELU, "tanh": nn.Tanh, "silu": nn.SiLU}
_KERNELS = ("full", "diagonal")

# distances computed per block of query rows, so a 50k-point graph never holds an N x N matrix
# (2**22 float32 entries = 16 MiB per block; 50k random points, cap 32: 8 s, 0.4 GB peak, 2 threads)
_BLOCK_ENTRIES = 2**22
# On the CPU the batch runs in chunks of samples whose edge tensors (edges x channels) hold about
# this many floats (4 MiB), so the ~10 passes over them per iteration hit the cache. A training
# step at batch 20 on a 32x32 grid (13 neighbours, 32 channels, 2 threads): 0.43 s unchunked,
# 0.17 s in chunks of 2 samples; with index_add_/index_select, as fast here as segmented sums.
_CHUNK_FLOATS = 2**20
# a point at exactly the radius (common on grids, r = k * h), or tied with the first point a cap
# leaves out, must not flip in or out with the rounding of its coordinates
_RADIUS_RTOL = 1e-5


@dataclasses.dataclass(frozen=True)
class GNOConfig:
    """GNO architecture; defaults give a small model for CPU training (see below).

    ``width`` channels of ``v``; ``depth`` kernel-integral iterations sharing one kernel network
    (as the paper's code: one ``NNConv`` applied ``depth`` times); ``kernel_width`` hidden size of
    the kernel MLP ``(x, y, a(x), a(y)) -> kernel_width -> kernel_width -> kappa`` (two hidden
    layers, as the paper's ``DenseNet``). ``kernel``: ``"full"`` (kappa a ``width x width``
    matrix per edge, the paper's choice; ``width**2`` outputs and a ``width x width`` product per
    edge) or ``"diagonal"`` (``width`` numbers multiplying ``v(y)`` channel-wise).
    ``radius`` in the coordinates' units (grids arrive as ``linspace(0, 1, s)`` per axis);
    ``max_neighbors`` keeps the nearest ones (None: all; see :func:`radius_graph` for ties).
    ``projection``: hidden width of the two-layer ``Q`` (0: one linear map, as the paper's code).
    ``query_kernel``: build the kernel network that carries ``v_T`` to query points other than the
    input points (False: the paper's model, which evaluates at its input points only).

    Defaults: radius 0.1 with 16 neighbours at most, i.e. the 3x3 stencil on a 16x16 grid and
    the 13 points within 2h on 32x32 to 85x85 grids (ties at the cap are dropped together);
    10,177 parameters. Measured (2 CPU threads): a training step at batch 20 takes 0.18 s on
    32x32 (1.8 s per epoch of 200 samples with a 50-sample test pass) and 1.45 s on 85x85.
    """

    in_channels: int = 1
    out_channels: int = 1
    coord_dim: int = 2
    width: int = 32
    kernel_width: int = 32
    depth: int = 4
    radius: float = 0.1
    max_neighbors: int | None = 16
    kernel: Literal["full", "diagonal"] = "diagonal"
    activation: Literal["relu", "gelu", "tanh", "silu"] = "relu"
    projection: int = 128
    query_kernel: bool = True

    def __post_init__(self) -> None:
        for key in ("in_channels", "out_channels", "width", "kernel_width", "depth"):
            if getattr(self, key) < 1:
                raise ConfigError(f"gno {key} must be >= 1, got {getattr(self, key)}")
        if self.coord_dim not in (1, 2, 3):
            raise ConfigError(f"gno coord_dim must be 1, 2 or 3 (spatial dims of the points), got {self.coord_dim}")
        if not (math.isfinite(self.radius) and self.radius > 0):
            raise ConfigError(
                f"gno radius must be a finite number > 0 in the coordinates' units (grids span [0, 1]), "
                f"got {self.radius}"
            )
        if self.max_neighbors is not None and self.max_neighbors < 1:
            raise ConfigError(f"gno max_neighbors must be >= 1 or null (no cap), got {self.max_neighbors}")
        if self.kernel not in _KERNELS:
            raise ConfigError(f"gno kernel must be one of {list(_KERNELS)}, got {self.kernel!r}")
        if self.activation not in _ACTIVATIONS:
            raise ConfigError(f"gno activation must be one of {sorted(_ACTIVATIONS)}, got {self.activation!r}")
        if self.projection < 0:
            raise ConfigError(f"gno projection must be >= 0 (0: a single linear map), got {self.projection}")


# ----------------------------------------------------------------------------- radius graph


def radius_graph(
    points_out: torch.Tensor, points_in: torch.Tensor, radius: float, max_neighbors: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Edges ``(dst, src)`` from the input points ``(N_in, d)`` to the query points ``(N_out, d)``.

    The neighbours of query ``i`` are the input points ``j`` with ``|x_i - y_j| <= radius``, the
    ``max_neighbors`` nearest of them when capped (less the points as near as the first one left
    out, so ties are kept or dropped together), and always the nearest input point (for
    ``points_out = points_in`` the point itself, so no point is left without an edge). Distances
    are exact differences (not the ``|x|^2 - 2 x.y + |y|^2`` GEMM form), taken in blocks of query
    rows so memory stays bounded. Returns int64 tensors ``dst`` (query index) and ``src`` (input
    index), grouped by ``dst``, nearest first when capped.
    """
    n_out, n_in = points_out.shape[0], points_in.shape[0]
    cap = None if max_neighbors is None or max_neighbors >= n_in else int(max_neighbors)
    rows = max(1, _BLOCK_ENTRIES // max(n_in, 1))
    limit = radius * (1 + _RADIUS_RTOL)
    # one buffer for all blocks (at most `cap` edges per query when capped, else grown by doubling):
    # keeping each block's small result alive between the large distance blocks fragments the
    # heap (50k random points, cap 32: 3.6 GB peak RSS that way, 0.4 GB with the buffer)
    edges = torch.empty(2, n_out * min(cap or 8, n_in), dtype=torch.long, device=points_out.device)
    count = 0
    for start in range(0, n_out, rows):
        dist = torch.cdist(points_out[start : start + rows], points_in, compute_mode="donot_use_mm_for_euclid_dist")
        if cap is None:
            keep = dist <= limit
            keep[torch.arange(dist.shape[0], device=dist.device), dist.argmin(1)] = True
            dst, src = keep.nonzero(as_tuple=True)
        else:
            near, index = dist.topk(cap + 1, dim=1, largest=False, sorted=True)
            # points tied (to rounding) with the first one left out go too: on grids the cap then
            # keeps whole rings (5, 9, 13, 21, ... in 2D) instead of an arbitrary part of one
            keep = (near <= limit) & (near < near[:, cap:] * (1 - _RADIUS_RTOL))
            keep[:, 0] = True
            dst = torch.arange(dist.shape[0], device=dist.device)[:, None].expand_as(index)[keep]
            src = index[keep]
        if count + dst.numel() > edges.shape[1]:
            grown = edges.new_empty(2, max(2 * edges.shape[1], count + dst.numel()))
            grown[:, :count] = edges[:, :count]
            edges = grown
        edges[0, count : count + dst.numel()] = dst + start
        edges[1, count : count + dst.numel()] = src
        count += dst.numel()
    return edges[0, :count].clone(), edges[1, :count].clone()


class Graph(NamedTuple):
    """Radius graphs of a batch, flattened over the batch: edge ``e`` carries row ``src[e]`` of the
    ``(B * N_in, C)`` inputs to row ``dst[e]`` of the ``(B * N_out, C)`` outputs; ``inv_degree``
    ``(B * N_out, 1)`` turns the sum over a point's edges into their mean."""

    dst: torch.Tensor
    src: torch.Tensor
    inv_degree: torch.Tensor


def batch_graph(parts: list[tuple[torch.Tensor, torch.Tensor]], n_out: int, n_in: int, dtype: torch.dtype) -> Graph:
    """One :class:`Graph` from per-sample edges ``(dst, src)`` of ``n_out`` query and ``n_in``
    input points per sample."""
    dst = torch.cat([d + i * n_out for i, (d, _) in enumerate(parts)])
    src = torch.cat([s + i * n_in for i, (_, s) in enumerate(parts)])
    degree = torch.bincount(dst, minlength=len(parts) * n_out).clamp_(min=1)
    return Graph(dst, src, (1.0 / degree.to(dtype)).unsqueeze(1))


class _GraphCache:
    """Radius graphs of the last few point sets (compared by value), with their batched forms.

    Grid data sends the same points every batch; comparing ``N x d`` coordinates is far cheaper
    than rebuilding (an 85x85 grid, 16 neighbours: 0.26 s per build, 0.03 ms per comparison).
    """

    size = 4

    def __init__(self) -> None:
        self._entries: list[tuple[tuple, torch.Tensor, torch.Tensor, dict]] = []

    def get(self, points_out: torch.Tensor, points_in: torch.Tensor, radius: float, cap: int | None,
            batch: int) -> Graph:
        """The :class:`Graph` of ``batch`` samples that all hold these ``(N, d)`` point sets."""
        key = (radius, cap, points_out.shape, points_in.shape, points_out.dtype, points_out.device)
        for k, p_out, p_in, graphs in self._entries:
            if k == key and torch.equal(p_out, points_out) and torch.equal(p_in, points_in):
                break
        else:
            graphs = {0: radius_graph(points_out, points_in, radius, cap)}
            if len(self._entries) >= self.size:
                self._entries.pop(0)
            self._entries.append((key, points_out.detach().clone(), points_in.detach().clone(), graphs))
        if batch not in graphs:
            graphs[batch] = batch_graph([graphs[0]] * batch, points_out.shape[0], points_in.shape[0], points_in.dtype)
        return graphs[batch]

    def clear(self) -> None:
        self._entries.clear()


def _shared_over_batch(points: torch.Tensor) -> bool:
    """Whether every sample of ``(B, N, d)`` holds the same points (``expand`` gives stride 0)."""
    return points.shape[0] == 1 or points.stride(0) == 0 or torch.equal(points, points[:1].expand_as(points))


# ----------------------------------------------------------------------------- kernel integral


def kernel_integral(v: torch.Tensor, kappa: torch.Tensor, graph: Graph) -> torch.Tensor:
    """``(K v)(x_i) = (1 / |N(i)|) sum_{j in N(i)} kappa_ij v(y_j)`` over the edges of ``graph``.

    ``v``: ``(B * N_in, C)``; ``kappa``: ``(E, C)`` (diagonal kernel, channel-wise product) or
    ``(E, C, C_out)`` (full kernel, ``v(y_j)^T kappa_ij`` as ``NNConv``); returns ``(B * N_out, C_out)``.
    """
    vj = v.index_select(0, graph.src)
    msg = vj * kappa if kappa.ndim == 2 else torch.bmm(vj.unsqueeze(1), kappa).squeeze(1)
    out = msg.new_zeros(graph.inv_degree.shape[0], msg.shape[1]).index_add_(0, graph.dst, msg)
    return out * graph.inv_degree


class KernelNet(nn.Module):
    """The kernel ``kappa_phi``: an MLP of the edge features with two hidden layers (Li et al. 2020),
    returning ``width`` numbers per edge (diagonal) or a ``width x width`` matrix (full)."""

    def __init__(self, n_features: int, hidden: int, width: int, kind: str, activation: str):
        super().__init__()
        self.width, self.kind = width, kind
        self.layers = nn.ModuleList([
            nn.Linear(n_features, hidden),
            nn.Linear(hidden, hidden),
            nn.Linear(hidden, width * width if kind == "full" else width),
        ])
        self.act = _ACTIVATIONS[activation]

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """``(E, n_features) -> (E, width)`` (diagonal) or ``(E, width, width)`` (full)."""
        h = features
        for layer in self.layers[:-1]:
            h = self.act(layer(h))
        k = self.layers[-1](h)
        return k.view(-1, self.width, self.width) if self.kind == "full" else k


# ----------------------------------------------------------------------------- the model


@register("gno")
class GNO(Operator):
    """Graph kernel network (Li, Kovachki et al. 2020; Kovachki et al. JMLR 2023, section on GNO).

    ``v_0(x) = P(a(x), x)``; ``v_{t+1}(x) = act(W v_t(x) + mean_{y in B(x, r)} kappa(x, y, a(x), a(y)) v_t(y))``
    for ``t < depth`` with one kernel network shared by all iterations; ``u(x) = Q v_T(x)``.
    Point operator: ``forward(v: (B, N_in, C_in), x_in: (B, N_in, d), x_out: (B, N_out, d))
    -> (B, N_out, C_out)``. The iterations run on the graph of the input points. At query points
    other than the input points (``x_out`` not equal to ``x_in``), ``v_T`` is carried over by one
    more kernel integral, ``mean_{y in B(q, r)} kappa_out(q, y, a(y)) v_T(y)`` (its own kernel
    network: ``a(q)`` is unknown there), then ``Q``; its weights learn only from data whose query
    points differ from the input points (grid training passes ``x_out = x_in`` and skips it), and
    ``query_kernel=False`` leaves it out.
    """

    Config = GNOConfig
    input_kind = "points"
    resolution_independent = True

    def __init__(self, config: GNOConfig):
        super().__init__(config)
        c = config
        self.lift = nn.Linear(c.in_channels + c.coord_dim, c.width)
        self.kernel = KernelNet(2 * (c.coord_dim + c.in_channels), c.kernel_width, c.width, c.kernel, c.activation)
        self.local = nn.Linear(c.width, c.width)
        if c.projection:
            self.project = nn.Sequential(nn.Linear(c.width, c.projection), _ACTIVATION_MODULES[c.activation](),
                                         nn.Linear(c.projection, c.out_channels))
        else:
            self.project = nn.Linear(c.width, c.out_channels)
        self.act = _ACTIVATIONS[c.activation]
        # made last, so a model without it draws the same initial weights for everything else
        self.query_kernel = (
            KernelNet(2 * c.coord_dim + c.in_channels, c.kernel_width, c.width, c.kernel, c.activation)
            if c.query_kernel else None
        )
        self.graphs = _GraphCache()

    @classmethod
    def example_configs(cls) -> list[GNOConfig]:
        return [
            GNOConfig(width=8, kernel_width=16, depth=2, radius=0.3, max_neighbors=6, projection=16),
            GNOConfig(in_channels=2, out_channels=3, coord_dim=1, width=6, kernel_width=8, depth=2, radius=0.2,
                      max_neighbors=None, kernel="full", activation="relu", projection=0),
            GNOConfig(coord_dim=3, out_channels=2, width=4, kernel_width=8, depth=1, radius=0.5, max_neighbors=8,
                      kernel="full", activation="tanh", projection=8),
            GNOConfig(width=4, kernel_width=8, depth=1, kernel="full", query_kernel=False, projection=0),
        ]

    def example_input(self, batch: int = 2) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        # irregular input points shared by the batch, other query points per sample (both paths run)
        c = self.config
        x_in = torch.rand(20, c.coord_dim).expand(batch, -1, -1)
        x_out = torch.rand(batch, 9, c.coord_dim) if c.query_kernel else x_in
        return torch.randn(batch, 20, c.in_channels), x_in, x_out

    def graph(self, points_out: torch.Tensor, points_in: torch.Tensor) -> Graph:
        """The batch's radius graph for ``(B, N_out, d)`` query and ``(B, N_in, d)`` input points,
        built once for a batch that shares its points and cached across calls."""
        c = self.config
        b, n_out, n_in = points_in.shape[0], points_out.shape[1], points_in.shape[1]
        with torch.no_grad():
            if _shared_over_batch(points_in) and _shared_over_batch(points_out):
                return self.graphs.get(points_out[0], points_in[0], c.radius, c.max_neighbors, b)
            parts = [radius_graph(points_out[i], points_in[i], c.radius, c.max_neighbors) for i in range(b)]
            return batch_graph(parts, n_out, n_in, points_in.dtype)

    def forward(self, v: torch.Tensor, x_in: torch.Tensor, x_out: torch.Tensor) -> torch.Tensor:
        """``(B, N_in, C_in), (B, N_in, d), (B, N_out, d) -> (B, N_out, C_out)``."""
        self._check(v, x_in, x_out)
        at_inputs = x_out is x_in or (x_out.shape == x_in.shape and torch.equal(x_out, x_in))
        if not at_inputs and self.query_kernel is None:
            raise ModelError(
                "this gno was built with query_kernel=False and evaluates at its input points only, "
                "but x_out differs from x_in; pass x_out = x_in or build it with query_kernel=True"
            )
        b, step = v.shape[0], self._samples_per_chunk(x_in)
        if step >= b:
            return self._evaluate(v, x_in, None if at_inputs else x_out)
        return torch.cat([
            self._evaluate(v[i : i + step], x_in[i : i + step], None if at_inputs else x_out[i : i + step])
            for i in range(0, b, step)
        ])

    def _evaluate(self, v: torch.Tensor, x_in: torch.Tensor, x_out: torch.Tensor | None) -> torch.Tensor:
        """``forward`` of one chunk of the batch; ``x_out=None``: at the input points."""
        c = self.config
        b, n_in = v.shape[:2]
        a = v.reshape(b * n_in, c.in_channels)
        y = x_in.reshape(b * n_in, c.coord_dim)
        g = self.graph(x_in, x_in)
        # edge features do not change with t: the shared kernel is evaluated once for all iterations
        kappa = self.kernel(torch.cat([y[g.dst], y[g.src], a[g.dst], a[g.src]], 1))
        h = self.lift(torch.cat([a, y], 1))
        for _ in range(c.depth):
            h = self.act(self.local(h) + kernel_integral(h, kappa, g))
        if x_out is not None:
            q = x_out.reshape(-1, c.coord_dim)
            g = self.graph(x_out, x_in)
            h = kernel_integral(h, self.query_kernel(torch.cat([q[g.dst], y[g.src], a[g.src]], 1)), g)
        n_out = n_in if x_out is None else x_out.shape[1]
        return self.project(h).reshape(b, n_out, c.out_channels)

    def _samples_per_chunk(self, x_in: torch.Tensor) -> int:
        """Samples per chunk: on the CPU about ``_CHUNK_FLOATS`` per edge tensor (see there); on
        GPUs the whole batch."""
        c = self.config
        b, n_in = x_in.shape[:2]
        if x_in.device.type != "cpu":
            return b
        if _shared_over_batch(x_in):
            edges = self.graph(x_in[:1], x_in[:1]).dst.numel()
        else:
            edges = n_in * min(c.max_neighbors or n_in, n_in)
        per_edge = max(c.kernel_width, c.width * (c.width if c.kernel == "full" else 1))
        return max(1, _CHUNK_FLOATS // (edges * per_edge))

    def _check(self, v: torch.Tensor, x_in: torch.Tensor, x_out: torch.Tensor) -> None:
        c = self.config
        if v.ndim != 3 or v.shape[2] != c.in_channels:
            raise ModelError(
                f"gno expects values (batch, n_points, in_channels={c.in_channels}), got shape {tuple(v.shape)}; "
                "check in_channels"
            )
        b, n_in = v.shape[:2]
        if n_in < 1:
            raise ModelError("gno needs at least one input point, got 0")
        if x_in.ndim != 3 or x_in.shape != (b, n_in, c.coord_dim):
            raise ModelError(
                f"gno expects x_in of shape (batch={b}, n_points={n_in}, coord_dim={c.coord_dim}) to match the values, "
                f"got {tuple(x_in.shape)}"
            )
        if x_out.ndim != 3 or x_out.shape[0] != b or x_out.shape[2] != c.coord_dim:
            raise ModelError(
                f"gno expects x_out of shape (batch={b}, n_queries, coord_dim={c.coord_dim}), got {tuple(x_out.shape)}"
            )
