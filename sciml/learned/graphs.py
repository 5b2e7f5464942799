"""Random graph problems with exact solutions, for learned graph solvers (CGS, Park et al., ICLR 2022).

Two generators, plain functions of a ``numpy.random.Generator`` (draw graph ``i`` of a set from
``numpy.random.default_rng([seed, i])`` to make it reproducible):

* :func:`pore_network`: steady Stokes (Hagen-Poiseuille) flow in a random Delaunay pore network,
  the pore pressures solved exactly by a sparse solve of the weighted graph Laplacian (paper §6.1);
* :func:`random_mdp`: a random deterministic MDP on a graph, its optimal values from value
  iteration and its greedy policy (paper §6.2, "graph value iteration").

Both return a frozen dataclass with the graph encoding a model reads, as numpy arrays:
``node_features (N, Fn)``, ``edge_index (2, E)`` (row 0 source, row 1 destination),
``edge_features (E, Fe)`` and ``target (N,)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from scipy.sparse.linalg import spsolve
from scipy.spatial import Delaunay

from ..errors import ConfigError

# Physical scales of the paper's networks (OpenPNM): a 1 mm cube, pore diameters log-normal
# around 10 um, water-like viscosity 1e-5 Pa s, 1 bar between the inlet and the outlet.
DOMAIN_M = 1e-3
DIAMETER_M = 1e-5
VISCOSITY = 1e-5
PRESSURE_DROP_PA = 101325.0


def _count(value, name: str, low: int = 1) -> tuple[int, int]:
    """``int`` or inclusive ``(lo, hi)`` -> ``(lo, hi)``, validated."""
    lo, hi = (value, value) if isinstance(value, (int, np.integer)) else tuple(value)
    if not (isinstance(lo, (int, np.integer)) and isinstance(hi, (int, np.integer))) or not low <= lo <= hi:
        raise ConfigError(f"{name} must be an integer >= {low} or an inclusive range (lo, hi) with "
                          f"{low} <= lo <= hi, got {value!r}")
    return int(lo), int(hi)


def _draw(rng: np.random.Generator, bounds: tuple[int, int]) -> int:
    return int(rng.integers(bounds[0], bounds[1] + 1))


# --------------------------------------------------------------------------- pore networks


@dataclass(frozen=True)
class PoreNetwork:
    """A pore network with its exact steady pressure field, nondimensionalised.

    Lengths are in units of the domain side (1 mm), pressures in units of the pressure drop
    (1 bar), conductances in units of ``g0 = pi d0^4 / (128 mu L0)`` (``d0 = 10 um``, ``L0 = 1 mm``).
    Every throat appears twice in ``edge_index`` (both directions, consecutive: edge ``2k`` and
    ``2k + 1`` are the two directions of throat ``k``).
    """

    positions: np.ndarray       # (N, 3) pore centres in [0, 1]^3
    pore_diameter: np.ndarray   # (N,)
    throats: np.ndarray         # (T, 2) undirected pore pairs, i < j
    throat_diameter: np.ndarray  # (T,) min of the two pore diameters
    throat_length: np.ndarray   # (T,) centre distance minus both pore radii
    conductance: np.ndarray     # (T,) pi d^4 / (128 mu L) / g0
    inlet: np.ndarray           # (N,) bool, pores on x = 0 (pressure 1)
    outlet: np.ndarray          # (N,) bool, pores on x = 1 (pressure 0)
    pressure: np.ndarray        # (N,) exact solution, in [0, 1]

    @property
    def n_nodes(self) -> int:
        return self.positions.shape[0]

    @property
    def boundary(self) -> np.ndarray:
        return self.inlet | self.outlet

    @property
    def edge_index(self) -> np.ndarray:
        """(2, 2T) both directions of every throat."""
        return np.stack([self.throats.reshape(-1), self.throats[:, ::-1].reshape(-1)]).astype(np.int64)

    @property
    def node_features(self) -> np.ndarray:
        """(N, 5): x, y, z, boundary flag, masked pressure (the Dirichlet value, 0 inside)."""
        bc = self.boundary.astype(np.float64)
        return np.column_stack([self.positions, bc, self.inlet.astype(np.float64)])

    @property
    def edge_features(self) -> np.ndarray:
        """(2T, 3): log(throat diameter / 10 um), throat length, log(conductance / g0)."""
        f = np.column_stack([np.log(self.throat_diameter * DOMAIN_M / DIAMETER_M), self.throat_length,
                             np.log(self.conductance)])
        return np.repeat(f, 2, axis=0)

    @property
    def target(self) -> np.ndarray:
        return self.pressure

    def laplacian(self) -> sp.csr_matrix:
        """(N, N) weighted graph Laplacian ``L = D - G`` of the throat conductances."""
        n = self.n_nodes
        i, j = self.throats.T
        g = self.conductance
        off = sp.coo_matrix((np.concatenate([-g, -g]), (np.concatenate([i, j]), np.concatenate([j, i]))), shape=(n, n))
        deg = np.bincount(i, g, n) + np.bincount(j, g, n)
        return (off + sp.diags(deg)).tocsr()


def pore_network(
    rng: np.random.Generator,
    n_pores: int | tuple[int, int] = (13, 86),
    n_face: int | None = None,
    sigma: float = 0.1,
    radius_cap: float = 0.45,
) -> PoreNetwork:
    """A random Delaunay pore network in the unit cube and its exact pore pressures.

    ``n_pores`` interior pores (an int, or an inclusive range drawn uniformly; the paper's
    13-86 seed points) are uniform in ``(0, 1)^3``; ``n_face`` more pores (default
    ``max(3, round(n_pores^(2/3)))``) are uniform on each of the inlet face ``x = 0`` and the
    outlet face ``x = 1``. Throats are the edges of the Delaunay tetrahedra of all pores.
    Pore diameters are log-normal (median 10 um, log-std ``sigma``) with the radius capped at
    ``radius_cap`` times the shortest throat centre distance (so throats keep a positive length);
    a throat's diameter is the smaller of its pores', its length the centre distance minus both
    radii, its hydraulic conductance ``g = pi d^4 / (128 mu L)`` (Hagen-Poiseuille).
    Mass conservation at the interior pores, ``sum_j g_ij (p_i - p_j) = 0``, with ``p = 1`` on the
    inlet and ``p = 0`` on the outlet is solved exactly (``scipy.sparse.linalg.spsolve``).
    """
    lo, hi = _count(n_pores, "n_pores", low=1)
    if n_face is not None and (not isinstance(n_face, (int, np.integer)) or n_face < 1):
        raise ConfigError(f"n_face must be a positive integer or None, got {n_face!r}")
    if not (sigma >= 0 and 0 < radius_cap < 0.5):
        raise ConfigError(f"need sigma >= 0 and 0 < radius_cap < 0.5 (pores must not overlap), "
                          f"got sigma={sigma}, radius_cap={radius_cap}")
    n_in = _draw(rng, (lo, hi))
    n_f = int(n_face) if n_face is not None else max(3, round(n_in ** (2 / 3)))
    inside = rng.random((n_in, 3))
    faces = rng.random((2 * n_f, 3))
    faces[:n_f, 0], faces[n_f:, 0] = 0.0, 1.0
    pos = np.concatenate([faces, inside])
    n = pos.shape[0]

    # "QJ" joggles the input so that every point is a vertex even with the coplanar face pores
    tets = Delaunay(pos, qhull_options="QJ").simplices
    pairs = np.concatenate([tets[:, [a, b]] for a, b in ((0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (2, 3))])
    throats = np.unique(np.sort(pairs, axis=1), axis=0)
    centre = np.linalg.norm(pos[throats[:, 0]] - pos[throats[:, 1]], axis=1)

    d_median = DIAMETER_M / DOMAIN_M
    diam = d_median * np.exp(sigma * rng.standard_normal(n))
    diam = np.minimum(diam, 2 * radius_cap * centre.min())
    t_diam = np.minimum(diam[throats[:, 0]], diam[throats[:, 1]])
    t_len = centre - 0.5 * (diam[throats[:, 0]] + diam[throats[:, 1]])
    # the ratio to g0 = pi d0^4 / (128 mu L0); mu and pi cancel
    cond = (t_diam / d_median) ** 4 / t_len

    inlet = np.zeros(n, bool)
    outlet = np.zeros(n, bool)
    inlet[:n_f], outlet[n_f:2 * n_f] = True, True
    net = PoreNetwork(pos, diam, throats, t_diam, t_len, cond, inlet, outlet, np.zeros(n))
    object.__setattr__(net, "pressure", _solve_pressure(net))
    return net


def _solve_pressure(net: PoreNetwork) -> np.ndarray:
    lap = net.laplacian()
    bc = net.boundary
    p = net.inlet.astype(np.float64)
    inner = np.flatnonzero(~bc)
    if inner.size:
        rhs = -lap[inner][:, np.flatnonzero(bc)] @ p[bc]
        p[inner] = spsolve(lap[inner][:, inner].tocsc(), rhs)
    return p


# --------------------------------------------------------------------------- random MDPs


@dataclass(frozen=True)
class MDPGraph:
    """A deterministic MDP on a graph, with optimal values ``value`` and greedy ``policy``.

    Action ``a`` of state ``s`` moves to ``successor[s, a]`` and earns ``reward[s, a]``. The graph
    has one edge per state-action pair, pointing from the successor to the state (edge
    ``s * n_actions + a``), so messages flow the way value iteration backs values up:
    ``V(s) = max_a reward[s, a] + gamma V(successor[s, a])``.
    """

    successor: np.ndarray  # (S, A) int
    reward: np.ndarray     # (S, A)
    gamma: float
    value: np.ndarray      # (S,) optimal values (value iteration)
    policy: np.ndarray     # (S,) greedy action of ``value``
    iterations: int        # value-iteration sweeps done
    atol: float            # the sweeps stopped once max |V_k+1 - V_k| <= atol

    @property
    def n_states(self) -> int:
        return self.successor.shape[0]

    @property
    def n_actions(self) -> int:
        return self.successor.shape[1]

    @property
    def n_nodes(self) -> int:
        return self.n_states

    @property
    def edge_index(self) -> np.ndarray:
        """(2, S*A): successor -> state."""
        dst = np.repeat(np.arange(self.n_states), self.n_actions)
        return np.stack([self.successor.reshape(-1), dst]).astype(np.int64)

    @property
    def node_features(self) -> np.ndarray:
        """(S, 1) ones: the states carry no information of their own (as in the paper)."""
        return np.ones((self.n_states, 1))

    @property
    def edge_features(self) -> np.ndarray:
        """(S*A, 1): the reward of the state-action pair."""
        return self.reward.reshape(-1, 1)

    @property
    def target(self) -> np.ndarray:
        return self.value


def bellman_backup(successor: np.ndarray, reward: np.ndarray, gamma: float, value: np.ndarray) -> np.ndarray:
    """Action values ``Q[s, a] = reward[s, a] + gamma value[successor[s, a]]``, shape ``(S, A)``."""
    return reward + gamma * value[successor]


def greedy_policy(mdp: MDPGraph, value: np.ndarray) -> np.ndarray:
    """(S,) the action maximising ``reward + gamma value(successor)`` in each state."""
    return bellman_backup(mdp.successor, mdp.reward, mdp.gamma, np.asarray(value, np.float64)).argmax(axis=1)


def value_iteration(successor: np.ndarray, reward: np.ndarray, gamma: float, atol: float = 1e-8,
                    max_iter: int = 100_000) -> tuple[np.ndarray, int]:
    """Sweeps ``V <- max_a Q(V)`` from ``V = 0`` until ``max |V_k+1 - V_k| <= atol``.

    Then ``|V - V*| <= gamma atol / (1 - gamma)`` and the Bellman residual is ``<= gamma atol``.
    """
    value = np.zeros(successor.shape[0])
    for it in range(1, max_iter + 1):
        new = bellman_backup(successor, reward, gamma, value).max(axis=1)
        done = np.abs(new - value).max() <= atol
        value = new
        if done:
            return value, it
    raise ConfigError(f"value iteration did not reach atol={atol} in {max_iter} sweeps (gamma={gamma}); loosen atol")


def random_mdp(
    rng: np.random.Generator,
    n_states: int | tuple[int, int] = (20, 49),
    n_actions: int | tuple[int, int] = (5, 9),
    gamma: float = 0.9,
    reward_range: tuple[float, float] = (-1.0, 1.0),
    atol: float = 1e-8,
) -> MDPGraph:
    """A random deterministic MDP as in the paper's graph value iteration (§6.2).

    ``n_states`` and ``n_actions`` are ints or inclusive ranges drawn uniformly (paper: 20-49
    states, 5-9 actions). Each state gets ``n_actions`` in-edges from sources drawn uniformly
    (with replacement) among the other states; each edge is one action, with reward uniform in
    ``reward_range``. Values come from value iteration to ``atol`` (the paper stops at 1e-3).
    """
    s_lo, s_hi = _count(n_states, "n_states", low=2)
    a_lo, a_hi = _count(n_actions, "n_actions", low=1)
    if not 0 < gamma < 1:
        raise ConfigError(f"gamma must lie in (0, 1), got {gamma}")
    if a_hi > s_lo - 2:
        raise ConfigError(f"n_actions must stay below n_states - 1 (the paper's condition), "
                          f"got n_actions={n_actions}, n_states={n_states}")
    if not (atol > 0 and reward_range[0] < reward_range[1]):
        raise ConfigError(f"need atol > 0 and reward_range low < high, got {atol}, {reward_range}")
    n_s, n_a = _draw(rng, (s_lo, s_hi)), _draw(rng, (a_lo, a_hi))
    # a source among the other S - 1 states: draw in [0, S - 1) and skip the state itself
    succ = rng.integers(0, n_s - 1, size=(n_s, n_a))
    succ = succ + (succ >= np.arange(n_s)[:, None])
    reward = rng.uniform(reward_range[0], reward_range[1], size=(n_s, n_a))
    value, iters = value_iteration(succ, reward, gamma, atol)
    policy = bellman_backup(succ, reward, gamma, value).argmax(axis=1)
    return MDPGraph(succ, reward, float(gamma), value, policy, iters, float(atol))
