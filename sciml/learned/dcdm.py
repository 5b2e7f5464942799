"""Deep Conjugate Direction Method (Kaneda, Akar, Chen, Kim, Teran & Seyed-Kalantari, ICML 2023).

A small convolutional network ``f`` approximates the action of ``A^-1`` up to a scalar. It is
trained without solutions: for a unit right-hand side ``b`` and ``q = f(b)`` the loss is the
residual after an exact A-line search along ``q``,

    L(b) = || b - A q (q^T b) / (q^T A q) ||^2,

over right-hand sides biased towards the low end of A's spectrum
(:class:`sciml.learned.spectral_rhs.SpectralRHS`). The solver then takes the network's
direction for the current residual, A-orthogonalises it against the previous two search
directions and does an exact line search (:func:`dcdm_solve`).

Network (from the authors' description of their Keras model): a linear first convolution to
``width`` channels, residual blocks of two ReLU convolutions at full resolution, one 2x
average pooling, residual blocks at half resolution, upsampling with a skip connection,
residual blocks after it, and a 1x1 output (Keras' ``Dense(1)``). With the paper's N = 64
layout (4 + 6 + 4 convolutions, 16 filters, 3^3 kernels) it has 97,457 parameters (the paper:
about 97k); 6 + 10 + 6 gives their N = 128 model (152,881, about 153k). It is fully
convolutional, so a network trained at one resolution runs at any other.

The coefficient (``features``, default for new runs): the paper trains one network per scene,
and a network that sees only the residual cannot tell where a coefficient jumps, so it cannot
learn high-contrast diffusion (ConDiff at contrast 1e5; obstacles it sees through the mask channel).
Here the network also gets, at every grid point, the ``3^d - 1`` off-diagonal entries of
``Â = D^-1/2 A D^-1/2`` (:mod:`.stencil_features`: dimensionless, boundary and contrast aware),
computed once per matrix and concatenated with the residual at every call; and (``jacobi``,
default for new runs) it works on that scaled matrix, the one its features describe: the
direction for residual ``r`` is ``p = D^-1/2 f(D^-1/2 r)``, which is exactly DCDM on
``Â x̂ = D^-1/2 b`` (``x̂ = D^1/2 x``; A-inner products and line searches coincide), and
training draws its vectors from ``Â``'s spectrum and takes the loss with ``Â``. Run directories
written before these options existed load with both off and behave as they did.

Solving keeps every previous direction (``memory=None``, new runs; the paper keeps two): the
network is a nonlinear, approximate inverse, and with two directions the iteration can only
A-orthogonalise locally, so whatever error the network's directions miss is never removed; with
all of them the iterate is the A-norm-best over their whole span (a flexible CG with full
orthogonalisation), at ``2 k N`` stored numbers after ``k`` steps.

A solve hands its iterate to PCG-IC(0) (:func:`solve_with_fallback`, which says at which
iteration) when the network's last 10 directions together removed less of the error's energy
norm ``||x* - x||_A^2`` than one Jacobi steepest-descent step from where they started is
guaranteed to (:func:`stalled`, :func:`energy_floor`): each step's drop is known exactly,
``(p.r)^2 / p.Ap``, and the floor is ``||D^-1/2 r||^2 / g`` with ``g`` Gershgorin's bound on
``lambda_max(D^-1/2 A D^-1/2)``. The rule watches the quantity the iteration minimises, which falls
monotonically; the residual does not, and a good network's residual can sit flat for tens of
steps while the energy falls before both fall fast. The rule before this one (best residual to
halve every 25 steps) handed the best ConDiff network below over at steps 29-35 (41, 119, 110
iterations at 64^2 and 210, 192 at 128^2, against 41, 88, 70 and 117, 100 without the hand-over);
a random network's window removes well under the floor (0.56x on the Poisson system of
``tests/test_dcdm.py``, handed over at step 12). With this rule the solve method keeps that
network's 41-88 / 100-117 iterations (``benchmarks/measured/cpu-2026-12-04/dcdm-cpu-deflated.md``). The price: a network that helps,
but more slowly than PCG-IC(0), is not handed over before its 500 steps (the one-step-loss network
at 128^2: 556 and 552 iterations in all, 206 and 211 with the residual rule). After the hand-over
PCG-IC(0) continues deflated by the network's directions (:func:`solve_with_fallback`), which
keeps a late hand-over cheap (661 and 656 there with PCG-IC(0) restarted from the iterate).

Measured (``benchmarks/dcdm.py``, ``benchmarks/measured/cpu-2026-12-04/dcdm.md``; trained for
220 s each on an H200, evaluated on the CPU), iterations to 1e-6 on unseen samples:

* ConDiff variance 2.0 (contrast ~1e5), trained at 64^2: the residual-only network learns
  nothing (loss 1.00, no better than ``q = 0``); with features the loss reaches 0.036. With two
  directions no network converges (the residual stalls at 0.1-0.25). With all directions:
  158-170 at 64^2 and 690-725 at 128^2 (4 training fields; 128 fields: 186-200 / 811-921, 32
  channels: 153-186 / 790-805), against PCG-IC(0) 97-104 / 181-189 and Jacobi-PCG 313-333 /
  588-613: better than
  Jacobi at the training size, worse at twice it, never better than IC(0). The error the
  iteration is left with lies in the lowest eigenmodes of ``Â`` (piecewise constant on the
  high-coefficient islands), which carry ~1 % of the training vectors' energy, so the paper's
  one-step loss hardly sees them (more training with it makes things worse: 190 / 830). The loss
  after ``unroll`` steps trains on the residuals the iteration leaves: fine-tuned 330 s with 4
  steps, then 480 s with 8 (CPU, 16 fields): 36-47 at 64^2, 156 / 227 at 128^2 (PCG-IC(0)
  181 / 189), while its one-step loss rises (0.036 -> 0.2): the one-step loss does not predict
  convergence. Grid growth 64^2 -> 128^2 is still 4.6x against IC(0)'s 1.9x.
* 3-D obstacles, trained at 32^3 on 32 geometries: the residual-only network (the mask channel
  already carries this matrix) takes 20-21 / 37 / 66 iterations at 32^3 / 64^3 / 128^3 (PCG-IC(0)
  41 / 82 / 166): 1.8x per doubling. The feature network is worse (62-80 at 32^3, 4.8e-6 after
  300 at 64^3): lower training loss, poorer multi-step convergence. Trained on the 2-core CPU at
  16^3 instead (150 s, 997 steps): 13-14 / 22 / 30, fewer iterations everywhere and 1.5x per
  doubling; fine-tuned from it at 32^3 (300 s, 303 steps): 17-19 / 26 / 35, 1.44x at 64^3 but
  1.94x at 128^3 (``benchmarks/measured/cpu-2026-12-05/dcdm-obstacles-cpu.md``); fine-tuned at
  32^3 with the loss after 2 steps instead (lr 3e-4, 400 s): 12-13 / 19 / 27, the fewest at every
  size, 1.52x and 2.16x (``dcdm-obstacles-cpu-u2.md``). None reaches
  the 1.5x at 4x the size the issue asks for, nor the paper's size independence. Tried on the
  same CPU at 16^3 and not kept (150 s each, 32^3 / 64^3 iterations against 13.5 / 20 for the
  kept layout in the same sweep): bilinear upsampling 13.5 / 23; a fixed factor on each coarser
  level's output (4 is the Galerkin scaling of a second-order stencil) of 2, 16 / 28 (13.5 / 21
  with bilinear upsampling), and of 4 with bilinear upsampling, 16.5 / 36;
  recursing to 1 or 2 points per axis 22 / 40 and 16.5 / 29, to 8 18 / 37 (its shared levels
  never run at 16^3); a fixed 2 levels 15.5 / 26; 16^3 and 32^3 matrices mixed (same time, fewer
  steps) 17.5 / 30; the loss after 4 steps (300 s more) 12.5 / 20; and the loss taken in the
  energy norm, ``||x - x_1||_A^2 / ||x||_A^2`` with spectrally biased solutions ``x``,
  23.5 / 40 (73 at 128^3). The growth is not in the lowest modes: deflating the iteration by one
  indicator vector per 4^3 block of cells (every mode smoother than a block removed exactly) takes
  the 2-step network to 11 / 15 / 20, still 1.8x at 128^3, while PCG-IC(0) deflated the same way
  becomes size-independent, 15 / 17 / 17, and beats every DCDM network at 128^3
  (``benchmarks/measured/cpu-2026-12-05/dcdm-deflation-probe.md``). The same network as the
  finest level's smoother in ``pcg-mg``'s hierarchy (:mod:`.dcdm_mg`, ``dcdm-mg:RUN``) takes 4, 4 / 5 / 6.

Choices of ours, stated: the residual enters the network scaled to unit RMS
(``r * sqrt(N) / ||r||``; the paper scales to unit norm), which keeps the input's size the
same when the grid is refined; an optional second input channel carries the fluid
indicator so one network serves many obstacle geometries (the paper trains per scene); the
output is zeroed in solid cells (their rows are decoupled, see
:func:`sciml.solvers.discretisation.masked_laplacian`).
"""

from __future__ import annotations

import dataclasses
import time
import warnings
from pathlib import Path
from typing import Optional

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from torch import nn

from .. import runtime
from ..config import from_dict, to_dict
from ..datasets import system
from ..errors import ConfigError, DataError, SciMLError
from ..solvers.linear import (SolveResult, classical_preconditioner, is_symmetric, register_run_method,
                              relative_residual)
from ..runs import check_new, load_state, read_network, register_kind, save_network, write_metrics
from ..training.api import register_trainer
from .spectral_rhs import LOW_FRACTION, LOW_WEIGHT, SpectralRHS
from .stencil_features import feature_count, matrix_features

KIND = "dcdm"
#: hand-over rule of :func:`solve_with_fallback`: the last PATIENCE directions together must remove
#: more energy-norm error than one Jacobi steepest-descent step is guaranteed to (:func:`stalled`)
PATIENCE = 10


@dataclasses.dataclass(frozen=True)
class DCDMConfig:
    """DCDM network.

    dim : 2 or 3 spatial dimensions.
    width : channels (16, the paper's).
    kernel : convolution size (3).
    pre, mid, post : convolutions at full resolution before pooling, at half resolution, and
        after upsampling (4, 6, 4: the paper's N = 64 model; even numbers, in residual pairs).
    mask_channel : feed the fluid indicator as a second input channel.
    levels : 2x average-pooling levels. 1 is the paper's network. ``None`` (the default)
        recurses until the coarsest grid has at most ``coarsest`` points per axis, with one
        set of weights shared by every level between the finest and the coarsest
        (``coarse`` convolutions before and after each further pooling): the network then
        grows a level when the grid doubles, which is what keeps the iteration count flat.
    coarse : convolutions before and after pooling on the shared intermediate levels (2).
    coarsest : largest points per axis of the coarsest level when ``levels`` is None (4).
    features : feed the ``3^d - 1`` scaled-stencil features of the matrix (8 in 2-D, 26 in 3-D)
        as further input channels (True; runs saved without the key load with False).
    jacobi : the network works on ``D^-1/2 A D^-1/2``: directions ``D^-1/2 f(D^-1/2 r)``, trained on
        the scaled matrix (True; runs saved without the key load with False).
    memory : previous search directions each new one is A-orthogonalised against when solving
        (``None``, the default for new runs: all of them; 2 is the paper's and what runs saved
        without the key load with; see :func:`dcdm_solve`).
    """

    dim: int = 2
    width: int = 16
    kernel: int = 3
    pre: int = 4
    mid: int = 6
    post: int = 4
    mask_channel: bool = True
    levels: Optional[int] = None
    coarse: int = 2
    coarsest: int = 4
    features: bool = True
    jacobi: bool = True
    memory: Optional[int] = None

    #: values of the keys added after the first runs were saved, for run directories without them
    LEGACY = {"features": False, "jacobi": False, "memory": 2}

    def __post_init__(self):
        if self.dim not in (2, 3):
            raise ConfigError(f"DCDM dim must be 2 or 3, got {self.dim}")
        if self.width < 1 or self.kernel < 1 or self.kernel % 2 == 0:
            raise ConfigError(f"DCDM width must be >= 1 and kernel odd, got {self.width}, {self.kernel}")
        if self.levels is not None and self.levels < 1:
            raise ConfigError(f"DCDM levels must be >= 1 or null (automatic), got {self.levels}")
        if self.memory is not None and self.memory < 0:
            raise ConfigError(f"DCDM memory must be >= 0 or null (all previous directions), got {self.memory}")
        if self.coarsest < 1:
            raise ConfigError(f"DCDM coarsest must be >= 1, got {self.coarsest}")
        for name in ("pre", "mid", "post", "coarse"):
            v = getattr(self, name)
            if v < 0 or v % 2:
                raise ConfigError(f"DCDM {name} must be an even number >= 0 (convolutions come in residual pairs), got {v}")

    @property
    def in_channels(self) -> int:
        """Residual, then the fluid mask (``mask_channel``), then the features (``features``)."""
        return 1 + int(self.mask_channel) + (feature_count(self.dim) if self.features else 0)


def _onednn_conv(base: type) -> type:
    """``base`` (Conv2d/Conv3d) calling oneDNN directly on CPU float32.

    Measured on this project's 2-core CPU (torch 2.13): a 16-channel 3x3x3 convolution of one
    32^3 field took 0.090 s through ``nn.Conv3d`` (which picks its slow fallback for a batch of
    one) and 0.007 s through ``torch.mkldnn_convolution``, bit-identical. DCDM applies the
    network to one residual per iteration, so this is its inner loop on CPU.
    """

    class Conv(base):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if _ONEDNN and x.device.type == "cpu" and x.dtype == torch.float32:
                return torch.mkldnn_convolution(x, self.weight, self.bias, self.padding, self.stride, self.dilation, self.groups)
            return super().forward(x)

    Conv.__name__ = base.__name__
    return Conv


_ONEDNN = hasattr(torch, "mkldnn_convolution") and torch.backends.mkldnn.is_available()
_Conv2d, _Conv3d = _onednn_conv(nn.Conv2d), _onednn_conv(nn.Conv3d)


class _Pairs(nn.Module):
    """Residual blocks ``h <- h + relu(conv(relu(conv(h))))``."""

    def __init__(self, conv, width: int, kernel: int, n: int):
        super().__init__()
        self.convs = nn.ModuleList(conv(width, width, kernel, padding=kernel // 2) for _ in range(n))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        for a, b in zip(self.convs[::2], self.convs[1::2]):
            h = h + F.relu(b(F.relu(a(h))))
        return h


class DCDMNet(nn.Module):
    """``(B, 1, *S)`` residual, ``(B, 1, *S)`` fluid mask (``mask_channel``) and ``(B, 3^d - 1, *S)``
    coefficient features (``features``) -> ``(B, 1, *S)`` direction (zero where the mask is)."""

    def __init__(self, config: DCDMConfig | None = None):
        super().__init__()
        self.config = config = config or DCDMConfig()
        conv = _Conv2d if config.dim == 2 else _Conv3d
        w, k = config.width, config.kernel
        self.first = conv(config.in_channels, w, k, padding=k // 2)
        self.pre = _Pairs(conv, w, k, config.pre)
        self.mid = _Pairs(conv, w, k, config.mid)
        self.post = _Pairs(conv, w, k, config.post)
        if config.levels != 1:
            self.coarse_pre = _Pairs(conv, w, k, config.coarse)
            self.coarse_post = _Pairs(conv, w, k, config.coarse)
        self.out = conv(w, 1, 1)
        self.pool = F.avg_pool2d if config.dim == 2 else F.avg_pool3d

    def n_levels(self, shape) -> int:
        """Pooling levels used on a grid of ``shape``."""
        if self.config.levels is not None:
            return self.config.levels
        n, levels = max(shape), 1
        while -(-n // 2 ** levels) > self.config.coarsest:
            levels += 1
        return levels

    def _down_up(self, h: torch.Tensor, levels: int) -> torch.Tensor:
        """Pool, process the coarser levels, upsample and add the skip connection."""
        c = self.pool(h, 2, ceil_mode=True)
        if levels == 1:
            c = self.mid(c)
        else:
            c = self.coarse_pre(c)
            c = self.coarse_post(self._down_up(c, levels - 1))
        c = F.interpolate(c, scale_factor=2, mode="nearest")
        return c[(...,) + tuple(slice(0, s) for s in h.shape[2:])] + h

    def forward(self, r: torch.Tensor, fluid: torch.Tensor | None = None, features: torch.Tensor | None = None) -> torch.Tensor:
        parts = [r]
        if self.config.mask_channel:
            parts.append(fluid if fluid is not None else torch.ones_like(r))
        if self.config.features:
            if features is None or features.shape[1] != feature_count(self.config.dim):
                raise DataError(f"this DCDM network takes the matrix's {feature_count(self.config.dim)} stencil-feature "
                                f"channels (sciml.learned.stencil_features.matrix_features); got "
                                f"{None if features is None else tuple(features.shape)}")
            parts.append(features.expand(r.shape[0], *features.shape[1:]))
        x = torch.cat(parts, 1) if len(parts) > 1 else r
        h = self.pre(self.first(x))
        q = self.out(self.post(self._down_up(h, self.n_levels(r.shape[2:]))))
        return q if fluid is None else q * fluid


def parameter_count(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


# ----------------------------------------------------------------------------- systems


def fluid_rows(A: sp.spmatrix) -> np.ndarray:
    """Rows that couple to a neighbour (fluid); a lone diagonal marks a decoupled solid cell."""
    A = sp.csr_matrix(A)
    return np.diff(A.indptr) > 1


def grid_shape(n_unknowns: int, dim: int) -> tuple[int, ...]:
    """The cubic grid ``(n,) * dim`` holding ``n_unknowns`` points."""
    n = int(round(n_unknowns ** (1.0 / dim)))
    if n**dim != n_unknowns:
        raise DataError(f"a learned solver or neural preconditioner needs the unknowns on a square/cubic grid: {n_unknowns} is not an integer's {dim}th power")
    return (n,) * dim


def _torch_sparse(A: sp.spmatrix, device, dtype=torch.float32) -> torch.Tensor:
    A = sp.csr_matrix(A)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return torch.sparse_csr_tensor(torch.from_numpy(A.indptr).long(), torch.from_numpy(A.indices).long(),
                                       torch.from_numpy(A.data).to(dtype), size=A.shape).to(device)


def _spmm(At: torch.Tensor, Q: torch.Tensor) -> torch.Tensor:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return At @ Q


def dcdm_loss(At: torch.Tensor, b: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """Mean over columns of ``||b - A q (q.b) / (q.Aq)||^2``; ``b``, ``q``: ``(N, B)``."""
    Aq = _spmm(At, q)
    alpha = (q * b).sum(0) / (q * Aq).sum(0).clamp_min(1e-30)
    return ((b - Aq * alpha) ** 2).sum(0).mean()


# ----------------------------------------------------------------------------- solving


def jacobi_scale(A: sp.spmatrix) -> np.ndarray:
    """``D^-1/2`` as a vector ``(N,)``: ``1 / sqrt(A_ii)`` where the diagonal is positive, else 1."""
    d = sp.csr_matrix(A).diagonal()
    return np.where(d > 0, 1.0 / np.sqrt(np.where(d > 0, d, 1.0)), 1.0)


def network_matrix(A: sp.spmatrix, config: DCDMConfig) -> sp.csr_matrix:
    """The matrix the network inverts: ``D^-1/2 A D^-1/2`` with ``jacobi``, else ``A``."""
    A = sp.csr_matrix(A)
    if not config.jacobi:
        return A
    s = sp.diags(jacobi_scale(A))
    return sp.csr_matrix(s @ A @ s)


class Direction:
    """The network as a map from a float64 residual ``(N,)`` to a search direction ``(N,)``.

    ``p = s f(s r)`` with ``s = D^-1/2`` (``scale``; ``None``: ``p = f(r)``), the network's input
    scaled to unit RMS; ``features`` ``(3^d - 1, *shape)`` are the matrix's, fixed for the whole solve.
    :meth:`for_matrix` builds all of it from ``A`` and the network's config.
    """

    def __init__(self, net: DCDMNet, shape: tuple[int, ...], fluid: np.ndarray, device: str = "cpu",
                 features: torch.Tensor | None = None, scale: np.ndarray | None = None):
        self.net, self.shape, self.device = net.to(device).eval(), shape, device
        self.fluid_np = fluid.astype(np.float64)
        self.fluid = torch.from_numpy(fluid.reshape(1, 1, *shape).astype(np.float32)).to(device)
        self.features = None if features is None else features.reshape(1, -1, *shape).to(device=device, dtype=torch.float32)
        self.scale = scale
        self.n = int(np.prod(shape))

    @classmethod
    def for_matrix(cls, net: DCDMNet, A: sp.spmatrix, device: str = "cpu") -> "Direction":
        """Set-up for one matrix: grid shape, fluid rows, features (once) and the Jacobi scale."""
        A = sp.csr_matrix(A)
        shape = grid_shape(A.shape[0], net.config.dim)
        features = matrix_features(A, shape, torch.float32, device) if net.config.features else None
        return cls(net, shape, fluid_rows(A), device, features, jacobi_scale(A) if net.config.jacobi else None)

    @torch.no_grad()
    def __call__(self, r: np.ndarray) -> np.ndarray:
        if self.scale is not None:
            r = r * self.scale
        nr = np.linalg.norm(r)
        x = torch.from_numpy((r * (np.sqrt(self.n) / nr)).astype(np.float32).reshape(1, 1, *self.shape)).to(self.device)
        q = self.net(x, self.fluid, self.features).reshape(-1).double().cpu().numpy()
        q = q * self.fluid_np
        return q if self.scale is None else q * self.scale


def stalled(decrease, floor, patience: int = PATIENCE) -> bool:
    """True when the last ``patience`` steps together removed less of the error's energy norm
    than one Jacobi steepest-descent step from where they started is guaranteed to.

    ``decrease[k]`` is step ``k``'s exact drop of ``||x* - x||_A^2`` (``(p.r)^2 / p.Ap``, for any
    direction and memory: the line search is exact) and ``floor[k]`` (one entry per iterate, so
    one more than ``decrease``) the guaranteed drop of a steepest-descent step along ``D^-1 r``
    from iterate ``k``, ``||D^-1/2 r_k||^2 / g`` with ``g >= lambda_max(D^-1/2 A D^-1/2)``
    (:func:`energy_floor`). The energy is what the iteration minimises and falls monotonically,
    while the residual does not: a good network's residual can sit flat for tens of steps while
    the energy keeps falling before both fall fast, and a rule on the residual handed such
    networks over there."""
    if len(decrease) < patience:
        return False
    return float(np.sum(decrease[-patience:])) < floor[-patience - 1]


def energy_floor(A: sp.spmatrix):
    """``r -> ||D^-1/2 r||^2 / g``: what one steepest-descent step along ``D^-1 r`` removes at least
    from ``||x* - x||_A^2`` (its drop is ``||z||^4 / z.Âz >= ||z||^2 / lambda_max(Â)`` with
    ``z = D^-1/2 r``, ``Â = D^-1/2 A D^-1/2``); ``g`` is Gershgorin's bound on ``lambda_max(Â)``,
    the largest absolute row sum of ``Â``."""
    s = jacobi_scale(A)
    g = float(np.max(abs(sp.diags(s) @ sp.csr_matrix(A) @ sp.diags(s)).sum(axis=1)))
    return lambda r: float(np.sum((s * r) ** 2)) / g


def dcdm_solve(A: sp.spmatrix, b: np.ndarray, direction, tol: float = 1e-6, maxiter: int | None = None,
               x0: np.ndarray | None = None, memory: int | None = 2, stop=None, deflate: list | None = None,
               state: dict | None = None) -> SolveResult:
    """Conjugate-direction iteration with the network's directions.

    Each step takes ``q = f(r)``, A-orthogonalises it against the last ``memory`` (2; ``None``:
    all) search directions, moves ``x`` by the exact line search along the result and recomputes
    the true residual ``r = b - A x``. With every previous direction kept, ``x`` minimises the
    A-norm of the error over the span of all directions so far (a flexible CG with full
    orthogonalisation), so a direction that misses the error's slow part cannot undo earlier
    progress; with 2 (the paper's) that holds only for a fixed linear SPD ``f``. Stops at
    ``||r|| <= tol ||b||``, after ``maxiter`` (500) steps, when a direction breaks down
    (``p.Ap <= 0`` or not finite) or when ``stop(history, decrease, floor)`` says so (relative
    residuals, each step's drop of the error's squared A-norm and :func:`energy_floor` at each
    iterate, so far).

    ``deflate``: directions ``(p, Ap, p.Ap)`` (mutually A-orthogonal) every new one is also
    A-orthogonalised against, whatever ``memory`` is: with a fixed SPD preconditioner as
    ``direction`` and ``memory=1`` this is deflated PCG (Saad, Yeung, Erhel & Guyomarc'h 2000).
    ``state``: a dict that receives ``"directions"``, the deflation directions and the kept
    ones at the end.
    """
    t0 = time.perf_counter()
    maxiter = 500 if maxiter is None else maxiter
    fixed = list(deflate or [])
    b = np.asarray(b, dtype=np.float64)
    x = np.zeros_like(b) if x0 is None else np.array(x0, dtype=np.float64)
    nb = np.linalg.norm(b)
    if nb == 0:
        return SolveResult(np.zeros_like(b), True, 0, np.array([0.0]), 0.0, time.perf_counter() - t0, "dcdm")
    r = b - A @ x
    history = [np.linalg.norm(r) / nb]
    floor_of = energy_floor(A) if stop is not None else None
    decrease: list[float] = []
    floor = [] if floor_of is None else [floor_of(r)]
    dirs: list[tuple[np.ndarray, np.ndarray, float]] = []  # (p, A p, p.Ap)
    it = 0
    while history[-1] > tol and it < maxiter and not (stop is not None and stop(history, decrease, floor)):
        p = direction(r)
        for pj, Apj, pAp in fixed + dirs:
            p = p - (p @ Apj) / pAp * pj
        Ap = A @ p
        pAp = float(p @ Ap)
        if not np.isfinite(pAp) or pAp <= 0:
            break  # the direction vanished or A is not SPD on it: report non-convergence
        pr = float(p @ r)
        x = x + pr / pAp * p
        r = b - A @ x
        decrease.append(pr * pr / pAp)
        if floor_of is not None:
            floor.append(floor_of(r))
        dirs.append((p, Ap, pAp))
        if memory is not None:
            dirs = dirs[len(dirs) - memory:] if memory > 0 else []
        it += 1
        history.append(np.linalg.norm(r) / nb)
    if state is not None:
        state["directions"] = fixed + dirs
    res = relative_residual(A, x, b)
    history[-1] = res
    return SolveResult(x, bool(res <= tol), it, np.asarray(history), 0.0, time.perf_counter() - t0, "dcdm")


def _classical_direction(A: sp.spmatrix):
    """``(r -> M^-1 r, name)``: IC(0), or the identity (CG) where IC(0) breaks down."""
    try:
        return classical_preconditioner(sp.csr_matrix(A), "ic"), "pcg-ic"
    except SciMLError:  # IC(0) breaks down on some SPD matrices: plain CG always applies
        return (lambda r: np.array(r, copy=True)), "cg"


def solve_with_fallback(A: sp.spmatrix, b: np.ndarray, direction, tol: float = 1e-6, maxiter: int | None = None,
                        x0: np.ndarray | None = None, memory: int | None = 2,
                        patience: int = PATIENCE) -> tuple[SolveResult, Optional[int]]:
    """DCDM that hands over when it stops helping: ``(result, hand-over iteration or None)``.

    The network's iteration runs while its last ``patience`` (10) directions together remove more
    of the error's energy norm than one Jacobi steepest-descent step would (:func:`stalled`: a
    network worse than that is worse than the simplest preconditioned iteration); when they do
    not, or a direction breaks down, or its ``maxiter`` (500) steps are spent unconverged,
    PCG-IC(0) (CG where IC(0) breaks down) continues from the current iterate, deflated by the
    network's directions: each IC(0) direction is A-orthogonalised against every direction the
    network's iteration kept and against the previous IC(0) one, so the error the network removed
    stays removed (a restarted PCG-IC(0) forgets that subspace: measured, the 4-step ConDiff
    network handed over at 43-92 took 110-131 / 213-227 iterations in all this way, 135-184 /
    244-262 restarted; ``benchmarks/measured/cpu-2026-12-04/dcdm-cpu-deflated.md``). It gets what
    is left of ``maxiter`` when one was given (else ``10 N``). The result counts the iterations of both, its residual history joins them and a note names
    the iteration of the hand-over. A network that helps, but slowly, is not handed over before
    ``maxiter``.
    """
    fired = []

    def stop(history, decrease, floor):
        if stalled(decrease, floor, patience):
            fired.append(float(np.sum(decrease[-patience:])) / floor[-patience - 1])
        return bool(fired)

    kept: dict = {}
    first = dcdm_solve(A, b, direction, tol, maxiter, x0, memory, stop=stop, state=kept)
    at = first.iterations
    rest_iter = 10 * A.shape[0] if maxiter is None else maxiter - at
    if first.converged or rest_iter == 0:
        return first, None
    why = (f"its last {patience} directions removed {fired[0]:.2g}x the energy-norm error one Jacobi "
           f"steepest-descent step would" if fired
           else "a direction broke down" if at < (500 if maxiter is None else maxiter) else f"its {at} iterations were spent")
    t0 = time.perf_counter()
    precond, name = _classical_direction(A)
    setup = time.perf_counter() - t0
    rest = dcdm_solve(A, b, precond, tol, rest_iter, first.x, memory=1, deflate=kept.get("directions", []))
    note = (f"the network stopped helping at iteration {at} ({why}, relative residual {first.residuals[-1]:.2g}); "
            f"{name} finished the solve from its iterate, deflated by the network's {len(kept.get('directions', []))} "
            f"directions, in {rest.iterations} iterations")
    return SolveResult(rest.x, rest.converged, at + rest.iterations, np.concatenate([first.residuals[:-1], rest.residuals]),
                       0.0, first.solve_time + setup + rest.solve_time, "dcdm", (note,)), at


# ----------------------------------------------------------------------------- runs


@dataclasses.dataclass(frozen=True)
class DCDMTrainOptions:
    """Training of a DCDM network (paper: Adam 1e-4, batch 10, 20,000 vectors, up to 1000 epochs).

    pde, resolution, params : the system family (``sciml.datasets.system``); ``n_systems``
        matrices (samples ``0..n_systems-1`` of ``seed``; the paper uses one per scene).
    steps : optimiser steps, each on ``batch_size`` fresh spectrally biased vectors (default 2000).
    epochs : the same count in passes over ``epoch_vectors`` vectors (the paper's training set of
        20,000; one epoch is ``epoch_vectors / batch_size`` steps); give ``steps`` or ``epochs``.
    lr : Adam learning rate, cosine-annealed to 1 % over the steps.
    degree : Chebyshev degree of the spectral filter.
    val_vectors : fixed validation vectors per system (the loss is logged every ``log_every`` steps).
    max_seconds : stop after this many seconds of training (the steps done are recorded); the
        cosine schedule then runs on whichever of steps and seconds is further along.
    unroll : conjugate-direction steps per training vector (1: the paper's loss); with k > 1 the
        loss is the residual after k steps of :func:`dcdm_solve` with all directions kept, so
        the network also learns the residuals the iteration leaves it, not only fresh ones.
    init : a DCDM run directory whose weights (same network config) start the training.
    """

    pde: str = "poisson"
    resolution: int = 32
    params: dict = dataclasses.field(default_factory=dict)
    n_systems: int = 1
    seed: int = 0
    steps: Optional[int] = None
    epochs: Optional[int] = None
    epoch_vectors: int = 20_000
    batch_size: int = 10
    lr: float = 1e-3
    degree: int = 80
    low_fraction: float = LOW_FRACTION
    low_weight: float = LOW_WEIGHT
    val_vectors: int = 20
    log_every: int = 50
    max_seconds: Optional[float] = None
    unroll: int = 1
    init: Optional[str] = None
    device: str = "auto"
    num_threads: int | None = None

    def __post_init__(self):
        if self.steps is not None and self.epochs is not None:
            raise ConfigError("give dcdm either steps or epochs (an epoch is epoch_vectors / batch_size steps), not both")
        if self.epochs is not None and (self.epochs < 1 or self.epoch_vectors < 1 or self.batch_size < 1):
            raise ConfigError("epochs, epoch_vectors and batch_size must be >= 1")
        steps = 2000 if self.epochs is None else -(-self.epochs * self.epoch_vectors // self.batch_size)
        if self.steps is None:  # frozen: the resolved count is set once, here
            object.__setattr__(self, "steps", steps)
        if self.unroll < 1:
            raise ConfigError(f"unroll must be >= 1, got {self.unroll}")
        if self.steps < 1 or self.batch_size < 1 or self.n_systems < 1 or self.lr <= 0 or self.log_every < 1:
            raise ConfigError("steps, batch_size, n_systems and log_every must be >= 1 and lr > 0")


def _training_matrices(opts: DCDMTrainOptions) -> list[tuple[sp.csr_matrix, tuple[int, ...]]]:
    """``(A, grid shape)`` of each training matrix."""
    out = []
    for i in range(opts.n_systems):
        A, _, info = system(opts.pde, resolution=opts.resolution, seed=opts.seed, index=i, **opts.params)
        A = sp.csr_matrix(A)
        if not is_symmetric(A):
            raise ConfigError(f"DCDM needs a symmetric positive definite matrix; {opts.pde} is not symmetric")
        out.append((A, tuple(info["shape"])))
    return out


def _training_system(A: sp.csr_matrix, shape, i: int, opts: DCDMTrainOptions, config: DCDMConfig, device):
    """``(network matrix as torch CSR, shape, fluid, features or None, vector generator, validation vectors)``."""
    fluid = fluid_rows(A)
    M = network_matrix(A, config)
    gen = SpectralRHS(M, opts.low_fraction, opts.low_weight, opts.degree, mask=fluid, seed=opts.seed + i)
    val = torch.from_numpy(gen.draw(opts.val_vectors, np.random.default_rng([opts.seed, 99])).astype(np.float32)).to(device)
    features = matrix_features(A, shape, torch.float32, device)[None] if config.features else None
    return (_torch_sparse(M, device), shape, torch.from_numpy(fluid.astype(np.float32)).to(device), features, gen, val)


def train_dcdm(out: str | Path, config: DCDMConfig | dict | None = None, progress: bool = True, **options) -> dict:
    """Train a DCDM network on ``options`` (:class:`DCDMTrainOptions`) and write a run directory.

    Returns ``{"run_dir", "steps", "train_loss", "val_loss", "parameters", "seconds"}``.
    """
    out = check_new(out)
    opts = from_dict(DCDMTrainOptions, options, "DCDM training options")
    device = runtime.device(opts.device)
    matrices = _training_matrices(opts)
    dim = len(matrices[0][1])
    if config is None or isinstance(config, dict):
        config = from_dict(DCDMConfig, {"dim": dim, **(config or {})}, "DCDM network config")
    if config.dim != dim:
        raise ConfigError(f"the network is {config.dim}-D but {opts.pde} is {dim}-D; set dim={dim}")
    with runtime.limit_threads(opts.num_threads):
        torch.manual_seed(opts.seed)
        net = DCDMNet(config).to(device)
        if opts.init is not None:
            start, _ = load_dcdm(opts.init)
            if dataclasses.replace(start.config, memory=config.memory) != config:  # memory is a solve setting
                raise ConfigError(f"init run {opts.init} has network config {start.config}, not {config}")
            net.load_state_dict(start.state_dict())
        rng = np.random.default_rng([opts.seed, 2023])
        prepared = [_training_system(A, shape, i, opts, config, device) for i, (A, shape) in enumerate(matrices)]
        optimiser = torch.optim.Adam(net.parameters(), lr=opts.lr)
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, opts.steps, eta_min=opts.lr * 0.01)
        done = opts.steps
        rows: list[dict] = []
        t0 = time.perf_counter()
        running = []
        with runtime.progress(opts.steps, "dcdm", enabled=progress, text="loss {task.fields[loss]}",
                              fields={"loss": "-"}) as advance:
            for step in range(1, opts.steps + 1):
                At, shape, fluid, features, gen, _ = prepared[(step - 1) % len(prepared)]
                b = _draw(gen, At, opts.batch_size, rng, device)
                if opts.unroll == 1:
                    loss = dcdm_loss(At, b, _apply(net, b, shape, fluid, features))
                else:
                    loss = unrolled_loss(net, At, b, shape, fluid, features, opts.unroll)
                optimiser.zero_grad(set_to_none=True)
                loss.backward()
                optimiser.step()
                if opts.max_seconds is None:
                    schedule.step()
                else:  # cosine in whichever of steps and seconds is further along
                    f = min(1.0, max(step / opts.steps, (time.perf_counter() - t0) / opts.max_seconds))
                    optimiser.param_groups[0]["lr"] = opts.lr * (0.01 + 0.99 * 0.5 * (1 + np.cos(np.pi * f)))
                if not torch.isfinite(loss):
                    raise DataError(f"DCDM training diverged at step {step} (loss {loss.item()}); lower lr")
                running.append(loss.item())
                out_of_time = opts.max_seconds is not None and time.perf_counter() - t0 >= opts.max_seconds
                if step % opts.log_every == 0 or step == opts.steps or out_of_time:
                    val = _val_loss(net, prepared, opts.unroll)
                    rows.append({"step": step, "train_loss": float(np.mean(running)), "val_loss": val,
                                 "lr": optimiser.param_groups[0]["lr"], "seconds": time.perf_counter() - t0})
                    running = []
                    write_metrics(out, rows)
                advance(loss=f"{loss.item():.3g}")
                if out_of_time:
                    done = step
                    break
        meta = {"train": to_dict(opts), "parameters": parameter_count(net), "steps": done,
                "val_loss": rows[-1]["val_loss"], "seconds": time.perf_counter() - t0}
        save_network(out, KIND, to_dict(config), net, extra=meta)
    return {"run_dir": str(out), "steps": done, "train_loss": rows[-1]["train_loss"],
            "val_loss": rows[-1]["val_loss"], "parameters": meta["parameters"], "seconds": meta["seconds"]}


def _draw(gen: SpectralRHS, At: torch.Tensor, k: int, rng: np.random.Generator, device) -> torch.Tensor:
    """``gen.draw(k, rng)`` as float32 on ``device``; on a GPU the Chebyshev filter runs there on the
    network matrix ``At`` (same noise, same recurrence as :meth:`SpectralRHS.filter`), since at 32^3
    the host's 80 sparse products per batch took longer than the network's step."""
    if torch.device(device).type == "cpu":
        return torch.from_numpy(gen.draw(k, rng).astype(np.float32))
    W = rng.standard_normal((gen.A.shape[0], k))
    if gen.mask is not None:
        W[~gen.mask] = 0.0
    W = torch.from_numpy(W.astype(np.float32)).to(device)
    scale, shift = 2.0 / (gen.hi - gen.lo), (gen.hi + gen.lo) / (gen.hi - gen.lo)
    t_prev, t_cur = W, scale * _spmm(At, W) - shift * W
    acc = gen.coef[0] * t_prev + gen.coef[1] * t_cur
    for c in gen.coef[2:]:
        t_prev, t_cur = t_cur, 2 * (scale * _spmm(At, t_cur) - shift * t_cur) - t_prev
        acc = acc + float(c) * t_cur
    V = W + (gen.weight - 1.0) * acc
    if gen.mask is not None:
        V = V * torch.from_numpy(gen.mask.astype(np.float32)).to(device)[:, None]
    return V / V.norm(dim=0, keepdim=True)


def unrolled_loss(net: DCDMNet, At: torch.Tensor, b: torch.Tensor, shape, fluid: torch.Tensor,
                  features: torch.Tensor | None, steps: int) -> torch.Tensor:
    """Mean over unit columns ``b`` ``(N, B)`` of ``||r_k||^2``, the residual after ``steps`` steps of
    the conjugate-direction iteration from ``x = 0`` with all directions kept (differentiable
    through every step; ``steps = 1`` is :func:`dcdm_loss`)."""
    r, prev = b, []
    for _ in range(steps):
        p = _apply(net, r / r.norm(dim=0, keepdim=True).clamp_min(1e-30), shape, fluid, features)
        for pj, Apj, pAp in prev:
            p = p - (p * Apj).sum(0) / pAp * pj
        Ap = _spmm(At, p)
        pAp = (p * Ap).sum(0).clamp_min(1e-30)
        r = r - (p * r).sum(0) / pAp * Ap
        prev.append((p, Ap, pAp))
    return (r**2).sum(0).mean()


def _apply(net: DCDMNet, b: torch.Tensor, shape, fluid: torch.Tensor, features: torch.Tensor | None = None) -> torch.Tensor:
    """Network directions ``(N, B)`` for unit columns ``b`` ``(N, B)`` (inputs scaled to unit RMS)."""
    n, k = b.shape
    x = (b * (n**0.5)).T.reshape(k, 1, *shape)
    m = fluid.reshape(1, 1, *shape).expand(k, 1, *shape)
    return net(x, m, features).reshape(k, n).T


@torch.no_grad()
def _val_loss(net, prepared, unroll: int = 1) -> float:
    """The training loss (``unroll`` steps) on the fixed validation vectors, mean over the systems."""
    net.eval()
    v = float(np.mean([unrolled_loss(net, At, val, shape, fluid, features, unroll).item()
                       for At, shape, fluid, features, _, val in prepared]))
    net.train()
    return v


_CACHE: dict[str, tuple[DCDMNet, dict]] = {}


def load_dcdm(run_dir: str | Path) -> tuple[DCDMNet, dict]:
    """The trained network (eval mode, CPU) and the run's metadata (keys a run predates take
    :attr:`DCDMConfig.LEGACY`, so an old run behaves as it was trained)."""
    state, meta = read_network(run_dir, KIND)
    config = from_dict(DCDMConfig, {**DCDMConfig.LEGACY, **meta["config"]}, f"{run_dir} dcdm config")
    return load_state(DCDMNet(config), state, run_dir), meta


register_kind(KIND, load_dcdm)


def cached_network(run: str | Path) -> DCDMNet:
    """The run's network, loaded once per process (the solve methods ``dcdm:RUN``, ``dcdm-mg:RUN``)."""
    key = str(Path(run).resolve())
    if key not in _CACHE:
        _CACHE[key] = load_dcdm(run)
    return _CACHE[key][0]


@register_run_method("dcdm")
def solve_with_run(A: sp.spmatrix, b: np.ndarray, tol: float, maxiter: int | None, x0, run: str) -> SolveResult:
    """The ``dcdm:RUN`` solve method: load (cached) the run and iterate on ``A x = b``."""
    t0 = time.perf_counter()
    net = cached_network(run)
    # the network runs on the GPU when there is one; the iteration's vectors stay in float64 on the CPU
    direction = Direction.for_matrix(net, A, device=runtime.device("auto"))
    setup = time.perf_counter() - t0
    result, _ = solve_with_fallback(A, b, direction, tol=tol, maxiter=maxiter, x0=x0, memory=net.config.memory)
    return dataclasses.replace(result, setup_time=setup, method=f"dcdm:{run}")


def _summary(r: dict) -> str:
    return (f"run {r['run_dir']}: {r['steps']} steps, {r['parameters']} parameters, final loss {r['train_loss']:.4g} "
            f"(validation {r['val_loss']:.4g}); use it with `sciml solve ... --method dcdm:{r['run_dir']}`")


@register_trainer(KIND, DCDMTrainOptions, _summary, needs_data=False)
def _fit(model, data, out: Path, options: dict, progress: bool, test_data) -> dict:
    """``sciml.training.train("dcdm", pde=..., resolution=..., steps=...)``; ``model_config``: :class:`DCDMConfig`."""
    options.pop("model", None)
    return train_dcdm(out, config=options.pop("model_config", None), progress=progress, **options)
