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
Options beyond the paper (defaults reproduce the protocol above in 1-D): ``reduction="sum"`` (full
likelihood sums instead of means), ``whiten=True`` (optimise ``V`` with ``U = L V``, ``L`` the
Kronecker Cholesky factor) and ``freq_scale`` (override F, e.g. for grids coarser than the
paper's, whose Nyquist frequency is below F). Measured: none of them sped up poisson1d-sin100.
Kernel matrices of the uniform grid are built from the ``2n - 1`` lags (Toeplitz gather).
Nothing forms the ``n^dim x n^dim`` matrix: one Cholesky of each ``n x n`` ``K_d`` per step
plus mode products, ``O(dim n^3 + dim n^(dim+1))``.

The ``U`` update (``gp_solve(u_update=...)``). ``"newton"`` (the default in every dimension unless
``whiten``): after each Adam step on the kernel hyperparameters, ``U`` is set to the minimiser of
the loss over ``U`` (a quadratic for Poisson and advection; one Gauss-Newton step for Allen-Cahn).
1-D: a dense ``n x n`` solve. ``dim >= 2`` (:class:`KroneckerUSolve`): whitened ``U = S V`` with
``S = (x)_d K_d^{1/2}`` (prior ``||V||^2 / 2``), normal equations solved by preconditioned CG whose
matvecs are per-axis mode products, ``O(dim^2 n^(dim+1))`` each; the operator enters through
``F_d = K_d^(k) K_d^{-1/2}`` per axis. The preconditioner is exact for the equation term: with
``K_d^{-1/2} K_d^(k) K_d^{-1/2} = Z_d Theta_d Z_d^H``, ``J S = S W Theta W^H`` (``W = (x) Z_d``,
``Theta`` a Kronecker sum), so ``M = W Theta_hat^H G Theta_hat W^H`` with ``G = (x)_d Z_d^H K_d Z_d``
inverts with ``3 dim`` mode products; ``Theta_hat`` lifts the near-zero ``Theta`` modes (harmonic /
characteristic directions) to the size of the prior and boundary terms. CG is warm-started from
the previous ``U``, ``cg_first`` iterations at the first solve and ``cg_maxiter`` afterwards.
Measured (1 thread): 2-12 CG iterations per step while the kernel is broad; once Adam sharpens the
spectral peaks (``K_d`` within a factor ~1 of the jitter on a third of its spectrum) ``G`` is far
from the identity the prior needs and CG slows to the ``cg_maxiter`` cap (see benchmarks/gp.py).
For Allen-Cahn the Gauss-Newton step is damped (:meth:`GPHM.damped_newton_u`): ``U + a (U_GN - U)``
with ``a`` the first of ``1, 1/2, ..`` that does not increase the loss (``gn_iters`` such steps per
kernel step), so the ``U`` step never increases the loss in any dimension (CG from a warm start
decreases the quadratic monotonically too).

The kernel step (``gp_solve(kernel_step=...)``). ``"adam"`` (default in 1-D and for 2-D Poisson):
Adam on the gradient at fixed ``U``. ``"whitened"``: the gradient at fixed whitened values
``V = L^-1 U`` (``L`` the Kronecker Cholesky factor), ``U`` carried as ``L(theta) V`` into the ``U``
solve; at an exact ``U`` both are the gradient of the profile ``min_U loss(U, theta)`` (envelope
theorem). ``"monotone"`` (default for 2-D advection and Allen-Cahn): Adam proposes the ``whitened``
step, ``U`` is re-solved for it, and the pair is kept only if the loss did not increase; otherwise
the step is shortened (x 1/4, 3 tries) or dropped, kernel and ``U`` restored
(:func:`_monotone_step`). With both steps non-increasing, the joint loss is monotone whatever CG's
accuracy. Why (measured, advection2d at 96^2, F = 40, StM, 1 thread): the converged first solve
gives rel. L2 8.2e-3 (1689 CG iterations, 4 s); plain Adam with ``U`` re-solved to convergence after
every step lowers the loss every step and the error to 5.9e-3 in 8 steps, but with the per-step CG
cap of 100 ``U`` is inexact, the fixed-``U`` gradient is not the profile gradient, and the loss rose
from 1.72e4 to 4.0e4 in 3 steps (error 0.37 from the random start, 0.13 from ``U = 0``; 4-7 at
128^2). The acceptance test has to be on the loss after the ``U`` re-solve: at fixed ``U`` (or
``V``) the loss is so curved in the hyperparameters that Adam's step ``1e-5 sign(grad)`` already
raises it by 2e2 (allencahn2d at 64^2, quadratically in the step), which held a fixed-``U`` test to
~1e-3 of Adam's step and stalled the kernel. Measured with ``monotone`` (1 thread): advection2d
96^2, 100 CG iterations per step, 40 steps: 7.5e-3 (no blow-up, loss monotone, 15 s); 400 CG
iterations, 20 steps: 5.6e-3 (25 s); 128^2, 40 steps: 7.6e-4 (60 s; GM 6.3e-3).
allencahn2d-multiscale 64^2 (lr 0.2): 0.21 @ 100, 1.4e-2 @ 200 steps (7 s); lr 1e-2: 0.35 @ 100
(plain Adam 0.39, ``whitened`` 0.33); 128^2 (F 30, lr 0.2): 0.18 @ 100 steps and falling, 67 s,
~190 CG iterations per step (plain Adam, undamped: diverged, ~31). Past ~250 steps the loss keeps falling (``0.5 log det K``
unbounded below as the spectral peaks sharpen) while the error does not, and CG slows to its cap: a
property of the joint MAP objective. Allen-Cahn at lr 0.2 (64^2, 200 steps): plain ``adam`` diverged
(16), ``whitened`` 0.64, ``monotone`` 1.4e-2. Not the default for 2-D Poisson: a lower loss is not a
lower error there, and the plain non-monotone Adam path gets further (poisson2d-sin6cos20 at 64^2,
F = 5, 60 steps: ``adam`` 1.4e-3, ``whitened`` 2.9e-3, ``monotone`` 7.9e-3 at lr 1e-2, 2.8e-2 at lr
0.2). In newton mode the first solve starts from ``U = 0`` (the random start's prior term is ~1e12
where ``K_d`` is near the jitter: allencahn2d at 128^2 then stalled at 8 under the per-step CG cap)
and may take up to ``cg_first`` (5000) CG iterations: the converged first solve is what advection2d
rests on.

``"adam"`` for ``u_update``: the paper's optimiser, Adam on ``U`` with the kernel (2-D: rel. L2
stays ~1 at CPU budgets). ``reduction="auto"`` (the default) takes the paper's means in 1-D and sums in 2-D, a
deliberate departure from the paper's loss there: with the means the ``0.5 log det K`` term
(``~1e4``) outweighs both likelihoods and Adam drives the kernel away from the data (measured on
poisson2d-sin6cos20 at 64^2, F = 5, StM: 5e-2 after the first solve, 3.2 after 50 steps; ``sum``:
1.4e-3 after 60 steps).
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import math
import time
from typing import Callable, Optional, Sequence

import torch

from .. import runtime
from ..errors import ConfigError
from . import register
from .problems import TEST_POINTS, Problem, relative_l2

KERNELS = ("gm", "stm")
LOSS_TOL = 5e-2      # default early stop: relative loss change over LOSS_WINDOW steps (gp_solve)
LOSS_WINDOW = 100
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

    def chol_solve(self, tensor: torch.Tensor) -> torch.Tensor:
        """``(L_1 (x) .. (x) L_D)^-1 vec(tensor)``: whitened coordinates of ``tensor``."""
        out = tensor
        for d, c in enumerate(self.chol):
            moved = torch.movedim(out, d, 0)
            flat = torch.linalg.solve_triangular(c, moved.reshape(self.shape[d], -1), upper=False)
            out = torch.movedim(flat.reshape(moved.shape), 0, d)
        return out

    def matmul(self, tensor: torch.Tensor) -> torch.Tensor:
        """``K vec(tensor)`` as a tensor."""
        out = tensor
        for d, k in enumerate(self.factors):
            out = mode_product(k, out, d)
        return out


def _outer(vectors: Sequence[torch.Tensor]) -> torch.Tensor:
    """``v_1 (x) .. (x) v_D`` as a tensor of shape ``(n_1, .., n_D)``."""
    out = vectors[0]
    for v in vectors[1:]:
        out = out[..., None] * v
    return out


class KroneckerUSolve:
    """The ``U``-subproblem of GP-HM for a fixed kernel on a tensor grid of any dimension::

        min_U  0.5 vec(U)^T K^-1 vec(U) + 0.5 w_b ||P U - g||^2 + 0.5 w_e ||J U - t||^2

    ``K = K_1 (x) .. (x) K_D`` the prior, ``P`` the boundary selection, ``J = sum_d c_d D_d (x)_d``
    the PDE operator with ``D_d = K_d^(k) K_d^-1`` (``k = 2``, ``c_d = 1``: Laplacian; ``k = 1``,
    ``c = (beta, 1)``: advection) plus, for Allen-Cahn, the Gauss-Newton diagonal ``a = 3 U0^2 - 1``
    at the linearisation point ``U0`` (``t = f + 2 U0^3``; linear PDEs: ``t = f``). ``w_b, w_e`` are
    the likelihood weights of :meth:`GPHM.loss` (``llk_weight / #boundary`` and ``1 / n^D`` for
    ``reduction="mean"``).

    Whitened coordinates ``U = S V`` with the symmetric square root ``S = (x)_d K_d^{1/2}`` turn the
    prior into ``||V||^2 / 2``; the normal equations ``A V = S (w_b P g + w_e J^T t)``,
    ``A = I + S (w_b P + w_e J^T J) S``, are solved by preconditioned CG. Every product is a sequence
    of per-axis mode products: ``O(D^2 n^(D+1))`` per matvec, never an ``n^D x n^D`` matrix.

    Preconditioner: per axis, ``B_d = K_d^{-1/2} K_d^(k) K_d^{-1/2} = Z_d Theta_d Z_d^H`` (symmetric
    for ``k = 2``, skew for ``k = 1``: ``Z_d`` unitary, ``Theta_d`` imaginary), so that exactly
    ``J S = S W Theta W^H`` with ``W = (x)_d Z_d`` and ``Theta = sum_d c_d Theta_d`` (+ ``mean(a)``;
    a Kronecker sum, diagonal). The equation term is then ``w_e W Theta^* G Theta W^H`` with
    ``G = (x)_d Z_d^H K_d Z_d``, whose inverse is a Kronecker product too. The preconditioner::

        M = w_e W Theta_hat^* G Theta_hat W^H,   Theta_hat = Theta sqrt(1 + rho / |Theta|^2),
        rho = (1 + w_b diag(W^H S P S W)) / (w_e diag(G))

    is exact where ``|Theta|^2 >> rho`` and stands in for the prior and boundary terms where the
    operator is (nearly) singular. ``M^-1`` costs ``3 D`` mode products. A diagonal
    ``W (I + w_e |Theta|^2 diag(G)) W^H`` was tried first: fine for the initial kernel, but once
    ``K_d`` is ill-conditioned ``G`` is far from diagonal (measured cond(M^-1 A) 8e5 against 6e2
    on a trained 56^2 state; CG 729 against 24 iterations). Neither helps much where ``K_d`` has
    reached the jitter on a large part of its spectrum (late training, sharp spectral peaks): there
    CG needs ~1e3 iterations (the per-step cap then leaves ``U`` inexact).
    Measured (dense check, 8^2-40^2 grids, initial kernels): ``cond(A)`` up to 4e7, ``cond(M^-1 A)``
    <= 4, CG to 1e-10-1e-13 in 2-28 iterations.
    """

    def __init__(self, model: "GPHM", U_lin: Optional[torch.Tensor] = None):
        problem = model.problem
        n, dim = model.n_col, problem.dim
        self.dim = dim
        order = 1 if problem.pde == "advection" else 2
        coef = [problem.beta] + [1.0] * (dim - 1) if problem.pde == "advection" else [1.0] * dim
        sums = model.reduction == "sum"
        self.w_b = model.llk_weight * (1.0 if sums else 1.0 / max(int(model.boundary.sum()), 1))
        self.w_e = 1.0 if sums else 1.0 / n**dim
        self.mask = model.boundary.to(torch.float64)
        g = torch.zeros_like(self.mask)
        g[model.boundary] = model.g
        eye = model._eye
        self.S, self.S_inv, self.F, self.Z, self.G_inv = [], [], [], [], []
        thetas, k_diag, bk_diag = [], [], []
        interior = torch.ones(n, dtype=torch.float64, device=eye.device)
        interior[0] = interior[-1] = 0.0
        for d in range(dim):
            m, h = model.mixtures[d], model.h[d]
            K = m.toeplitz(n, h) + model.jitter * eye
            lam, Q = torch.linalg.eigh(K)
            lam = lam.clamp_min(0.5 * model.jitter)      # K >= jitter I; guards rounding only
            root = lam.sqrt()
            self.S.append((Q * root) @ Q.T)
            self.S_inv.append((Q / root) @ Q.T)
            k_inv = (Q / lam) @ Q.T
            # F_d = D_d S_d = K_d^(k) K_d^{-1/2}: bounded even where K_d is near singular, unlike D_d
            F = m.toeplitz(n, h, order) @ self.S_inv[d]
            self.F.append(coef[d] * F)
            B = self.S_inv[d] @ F
            if order == 2:
                theta, Z = torch.linalg.eigh(0.5 * (B + B.T))
            else:   # B skew: i B Hermitian, B = Z diag(-i w) Z^H
                w, Z = torch.linalg.eigh(1j * (0.5 * (B - B.T)).to(torch.complex128))
                theta = -1j * w
            self.Z.append(Z)
            thetas.append(coef[d] * theta)
            G_inv = Z.conj().T @ k_inv.to(Z.dtype) @ Z                # (Z^H K Z)^-1
            self.G_inv.append(0.5 * (G_inv + G_inv.conj().T))
            SZ = self.S[d].to(Z.dtype) @ Z
            power = (SZ.conj() * SZ).real
            k_diag.append(power.sum(0))                                # diag(Z^H K Z)
            bk_diag.append((power * interior[:, None]).sum(0))
        self.complex = order == 1
        if problem.pde == "allen_cahn":
            U_lin = model.U.detach() if U_lin is None else U_lin
            self.a = 3 * U_lin**2 - 1
            target = model.f + 2 * U_lin**3
        else:
            self.a, target = None, model.f
        theta = thetas[0]
        for th in thetas[1:]:
            theta = theta[..., None] + th
        if self.a is not None:
            theta = theta + self.a.mean()
        kd = _outer(k_diag)
        reg = (1.0 + self.w_b * (kd - _outer(bk_diag))) / (self.w_e * kd)
        mag2 = theta.abs() ** 2
        self.theta_hat = math.sqrt(self.w_e) * torch.where(
            mag2 > 0, theta * torch.sqrt(1.0 + reg / mag2.clamp_min(1e-300)), torch.sqrt(reg).to(theta.dtype))
        self.rhs = self._apply(self.S, self.w_b * self.mask * g) + self.w_e * self.JS_T(target)

    def _apply(self, mats: Sequence[torch.Tensor], tensor: torch.Tensor) -> torch.Tensor:
        for d, mat in enumerate(mats):
            tensor = mode_product(mat, tensor, d)
        return tensor

    def JS(self, V: torch.Tensor) -> torch.Tensor:
        """``J S V = sum_d (F_d (x)_d prod_{e != d} S_e (x)_e) V`` (+ ``a * S V``), ``F_d = c_d D_d S_d``."""
        out = 0
        for d in range(self.dim):
            out = out + self._apply([self.F[e] if e == d else self.S[e] for e in range(self.dim)], V)
        return out if self.a is None else out + self.a * self._apply(self.S, V)

    def JS_T(self, R: torch.Tensor) -> torch.Tensor:
        """The transpose of :meth:`JS`."""
        out = 0
        for d in range(self.dim):
            out = out + self._apply([self.F[e].T if e == d else self.S[e] for e in range(self.dim)], R)
        return out if self.a is None else out + self._apply(self.S, self.a * R)

    def matvec(self, V: torch.Tensor) -> torch.Tensor:
        """``A V = V + w_b S P S V + w_e (J S)^T (J S) V``."""
        bound = self._apply(self.S, self.w_b * self.mask * self._apply(self.S, V))
        return V + bound + self.w_e * self.JS_T(self.JS(V))

    def precondition(self, r: torch.Tensor) -> torch.Tensor:
        """``M^-1 r = W Theta_hat^-1 G^-1 Theta_hat^-H W^H r``."""
        x = r.to(self.Z[0].dtype)
        x = self._apply([z.conj().T for z in self.Z], x) / self.theta_hat.conj()
        x = self._apply(self.G_inv, x) / self.theta_hat
        x = self._apply(self.Z, x)
        return x.real.contiguous() if self.complex else x

    def solve(self, U0: Optional[torch.Tensor] = None, tol: float = 1e-8, maxiter: int = 200):
        """Preconditioned CG from ``V0 = S^-1 U0`` (zero if None) until ``||r|| <= tol ||rhs||``.
        Returns ``(U, iterations)``."""
        b = self.rhs
        V = torch.zeros_like(b) if U0 is None else self._apply(self.S_inv, U0)
        r = b - self.matvec(V)
        z = self.precondition(r)
        p = z
        rz = (r * z).sum()
        stop = tol * torch.linalg.vector_norm(b)
        its = 0
        while its < maxiter and torch.linalg.vector_norm(r) > stop:
            Ap = self.matvec(p)
            alpha = rz / (p * Ap).sum()
            V = V + alpha * p
            r = r - alpha * Ap
            z = self.precondition(r)
            rz, rz_old = (r * z).sum(), rz
            p = z + (rz / rz_old) * p
            its += 1
        return self._apply(self.S, V), its


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
    that); ``history`` ``(step, loss, rel_l2)`` per evaluation; ``iterations`` the steps taken;
    ``stopped``: why the run ended before its budget (empty when it ran all steps)."""

    u_test: torch.Tensor
    rel_l2: float
    min_rel_l2: float
    history: list
    seconds: float
    iterations: int
    kernel: str
    n_col: int
    cg_iterations: int = 0
    stopped: str = ""


_AXES = ("x", "y")


class GPHM(torch.nn.Module):
    """The GP-HM model of one problem: the grid values ``U`` and one mixture per dimension."""

    def __init__(self, problem: Problem, kernel: str = "gm", n_col: Optional[int] = None, components: int = 30,
                 jitter: float = 1e-6, llk_weight: Optional[float] = None, seed: int = 0, device="cpu",
                 whiten: bool = False, reduction: str = "auto", freq_scale: Optional[float] = None):
        """``freq_scale`` None: the problem's F, capped at the grid's Nyquist frequency when
        ``n_col`` is below the paper's; ``reduction`` auto: means in 1-D, sums in 2-D."""
        super().__init__()
        freq_scale = problem.freq_scale if freq_scale is None and isinstance(problem, Problem) else freq_scale
        if not (isinstance(freq_scale, (int, float)) and freq_scale > 0 and math.isfinite(freq_scale)):
            raise ConfigError(f"freq_scale must be a positive finite number, got {freq_scale!r}; "
                              "leave it None for the problem's F")
        if reduction not in ("auto", "mean", "sum"):
            raise ConfigError(f"reduction must be 'auto', 'mean' or 'sum', got {reduction!r}; use 'sum' for the full likelihood")
        if reduction == "auto":  # the paper's means in 1-D; sums in 2-D, where means fail (module docstring)
            reduction = "mean" if isinstance(problem, Problem) and problem.dim == 1 else "sum"
        self.reduction = reduction
        self.whiten = bool(whiten)
        if not isinstance(problem, Problem):
            raise ConfigError(f"problem must be a meshfree.Problem, got {type(problem).__name__}; "
                              "use sciml.meshfree.problems.get_problem(name)")
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
        if freq_scale == problem.freq_scale and n_col < problem.n_col:
            # a grid coarser than the paper's: start the frequencies no higher than its Nyquist n / (2 L)
            freq_scale = min(freq_scale, min(n_col / (2.0 * (hi - lo)) for lo, hi in zip(problem.lower, problem.upper)))
        self.freq_scale = float(freq_scale)
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

    def loss(self, V: Optional[torch.Tensor] = None) -> torch.Tensor:
        """The negative log joint; ``V`` given: at ``U = L V`` (``L`` the Kronecker Cholesky factor
        of the current kernel), i.e. as a function of the kernel at fixed whitened values."""
        gp = self.kron()
        if V is not None:
            U, quad = gp.chol_matmul(V), (V * V).sum()
        else:
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
    def newton_u(self, cg_tol: float = 1e-8, cg_maxiter: int = 200) -> int:
        """Set ``U`` to the minimiser of the loss over ``U`` for the current kernel.

        The loss is quadratic in ``U`` for a linear PDE: ``(K^-1 + lambda w_b P + w_e J^T J) U =
        lambda w_b P g + w_e J^T f`` with ``J`` the PDE operator through kernel derivatives (1-D:
        ``J = K'' K^-1``) and ``P`` the boundary selection; one solve gives the exact minimiser.
        For Allen-Cahn (``J U + U (U^2 - 1)``) this is one Gauss-Newton step from the current ``U``.
        Same objective as the paper, another optimiser for ``U`` (the paper: Adam on everything).
        1-D: a dense solve. ``dim >= 2``: preconditioned CG in whitened coordinates with Kronecker
        matvecs (:class:`KroneckerUSolve`), warm-started from the current ``U``, to relative
        residual ``cg_tol`` or ``cg_maxiter`` iterations. Returns the CG iterations (0 in 1-D).
        """
        if self.problem.dim >= 2:
            system = KroneckerUSolve(self)
            U, its = system.solve(self.U.detach(), tol=cg_tol, maxiter=cg_maxiter)
            self.U.copy_(U)
            return its
        self.U.copy_(self._dense_u_solve())
        return 0

    @torch.no_grad()
    def damped_newton_u(self, cg_tol: float = 1e-8, cg_maxiter: int = 200, gn_iters: int = 1,
                        max_halvings: int = 10) -> int:
        """:meth:`newton_u` with a line search on the loss (the full nonlinear objective in ``U`` at
        the current kernel): Allen-Cahn only (for a linear PDE the step is the minimiser already and
        this is :meth:`newton_u`). ``gn_iters`` Gauss-Newton steps ``U <- U + a (U_GN - U)``, ``a``
        the first of ``1, 1/2, 1/4, ..`` that does not increase the loss (none: ``U`` is kept), so the
        loss never increases. Returns the CG iterations."""
        if self.problem.pde != "allen_cahn":
            return self.newton_u(cg_tol, cg_maxiter)
        its = 0
        for _ in range(gn_iters):
            U0 = self.U.detach().clone()
            base = float(self.loss())
            its += self.newton_u(cg_tol, cg_maxiter)
            step = self.U.detach() - U0
            alpha, accepted = 1.0, False
            for _ in range(max_halvings + 1):
                self.U.copy_(U0 + alpha * step)
                value = float(self.loss())
                if math.isfinite(value) and value <= base:
                    accepted = True
                    break
                alpha *= 0.5
            if not accepted:
                self.U.copy_(U0)
                break
            if alpha == 1.0 and base - value <= 1e-12 * abs(base):
                break
        return its

    @torch.no_grad()
    def _dense_u_solve(self) -> torch.Tensor:
        n = self.n_col
        K = self.mixtures[0].toeplitz(n, self.h[0]) + self.jitter * self._eye
        chol = torch.linalg.cholesky(K)
        k_inv = torch.cholesky_inverse(chol)
        order = 1 if self.problem.pde == "advection" else 2
        D = self.mixtures[0].toeplitz(n, self.h[0], order) @ k_inv
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
        return torch.linalg.solve(0.5 * (A + A.T), rhs)

    @torch.no_grad()
    def predict(self, axes: Sequence[torch.Tensor]) -> torch.Tensor:
        """The posterior mean ``k(x, X) K^{-1} vec U`` on the tensor grid of ``axes`` (flattened, ``ij``)."""
        gp = self.kron()
        out = gp.solve(self.values(gp))
        for d, (m, a) in enumerate(zip(self.mixtures, self.axes)):
            out = mode_product(m.matrix(axes[d].to(a), a), out, d)
        return out.reshape(-1)


def _one_thread_in_1d(fn: Callable) -> Callable:
    """Run a 1-D solve on one torch thread: its ``n x n`` (400-900) dense algebra gains nothing from
    a second one, and on a busy 2-core machine each call then waits for a core. Measured,
    poisson1d-sin100 (328 steps) under load ~6: 1 thread 18 s, the default 2 threads > 150 s."""

    @functools.wraps(fn)
    def run(problem, *args, **kwargs):
        with runtime.limit_threads(1 if getattr(problem, "dim", None) == 1 else None):
            return fn(problem, *args, **kwargs)

    return run


@_one_thread_in_1d
def gp_solve(problem: Problem, kernel: str = "gm", n_col: Optional[int] = None, iterations: Optional[int] = None,
             lr: float = 1e-2, components: int = 30, llk_weight: Optional[float] = None, eval_every: int = 100,
             seed: int = 0, jitter: float = 1e-6, whiten: bool = False, reduction: str = "auto",
             freq_scale: Optional[float] = None, progress: Optional[Callable[[int, float, float], None]] = None,
             device: str = "cpu", u_update: str = "auto", cg_tol: float = 1e-8, cg_maxiter: int = 100,
             cg_first: int = 5000, kernel_step: str = "auto", gn_iters: int = 1, loss_tol: float = LOSS_TOL,
             loss_window: int = LOSS_WINDOW) -> GPResult:
    """Solve ``problem`` with GP-HM; Adam on the negative log joint (see the module docstring).

    ``u_update``: ``adam`` (the paper: Adam on ``U`` with the kernel) or ``newton`` (any dimension,
    not whitened: after every Adam step on the kernel, ``U`` is set to its exact minimiser for a
    linear PDE, ``gn_iters`` damped Gauss-Newton steps for Allen-Cahn; see :meth:`GPHM.newton_u`,
    :meth:`GPHM.damped_newton_u`; the first solve from ``U = 0``; in ``dim >= 2`` by
    Kronecker-preconditioned CG to relative residual ``cg_tol``, at most ``cg_first`` iterations at
    the first solve and ``cg_maxiter`` per step after it, warm-started); ``auto`` picks ``newton``
    unless ``whiten``. ``GPResult.cg_iterations`` counts the CG iterations. Measured on poisson1d-sin100 (Student-t, 1 thread): ``adam``
    reached 3.3e-2 after 1000 steps and 6.4e-3 after 3500; ``newton`` see tests/test_gp.py.
    ``kernel_step`` (newton only for the last two): ``adam`` (plain Adam at fixed ``U``),
    ``whitened`` (Adam at fixed whitened ``V = L^-1 U``) or ``monotone`` (the ``whitened`` step, kept
    only if the loss after re-solving ``U`` does not increase; shortened or dropped otherwise);
    ``auto``: ``monotone`` for 2-D advection and Allen-Cahn, ``adam`` otherwise (module docstring).

    Stopping: ``iterations`` (default the paper's, ``problem.iterations``) is a budget; the run
    stops earlier once the loss changed by less than ``loss_tol`` (relative) over the last
    ``loss_window`` steps, ``|L_s - L_{s-w}| <= loss_tol * max(|L_s|, |L_{s-w}|)``; ``loss_tol=0``
    runs the whole budget (the paper's protocol). The GP-HM loss has no floor (``0.5 log det K``
    keeps falling as the spectral peaks sharpen), so the default 5e-2 per 100 steps sits above that
    drift. Measured (1 thread, GM): poisson1d-sin100 falls 19 % over steps 100-200, 6 % over
    200-300 and ~2 %/100 steps from 600 on while its error stays at 2e-5..2e-4 from step ~200;
    allencahn1d-sin100 (StM) alike.

    Evaluates the relative L2 error on ``problem.points(300)`` every ``eval_every`` steps and at
    the end; ``progress(step, loss, rel_l2)`` is called at each evaluation.
    """
    iterations = problem.iterations if iterations is None and isinstance(problem, Problem) else iterations
    if not isinstance(iterations, int) or isinstance(iterations, bool) or iterations < 1:
        raise ConfigError(f"iterations must be an integer >= 1, got {iterations!r}; the paper uses problem.iterations")
    if not (isinstance(loss_tol, (int, float)) and 0 <= loss_tol < 1):
        raise ConfigError(f"the loss tolerance must be in [0, 1), got {loss_tol!r}; use e.g. {LOSS_TOL:g} "
                          "(0 runs every step of the budget)")
    if not isinstance(loss_window, int) or isinstance(loss_window, bool) or loss_window < 1:
        raise ConfigError(f"loss_window must be an integer >= 1, got {loss_window!r}; use e.g. {LOSS_WINDOW}")
    if not isinstance(eval_every, int) or isinstance(eval_every, bool) or eval_every < 1:
        raise ConfigError(f"eval_every must be an integer >= 1, got {eval_every!r}; use e.g. 100")
    if not (isinstance(lr, (int, float)) and lr > 0 and math.isfinite(lr)):
        raise ConfigError(f"lr must be a positive finite number, got {lr!r}; the paper uses 1e-2")
    dev = runtime.device(device)
    model = GPHM(problem, kernel, n_col, components, jitter, llk_weight, seed, dev, whiten, reduction, freq_scale)
    if not (isinstance(cg_tol, (int, float)) and 0 < cg_tol < 1):
        raise ConfigError(f"cg_tol must be in (0, 1), got {cg_tol!r}; use e.g. 1e-8")
    for label, value in (("cg_maxiter", cg_maxiter), ("cg_first", cg_first)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ConfigError(f"{label} must be an integer >= 1, got {value!r}; use e.g. 100")
    if u_update not in ("auto", "adam", "newton"):
        raise ConfigError(f"u_update must be auto, adam or newton, got {u_update!r}")
    newton = u_update == "newton" or (u_update == "auto" and not whiten)
    if newton and whiten:
        raise ConfigError("u_update='newton' sets U itself and needs whiten=False; use u_update='adam' with whiten")
    test_axes = problem.grid(TEST_POINTS)
    exact = problem.exact(problem.points(TEST_POINTS)).to(torch.float64)
    if kernel_step not in ("auto", "adam", "whitened", "monotone"):
        raise ConfigError(f"kernel_step must be auto, adam, whitened or monotone, got {kernel_step!r}")
    if kernel_step in ("whitened", "monotone") and not newton:
        raise ConfigError(f"kernel_step={kernel_step!r} needs u_update='newton' (it steps the kernel at fixed "
                          "whitened U); use kernel_step='adam'")
    if kernel_step == "auto":   # monotone where the plain step fails (module docstring), adam elsewhere
        kernel_step = "monotone" if newton and problem.dim >= 2 and problem.pde != "poisson" else "adam"
    monotone = kernel_step == "monotone"
    fixed_v = kernel_step in ("whitened", "monotone")
    if not isinstance(gn_iters, int) or isinstance(gn_iters, bool) or gn_iters < 1:
        raise ConfigError(f"gn_iters must be an integer >= 1, got {gn_iters!r}; use e.g. 1")
    params = [p for name, p in model.named_parameters() if not (newton and name == "U")]
    opt = torch.optim.Adam(params, lr=lr)

    def u_step(maxiter: int) -> int:
        return model.damped_newton_u(cg_tol, maxiter, gn_iters)

    if newton:   # the first solve from U = 0: the random start only costs CG iterations (its prior
        with torch.no_grad():   # term is ~1e12 where K_d is near the jitter)
            model.U.zero_()
    cg_total = u_step(cg_first) if newton else 0
    trust = 1.0            # fraction of Adam's step taken (monotone kernel steps)
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

    loss_value, losses, stopped, step = math.nan, collections.deque(maxlen=loss_window + 1), "", 0
    for step in range(1, iterations + 1):
        opt.zero_grad(set_to_none=True)
        V = None
        if fixed_v:
            with torch.no_grad():
                V = model.kron().chol_solve(model.U)
        loss = model.loss(V)
        loss.backward()
        if monotone:
            trust, its = _monotone_step(model, opt, params, float(loss.detach()), trust, V,
                                        lambda: u_step(cg_maxiter))
            cg_total += its
        else:
            opt.step()
            if fixed_v:
                with torch.no_grad():
                    model.U.copy_(model.kron().chol_matmul(V))
            if newton:
                cg_total += u_step(cg_maxiter)
        loss_value = float(loss.detach())
        losses.append(loss_value)
        if loss_tol > 0 and len(losses) == losses.maxlen and step < iterations:
            change = abs(losses[-1] - losses[0]) / max(abs(losses[-1]), abs(losses[0]), 1e-300)
            if change <= loss_tol:   # NaN compares False: a diverged loss never counts as converged
                stopped = (f"loss converged at step {step} of {iterations}: relative change {change:.3g} <= "
                           f"{loss_tol:g} over the last {loss_window} steps")
                break
        if step % eval_every == 0 and step != iterations:
            evaluate(step, loss_value)
    pred = evaluate(step, loss_value)
    return GPResult(u_test=pred, rel_l2=history[-1][2], min_rel_l2=best, history=history,
                    seconds=time.perf_counter() - start, iterations=step, kernel=kernel, n_col=model.n_col,
                    cg_iterations=cg_total, stopped=stopped)


@torch.no_grad()
def _monotone_step(model: GPHM, opt: torch.optim.Optimizer, params: list, base: float, trust: float,
                   V: Optional[torch.Tensor], u_step: Callable[[], int], shrink: float = 0.25,
                   tries: int = 3) -> tuple[float, int]:
    """One safeguarded step of the kernel and ``U`` together. Adam proposes ``delta`` for the kernel
    (gradient at fixed whitened values ``V``); for ``theta + trust * delta`` ``U`` is carried as
    ``L(theta) V`` and re-solved (``u_step``: CG from that warm start, or damped Gauss-Newton); the
    pair is accepted if the loss does not exceed ``base`` (the loss before the step), else the step
    is shortened by ``shrink`` up to ``tries`` times, and dropped (kernel and ``U`` restored) if none
    passes. The test is on the loss after the ``U`` re-solve, i.e. on ``min_U loss(U, theta)``
    (bounded above by what the solve reaches): at fixed ``U`` (or ``V``) the loss is far too curved
    in ``theta`` (measured: Adam's step 1e-5 * sign(grad) raises it by 2e2 on allencahn2d at 64^2)
    for a useful step to pass. Returns ``(trust, CG iterations)``; ``trust`` doubles (at most 1)
    after a full step accepted at once and becomes the accepted fraction after a shortened one."""
    old = [p.detach().clone() for p in params]
    U_old = model.U.detach().clone()
    opt.step()
    delta = [p.detach() - o for p, o in zip(params, old)]
    scale, its = trust, 0
    for attempt in range(tries):
        for p, o, d in zip(params, old, delta):
            p.copy_(o + scale * d)
        try:
            model.U.copy_(model.kron().chol_matmul(V))
            its += u_step()
            value = float(model.loss())
        except (ConfigError, RuntimeError):   # a factor no longer positive definite
            value = math.inf
        if math.isfinite(value) and value <= base:
            return (min(1.0, 2.0 * scale) if attempt == 0 else scale), its
        scale *= shrink
    for p, o in zip(params, old):
        p.copy_(o)
    model.U.copy_(U_old)
    return max(scale, 1e-3), its


@register("gp", "GP-HM-GM")
def solve_gm(problem: Problem, **options) -> GPResult:
    """GP-HM with the Gaussian spectral mixture kernel (the registered method ``gp``)."""
    return gp_solve(problem, kernel="gm", **options)


@register("gp-stm", "GP-HM-StM")
def solve_stm(problem: Problem, **options) -> GPResult:
    """GP-HM with the Student-t spectral mixture kernel (the registered method ``gp-stm``)."""
    return gp_solve(problem, kernel="stm", **options)
