"""GP-HM: Gaussian-process PDE solver for high-frequency and multi-scale problems.

Fang et al., "Solving High Frequency and Multi-Scale PDEs with Gaussian Processes", ICLR 2024.

The unknowns are the solution values ``U`` on the tensor grid of collocation points (``n_col``
per dimension, box boundary included). A GP prior ``u ~ GP(0, k)`` with a product kernel
``k(x, x') = prod_d k_d(x_d - x'_d)`` makes the grid covariance a Kronecker product
``K = K_1 (x) ... (x) K_dim``. Each ``k_d`` is a spectral mixture of ``Q`` components

* ``"gm"``  (GP-HM-GM, Gaussian mixture spectrum):  ``sum_q w_q exp(-2 pi^2 s_q^2 t^2) cos(2 pi mu_q t)``
* ``"stm"`` (GP-HM-StM, Student-t mixture spectrum): ``sum_q w_q matern52(|t|; l_q) cos(2 pi mu_q t)``

with ``mu_q`` initialised at ``linspace(0, 1, Q) * F``. Derivatives of the interpolant
``u(x) = k(x, X) K^{-1} vec U`` at the grid come from kernel derivatives, per axis:
``u_xx = (K_1'' K_1^{-1}) x_1 U`` (a mode product along axis 1; the other factors cancel).

The loss (negative log joint, constants dropped) minimised by Adam over ``U`` and every kernel
hyperparameter (float64)::

    0.5 vec(U)^T K^{-1} vec(U) + 0.5 log det K                        (GP prior on U)
  + llk_weight * mean_boundary (U - g)^2 / 2                          (boundary likelihood)
  + mean_grid (residual(U, derivatives) - f)^2 / 2                    (equation likelihood)
  + sum_{d, q} log w_{d,q}                                            (Jeffreys prior p(w) ~ 1/w)

Both likelihoods use fixed weights (unit noise variance for the equation, ``llk_weight``
for the boundary: 200, advection 500), no learned noise. The Jeffreys term is the MAP
penalty in ``w`` space (``-log p(w) = sum log w``) while the optimisation variable is
``log w``; without the Jacobian it drives unused weights to zero (sparsity), as in the paper.
Options beyond the paper (defaults reproduce the protocol above): ``reduction="sum"`` (full
likelihood sums instead of means), ``whiten=True`` (optimise ``V`` with ``U = L V``, ``L`` the
Kronecker Cholesky factor) and ``freq_scale`` (override F, e.g. for grids coarser than the
paper's, whose Nyquist frequency is below F). Measured: none of them sped up poisson1d-sin100.
Kernel matrices of the uniform grid are built from the ``2n - 1`` lags (Toeplitz gather).
Nothing forms the ``n^dim x n^dim`` matrix: one Cholesky of each ``n x n`` ``K_d`` per step
plus mode products, ``O(dim n^3 + dim n^(dim+1))``.
"""

from __future__ import annotations

import dataclasses
import math
import time
from typing import Callable, Optional, Sequence

import torch

from ..errors import ConfigError
from .meshfree import TEST_POINTS, Problem, relative_l2

KERNELS = ("gm", "stm")
_SQRT5 = math.sqrt(5.0)
_TWO_PI = 2.0 * math.pi


# --------------------------------------------------------------------------------------------
# Kronecker algebra
# --------------------------------------------------------------------------------------------

def mode_product(matrix: torch.Tensor, tensor: torch.Tensor, axis: int) -> torch.Tensor:
    """``matrix`` ``(m, n)`` applied along ``axis`` (of size ``n``) of ``tensor``: the Kronecker
    product ``I (x) .. (x) matrix (x) .. (x) I`` acting on ``vec(tensor)`` (``ij`` / row-major)."""
    out = torch.tensordot(matrix, tensor, dims=([1], [axis]))
    return torch.movedim(out, 0, axis)


class KroneckerGP:
    """``K = K_1 (x) ... (x) K_D`` from symmetric positive definite per-axis factors ``K_d``.

    Solves, log-determinants and quadratic forms act on tensors of shape ``(n_1, .., n_D)``
    (``vec`` in row-major order, matching ``torch.kron(K_1, K_2)``) without forming ``K``.
    """

    def __init__(self, factors: Sequence[torch.Tensor]):
        if len(factors) == 0:
            raise ConfigError("KroneckerGP needs at least one factor, got none; pass one (n, n) matrix per axis")
        self.factors = list(factors)
        self.shape = tuple(int(k.shape[0]) for k in self.factors)
        self.chol = []
        for d, k in enumerate(self.factors):
            chol, info = torch.linalg.cholesky_ex(k)
            if int(info) != 0:
                raise ConfigError(f"kernel factor {d} must be positive definite, its Cholesky failed at "
                                  f"column {int(info)}; increase the jitter")
            self.chol.append(chol)

    def solve(self, tensor: torch.Tensor, axes: Optional[Sequence[int]] = None) -> torch.Tensor:
        """``K^{-1} vec(tensor)`` as a tensor (or only the factors on ``axes``)."""
        out = tensor
        for d in range(len(self.shape)) if axes is None else axes:
            moved = torch.movedim(out, d, 0)
            flat = moved.reshape(self.shape[d], -1)
            flat = torch.cholesky_solve(flat, self.chol[d])
            out = torch.movedim(flat.reshape(moved.shape), 0, d)
        return out

    def logdet(self) -> torch.Tensor:
        """``log det K = sum_d (N / n_d) log det K_d``."""
        total = math.prod(self.shape)
        return sum((total // n) * 2.0 * torch.log(torch.diagonal(c)).sum() for n, c in zip(self.shape, self.chol))

    def quad(self, tensor: torch.Tensor) -> torch.Tensor:
        """``vec(U)^T K^{-1} vec(U)``."""
        return (tensor * self.solve(tensor)).sum()

    def chol_matmul(self, tensor: torch.Tensor) -> torch.Tensor:
        """``(L_1 (x) .. (x) L_D) vec(tensor)``: the Cholesky factor of ``K`` applied (whitening)."""
        out = tensor
        for d, c in enumerate(self.chol):
            out = mode_product(c, out, d)
        return out

    def matmul(self, tensor: torch.Tensor) -> torch.Tensor:
        """``K vec(tensor)`` as a tensor."""
        out = tensor
        for d, k in enumerate(self.factors):
            out = mode_product(k, out, d)
        return out


# --------------------------------------------------------------------------------------------
# Spectral mixture kernels (per dimension) with analytic derivatives in t = x - x'
# --------------------------------------------------------------------------------------------

class SpectralMixture(torch.nn.Module):
    """One-dimensional spectral mixture ``k(t) = sum_q w_q env_q(t) cos(2 pi mu_q t)``.

    ``kind="gm"``: ``env_q = exp(-2 pi^2 s_q^2 t^2)`` (``s_q`` the spectral standard deviation);
    ``kind="stm"``: ``env_q = matern52(|t|; l_q)``. Positive parameters are stored as logs.
    ``k(t, order)`` returns ``d^order k / dt^order`` (0, 1 or 2), which is the derivative with
    respect to the first argument ``x`` of ``k(x - x')``.
    """

    def __init__(self, kind: str, components: int, freq_scale: float, length: float,
                 dtype=torch.float64, device="cpu"):
        super().__init__()
        if kind not in KERNELS:
            raise ConfigError(f"kernel must be one of {KERNELS}, got {kind!r}; pick 'gm' or 'stm'")
        self.kind = kind
        opts = dict(dtype=dtype, device=device)
        self.log_w = torch.nn.Parameter(torch.zeros(components, **opts))
        self.mu = torch.nn.Parameter(torch.linspace(0.0, 1.0, components, **opts) * freq_scale)
        # envelopes start wide: correlation length ~ the box length
        if kind == "gm":
            init = torch.full((components,), 1.0 / length, **opts)   # s_q: spectral std
        else:
            init = torch.full((components,), length, **opts)          # l_q: Matern lengthscale
        self.log_scale = torch.nn.Parameter(torch.log(init))

    @property
    def weights(self) -> torch.Tensor:
        return torch.exp(self.log_w)

    def forward(self, t: torch.Tensor, order: int = 0) -> torch.Tensor:
        t = t.unsqueeze(-1)                      # (..., 1) against (Q,)
        w = torch.exp(self.log_w)
        om = _TWO_PI * self.mu
        c, s = torch.cos(om * t), torch.sin(om * t)
        scale = torch.exp(self.log_scale)
        if self.kind == "gm":
            a = 2.0 * math.pi**2 * scale**2      # env = exp(-a t^2)
            e0 = torch.exp(-a * t * t)
            e1 = -2.0 * a * t * e0
            e2 = (4.0 * a * a * t * t - 2.0 * a) * e0
        else:
            r = torch.abs(t)
            rho = _SQRT5 * r / scale
            ex = torch.exp(-rho)
            e0 = (1.0 + rho + rho * rho / 3.0) * ex
            e1 = -(5.0 / (3.0 * scale**2)) * t * (1.0 + rho) * ex
            e2 = (5.0 / (3.0 * scale**2)) * (rho * rho - rho - 1.0) * ex
        if order == 0:
            k = e0 * c
        elif order == 1:
            k = e1 * c - e0 * om * s
        elif order == 2:
            k = e2 * c - 2.0 * e1 * om * s - e0 * om * om * c
        else:
            raise ConfigError(f"kernel derivative order must be 0, 1 or 2, got {order}; ask for one of those")
        return (k * w).sum(-1)

    def matrix(self, x: torch.Tensor, y: torch.Tensor, order: int = 0) -> torch.Tensor:
        """``d^order/dx^order k(x_i - y_j)`` ``(len(x), len(y))``."""
        return self(x[:, None] - y[None, :], order)

    def toeplitz(self, n: int, h: float, order: int = 0) -> torch.Tensor:
        """:meth:`matrix` of a uniform grid of ``n`` points, spacing ``h``, with itself: the kernel
        is stationary, so it is evaluated on the ``2n - 1`` lags only and gathered (``O(n Q + n^2)``
        instead of ``O(n^2 Q)``)."""
        dev = self.mu.device
        lags = torch.arange(-(n - 1), n, dtype=torch.float64, device=dev) * h
        values = self(lags, order)
        i = torch.arange(n, device=dev)
        return values[i[:, None] - i[None, :] + (n - 1)]


# --------------------------------------------------------------------------------------------
# The solver
# --------------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class GPResult:
    """``u_test``: prediction on ``problem.points(300)`` (``(300^dim,)``); ``rel_l2`` the final
    relative L2 error there, ``min_rel_l2`` the minimum over the evaluations (the paper reports
    that); ``history`` ``(step, loss, rel_l2)`` per evaluation."""

    u_test: torch.Tensor
    rel_l2: float
    min_rel_l2: float
    history: list
    seconds: float
    iterations: int
    kernel: str
    n_col: int


_AXES = ("x", "y")


class GPHM(torch.nn.Module):
    """The GP-HM model of one problem: the grid values ``U`` and one mixture per dimension."""

    def __init__(self, problem: Problem, kernel: str = "gm", n_col: Optional[int] = None, components: int = 30,
                 jitter: float = 1e-6, llk_weight: Optional[float] = None, seed: int = 0, device="cpu",
                 whiten: bool = False, reduction: str = "mean", freq_scale: Optional[float] = None):
        super().__init__()
        freq_scale = problem.freq_scale if freq_scale is None and isinstance(problem, Problem) else freq_scale
        if not (isinstance(freq_scale, (int, float)) and freq_scale > 0 and math.isfinite(freq_scale)):
            raise ConfigError(f"freq_scale must be a positive finite number, got {freq_scale!r}; "
                              "leave it None for the problem's F")
        if reduction not in ("mean", "sum"):
            raise ConfigError(f"reduction must be 'mean' or 'sum', got {reduction!r}; use 'sum' for the full likelihood")
        self.reduction = reduction
        self.whiten = bool(whiten)
        if not isinstance(problem, Problem):
            raise ConfigError(f"problem must be a meshfree.Problem, got {type(problem).__name__}; "
                              "use sciml.solvers.meshfree.get_problem(name)")
        if kernel not in KERNELS:
            raise ConfigError(f"GP-HM kernel must be one of {', '.join(KERNELS)}, got {kernel!r}; "
                              "use 'gm' (Gaussian mixture) or 'stm' (Student-t mixture)")
        n_col = problem.n_col if n_col is None else n_col
        if not isinstance(n_col, int) or isinstance(n_col, bool) or n_col < 3:
            raise ConfigError(f"n_col (collocation points per dimension) must be an integer >= 3, got {n_col!r}; "
                              "use at least 3 (the paper: problem.n_col)")
        if not isinstance(components, int) or isinstance(components, bool) or components < 1:
            raise ConfigError(f"components must be an integer >= 1, got {components!r}; the paper uses 30")
        if not (jitter > 0 and math.isfinite(jitter)):
            raise ConfigError(f"jitter must be a positive finite number, got {jitter!r}; use e.g. 1e-6")
        if llk_weight is None:
            llk_weight = 500.0 if problem.pde == "advection" else 200.0
        if not (llk_weight > 0 and math.isfinite(llk_weight)):
            raise ConfigError(f"llk_weight must be a positive finite number, got {llk_weight!r}; "
                              "the paper uses 200 (advection 500)")
        self.problem, self.kernel, self.n_col = problem, kernel, n_col
        self.jitter, self.llk_weight = float(jitter), float(llk_weight)
        dev = torch.device(device)
        opts = dict(dtype=torch.float64, device=dev)
        self.axes = [a.to(dev) for a in problem.grid(n_col)]
        self.h = [(hi - lo) / (n_col - 1) for lo, hi in zip(problem.lower, problem.upper)]
        self.mixtures = torch.nn.ModuleList([
            SpectralMixture(kernel, components, freq_scale, hi - lo, device=dev)
            for lo, hi in zip(problem.lower, problem.upper)])
        pts = problem.points(n_col).to(dev)
        shape = (n_col,) * problem.dim
        self.register_buffer("f", problem.source(pts.cpu()).to(**opts).reshape(shape))
        boundary = problem.on_boundary(pts.cpu()).to(dev).reshape(shape)
        self.register_buffer("boundary", boundary)
        self.register_buffer("g", problem.exact(pts.cpu()).to(**opts).reshape(shape)[boundary])
        gen = torch.Generator().manual_seed(seed)
        init = (1e-2 * torch.randn(shape, generator=gen, dtype=torch.float64)).to(dev)
        if self.whiten:
            self.V = torch.nn.Parameter(init)
        else:
            self.U = torch.nn.Parameter(init)
        self._eye = torch.eye(n_col, **opts)

    def kron(self) -> KroneckerGP:
        """The prior covariance of the grid values (jitter on every factor)."""
        return KroneckerGP([m.toeplitz(self.n_col, h) + self.jitter * self._eye for m, h in zip(self.mixtures, self.h)])

    def derivatives(self, gp: KroneckerGP, U: Optional[torch.Tensor] = None) -> dict[str, torch.Tensor]:
        """Derivatives of the GP interpolant at the grid: ``(K_d^(k) K_d^{-1})`` along axis ``d``."""
        U = self.values(gp) if U is None else U
        out = {}
        orders = (1,) if self.problem.pde == "advection" else (2,)
        for d in range(self.problem.dim):
            alpha = gp.solve(U, axes=[d])
            for k in orders:
                mat = self.mixtures[d].toeplitz(self.n_col, self.h[d], k)
                out[_AXES[d] * k] = mode_product(mat, alpha, d)
        return out

    def values(self, gp: KroneckerGP) -> torch.Tensor:
        """The grid values ``U`` (``L V`` when whitened)."""
        return gp.chol_matmul(self.V) if self.whiten else self.U

    def loss(self) -> torch.Tensor:
        gp = self.kron()
        U = self.values(gp)
        quad = (self.V * self.V).sum() if self.whiten else (U * gp.solve(U)).sum()
        prior = 0.5 * quad + 0.5 * gp.logdet()
        red = torch.sum if self.reduction == "sum" else torch.mean
        bound = self.llk_weight * 0.5 * red((U[self.boundary] - self.g) ** 2)
        res = self.problem.residual(U, self.derivatives(gp, U))
        eq = 0.5 * red((res - self.f) ** 2)
        jeffreys = sum(m.log_w.sum() for m in self.mixtures)
        return prior + bound + eq + jeffreys

    @torch.no_grad()
    def newton_u(self) -> None:
        """Set ``U`` to the minimiser of the loss over ``U`` for the current kernel (1-D).

        The loss is quadratic in ``U`` for a linear PDE: ``(K^-1 + lambda w_b P + w_e D^T D) U =
        lambda w_b P g + w_e D^T f`` with ``D = K'' K^-1`` and ``P`` the boundary selection; one
        solve gives the exact minimiser. For Allen-Cahn (``D U + U (U^2 - 1)``) this is one
        Gauss-Newton step from the current ``U``. Same objective as the paper, another optimiser
        for ``U`` (the paper: Adam on everything).
        """
        n = self.n_col
        K = self.mixtures[0].toeplitz(n, self.h[0]) + self.jitter * self._eye
        chol = torch.linalg.cholesky(K)
        k_inv = torch.cholesky_inverse(chol)
        D = self.mixtures[0].toeplitz(n, self.h[0], 2) @ k_inv
        red_b = 1.0 if self.reduction == "sum" else 1.0 / max(int(self.boundary.sum()), 1)
        red_e = 1.0 if self.reduction == "sum" else 1.0 / n
        b = self.boundary.to(torch.float64)
        g = torch.zeros(n, dtype=torch.float64, device=b.device)
        g[self.boundary] = self.g
        U = self.U.detach()
        if self.problem.pde == "allen_cahn":  # linearise u (u^2 - 1) at the current U
            J = D + torch.diag(3 * U**2 - 1)
            target = self.f - (U * (U**2 - 1) - (3 * U**2 - 1) * U)
        else:
            J, target = D, self.f
        A = k_inv + self.llk_weight * red_b * torch.diag(b) + red_e * (J.T @ J)
        rhs = self.llk_weight * red_b * b * g + red_e * (J.T @ target)
        self.U.copy_(torch.linalg.solve(0.5 * (A + A.T), rhs))

    @torch.no_grad()
    def predict(self, axes: Sequence[torch.Tensor]) -> torch.Tensor:
        """The posterior mean ``k(x, X) K^{-1} vec U`` on the tensor grid of ``axes`` (flattened, ``ij``)."""
        gp = self.kron()
        out = gp.solve(self.values(gp))
        for d, (m, a) in enumerate(zip(self.mixtures, self.axes)):
            out = mode_product(m.matrix(axes[d].to(a), a), out, d)
        return out.reshape(-1)


def gp_solve(problem: Problem, kernel: str = "gm", n_col: Optional[int] = None, iterations: Optional[int] = None,
             lr: float = 1e-2, components: int = 30, llk_weight: Optional[float] = None, eval_every: int = 100,
             seed: int = 0, jitter: float = 1e-6, whiten: bool = False, reduction: str = "mean",
             freq_scale: Optional[float] = None, progress: Optional[Callable[[int, float, float], None]] = None,
             device: str = "cpu", u_update: str = "auto") -> GPResult:
    """Solve ``problem`` with GP-HM; Adam on the negative log joint (see the module docstring).

    ``u_update``: ``adam`` (the paper: Adam on ``U`` with the kernel) or ``newton`` (1-D, not
    whitened: after every Adam step on the kernel, ``U`` is set to its exact minimiser for a
    linear PDE, one Gauss-Newton step for Allen-Cahn; see :meth:`GPHM.newton_u`); ``auto`` picks
    ``newton`` where it applies. Measured on poisson1d-sin100 (Student-t, 1 thread): ``adam``
    reached 3.3e-2 after 1000 steps and 6.4e-3 after 3500; ``newton`` see tests/test_gp.py.

    Evaluates the relative L2 error on ``problem.points(300)`` every ``eval_every`` steps and at
    the end; ``progress(step, loss, rel_l2)`` is called at each evaluation.
    """
    iterations = problem.iterations if iterations is None and isinstance(problem, Problem) else iterations
    if not isinstance(iterations, int) or isinstance(iterations, bool) or iterations < 1:
        raise ConfigError(f"iterations must be an integer >= 1, got {iterations!r}; the paper uses problem.iterations")
    if not isinstance(eval_every, int) or isinstance(eval_every, bool) or eval_every < 1:
        raise ConfigError(f"eval_every must be an integer >= 1, got {eval_every!r}; use e.g. 100")
    if not (isinstance(lr, (int, float)) and lr > 0 and math.isfinite(lr)):
        raise ConfigError(f"lr must be a positive finite number, got {lr!r}; the paper uses 1e-2")
    try:
        dev = torch.device(device)
        torch.empty(0, device=dev)
    except (RuntimeError, TypeError) as exc:
        raise ConfigError(f"device must be an available torch device, got {device!r} ({exc}); use 'cpu'") from None
    model = GPHM(problem, kernel, n_col, components, jitter, llk_weight, seed, dev, whiten, reduction, freq_scale)
    if u_update not in ("auto", "adam", "newton"):
        raise ConfigError(f"u_update must be auto, adam or newton, got {u_update!r}")
    newton = u_update == "newton" or (u_update == "auto" and problem.dim == 1 and not whiten)
    if newton and (problem.dim != 1 or whiten):
        raise ConfigError("u_update='newton' works on 1-D problems without whitening; use 'adam'")
    test_axes = problem.grid(TEST_POINTS)
    exact = problem.exact(problem.points(TEST_POINTS)).to(torch.float64)
    params = [p for name, p in model.named_parameters() if not (newton and name == "U")]
    opt = torch.optim.Adam(params, lr=lr)
    if newton:
        model.newton_u()
    history, best = [], math.inf
    start = time.perf_counter()

    def evaluate(step: int, loss: float) -> torch.Tensor:
        nonlocal best
        pred = model.predict(test_axes).cpu()
        err = relative_l2(pred, exact)
        best = min(best, err) if math.isfinite(err) else best
        history.append((step, loss, err))
        if progress is not None:
            progress(step, loss, err)
        return pred

    loss_value = math.nan
    for step in range(1, iterations + 1):
        opt.zero_grad(set_to_none=True)
        loss = model.loss()
        loss.backward()
        opt.step()
        if newton:
            model.newton_u()
        loss_value = float(loss.detach())
        if step % eval_every == 0 and step != iterations:
            evaluate(step, loss_value)
    pred = evaluate(iterations, loss_value)
    return GPResult(u_test=pred, rel_l2=history[-1][2], min_rel_l2=best, history=history,
                    seconds=time.perf_counter() - start, iterations=iterations, kernel=kernel, n_col=model.n_col)
