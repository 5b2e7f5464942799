"""PINN baseline (physics-informed neural network, DeepXDE with its PyTorch backend) for the
mesh-free test problems of :mod:`sciml.meshfree.problems`.

The network ``u(x)`` (``depth`` hidden layers of ``width`` units) minimises

    mean_i r(x_i)^2 + boundary_weight * mean_j (u(x_j) - g(x_j))^2

with ``r`` the PDE residual (``problem.residual`` of DeepXDE's ``hessian``/``jacobian`` minus the
source ``f``) at the collocation points and ``g`` the exact solution at the boundary points.

Setting (Fang et al., ICLR 2024 protocol, the paper's PINN baseline):

* collocation points: the uniform grid of ``n_col`` points per dimension (``problem.points``),
  boundary included, given to DeepXDE as ``anchors`` (no random points); the grid points on the
  boundary are also the Dirichlet points (2 in 1-D, ``4 (n_col - 1)`` in 2-D);
* the source ``f`` is evaluated once, in float64 by autodiff of ``problem.exact`` (``problem.source``),
  at the training points *after* DeepXDE has rounded them to its float type, and handed to the PDE
  function as DeepXDE's auxiliary variable (so it matches the points the network actually sees);
* Adam at ``lr`` for ``iterations`` steps (no L-BFGS), float32 unless ``float64=True``;
* errors: relative L2 against ``problem.exact`` on ``n_test`` uniform points per dimension
  (default 300 in 1-D, the paper's; 100 in 2-D, i.e. 10^4 points rather than 9 * 10^4, so that
  evaluating every ``eval_every`` steps stays cheap), at step 0, every ``eval_every`` steps and at
  the end; ``min_rel_l2`` is the minimum over those evaluations, as the paper reports it.

DeepXDE is imported only through :func:`sciml.runtime.load_deepxde`. Everything it
prints during a solve is swallowed; its global state touched here (float type, torch default
dtype, the python/numpy/torch random generators seeded by ``dde.config.set_random_seed``) is put
back when :func:`pinn_solve` returns. The network runs on the CPU (DeepXDE's default device is
reset to the CPU by the loader).
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import math
import random
import sys
import time
from typing import Callable

import numpy as np
import torch

from ..errors import ConfigError
from ..runtime import limit_threads, load_deepxde
from . import register
from .problems import TEST_POINTS, Problem, relative_l2

ACTIVATIONS = ("tanh", "sin", "sigmoid", "silu", "swish", "gelu", "elu", "selu", "relu")
PDES = ("poisson", "allen_cahn", "advection")

Progress = Callable[[int, float, float], None]


@dataclasses.dataclass(frozen=True)
class PINNResult:
    """Outcome of :func:`pinn_solve`.

    ``u_test``: the PINN at ``problem.points(n_test)`` (float64 ``(n_test^dim,)``, ``ij`` order);
    ``rel_l2``: final relative L2 error there; ``min_rel_l2``: the smallest over all evaluations;
    ``history``: ``(step, loss, rel_l2)`` per evaluation (step 0 included; ``loss`` the weighted
    training loss); ``seconds``: wall time of the solve; ``iterations``: Adam steps taken.
    """

    u_test: torch.Tensor
    rel_l2: float
    min_rel_l2: float
    history: tuple[tuple[int, float, float], ...]
    seconds: float
    iterations: int
    n_test: int


def _check_int(name: str, value, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ConfigError(f"PINN {name} must be an integer >= {minimum}, got {value!r}; "
                          f"pass a whole number of at least {minimum}")
    return int(value)


def _check_positive(name: str, value) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        v = math.nan
    if isinstance(value, bool) or not (math.isfinite(v) and v > 0):
        raise ConfigError(f"PINN {name} must be a finite number > 0, got {value!r}; pass a positive value")
    return v


@contextlib.contextmanager
def _deepxde_state(dde, float64: bool):
    """DeepXDE's float type (and torch's default dtype, which DeepXDE couples to it) for one solve,
    plus the global random generators that ``set_random_seed`` reseeds; all put back afterwards."""
    dtype = torch.get_default_dtype()
    precision = dde.config.real.precision
    seed = dde.config.random_seed
    states = random.getstate(), np.random.get_state(), torch.get_rng_state()
    try:
        if float64:
            dde.config.real.set_float64()
            torch.set_default_dtype(torch.float64)
        else:
            dde.config.real.set_float32()
            torch.set_default_dtype(torch.float32)
        yield
    finally:
        {16: dde.config.real.set_float16, 32: dde.config.real.set_float32,
         64: dde.config.real.set_float64}[precision]()
        torch.set_default_dtype(dtype)
        dde.config.random_seed = seed
        random.setstate(states[0])
        np.random.set_state(states[1])
        torch.set_rng_state(states[2])


@register("pinn", "PINN (DeepXDE)")
def pinn_solve(
    problem: Problem,
    iterations: int | None = None,
    n_col: int | None = None,
    width: int = 100,
    depth: int = 4,
    lr: float = 1e-3,
    activation: str = "tanh",
    boundary_weight: float = 1.0,
    seed: int = 0,
    eval_every: int | None = None,
    progress: Progress | None = None,
    float64: bool = False,
    n_test: int | None = None,
    num_threads: int | None = 1,
) -> PINNResult:
    """Train a PINN on ``problem`` and return its error against the exact solution.

    ``iterations`` / ``n_col`` default to the paper's (``problem.iterations``, ``problem.n_col``).
    ``eval_every`` defaults to ``min(iterations, max(50, iterations // 50))`` (each evaluation
    also makes DeepXDE recompute its training losses, Hessians included). ``progress(step, loss, rel_l2)`` is
    called at every evaluation (step 0 included). ``num_threads`` (default 1) limits torch's CPU
    threads during the solve: the network is small, and with the default threads on a busy 2-core
    machine 100 steps took 222 s instead of 3.1 s.
    """

    if not isinstance(problem, Problem):
        raise ConfigError(f"PINN problem must be a sciml.meshfree.problems.Problem, got {type(problem).__name__}; "
                          "use sciml.meshfree.problems.get_problem(name)")
    if problem.pde not in PDES or problem.dim not in (1, 2):
        raise ConfigError(f"PINN supports pde in {PDES} in 1 or 2 dimensions, got pde {problem.pde!r} in "
                          f"{problem.dim}-D; pick one of the problems of sciml.meshfree.problems.PROBLEMS")
    iterations = _check_int("iterations", problem.iterations if iterations is None else iterations, 1)
    n_col = _check_int("n_col", problem.n_col if n_col is None else n_col, 3)
    width = _check_int("width", width, 1)
    depth = _check_int("depth", depth, 1)
    lr = _check_positive("lr", lr)
    boundary_weight = _check_positive("boundary_weight", boundary_weight)
    seed = _check_int("seed", seed, 0)
    eval_every = _check_int("eval_every", min(iterations, max(50, iterations // 50)) if eval_every is None else eval_every, 1)
    n_test = _check_int("n_test", (TEST_POINTS if problem.dim == 1 else 100) if n_test is None else n_test, 2)
    if activation not in ACTIVATIONS:
        raise ConfigError(f"PINN activation {activation!r} is unknown; use one of {', '.join(ACTIVATIONS)}")
    if progress is not None and not callable(progress):
        raise ConfigError(f"PINN progress must be a callable(step, loss, rel_l2) or None, got {progress!r}")

    dde = load_deepxde()
    with limit_threads(num_threads):
        return _train(dde, problem, iterations, n_col, width, depth, lr, activation, boundary_weight, seed, eval_every,
                      progress, float64, n_test)


def _train(dde, problem, iterations, n_col, width, depth, lr, activation, boundary_weight, seed, eval_every, progress,
           float64, n_test) -> PINNResult:
    start = time.perf_counter()
    x_test = problem.points(n_test)
    u_exact = problem.exact(x_test).detach().to(torch.float64)
    history: list[tuple[int, float, float]] = []
    last_u: list[torch.Tensor] = []

    sink = io.StringIO()
    sys_stdout, sys_stderr = sys.stdout, sys.stderr  # the progress callback still prints
    with _deepxde_state(dde, bool(float64)), contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
        dtype = torch.get_default_dtype()
        dde.config.set_random_seed(seed)
        if problem.dim == 1:
            geom = dde.geometry.Interval(problem.lower[0], problem.upper[0])
        else:
            geom = dde.geometry.Rectangle(list(problem.lower), list(problem.upper))

        def source(x: np.ndarray) -> np.ndarray:
            # at the points as DeepXDE stores them (already rounded to its float type), in float64
            return problem.source(torch.from_numpy(np.asarray(x, dtype=np.float64))).numpy()[:, None]

        def boundary_values(x: np.ndarray) -> np.ndarray:
            return problem.exact(torch.from_numpy(np.asarray(x, dtype=np.float64))).detach().numpy()[:, None]

        needed = ("x", "y") if problem.pde == "advection" else ("xx", "yy")[: problem.dim]

        def pde(x, y, f):
            d = {}
            for key in needed:
                k = "xy".index(key[0])
                d[key] = dde.grad.hessian(y, x, i=k, j=k) if len(key) == 2 else dde.grad.jacobian(y, x, i=0, j=k)
            return problem.residual(y, d) - f

        bc = dde.icbc.DirichletBC(geom, boundary_values, lambda _, on_boundary: on_boundary)
        anchors = problem.points(n_col).numpy()
        data = dde.data.PDE(geom, pde, [bc], num_domain=0, num_boundary=0, anchors=anchors,
                            auxiliary_var_function=source)
        net = dde.nn.FNN([problem.dim] + [width] * depth + [1], activation, "Glorot normal")
        model = dde.Model(data, net)
        model.compile("adam", lr=lr, loss_weights=[1.0, boundary_weight], verbose=0)
        x_eval = x_test.to(dtype)

        def evaluate() -> None:
            step = int(model.train_state.step)
            if history and history[-1][0] == step:
                return
            with torch.no_grad():
                net.eval()
                u = net(x_eval).reshape(-1).to(torch.float64)
                net.train()
            loss = float(np.sum(model.train_state.loss_train))
            err = relative_l2(u, u_exact)
            history.append((step, loss, err))
            last_u[:] = [u]
            if progress is not None:
                with contextlib.redirect_stdout(sys_stdout), contextlib.redirect_stderr(sys_stderr):
                    progress(step, loss, err)

        class _Eval(dde.callbacks.Callback):
            def on_train_begin(self):
                evaluate()

            def on_epoch_end(self):
                if self.model.train_state.step % eval_every == 0 or self.model.train_state.step == iterations:
                    evaluate()

        model.train(iterations=iterations, display_every=eval_every, callbacks=[_Eval()], verbose=0)
        evaluate()

    errors = [h[2] for h in history]
    final = history[-1][2]
    return PINNResult(
        u_test=last_u[0].detach(),
        rel_l2=final,
        min_rel_l2=float(np.nanmin(errors)) if not all(math.isnan(e) for e in errors) else math.nan,
        history=tuple(history),
        seconds=time.perf_counter() - start,
        iterations=int(model.train_state.step),
        n_test=n_test,
    )
