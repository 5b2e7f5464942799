"""A trained grid operator (FNO, MgNO, U-Net, ...) as the preconditioner of a Krylov solver.

The network learns an approximate inverse: it takes the coefficient field and a residual ``r``
and returns a correction ``z ~ A^-1 r``. The solve methods

* ``fcg:RUN``: flexible CG (:func:`sciml.solvers.flexible.fcg`) with ``z = net(r)``;
* ``fgmres:RUN``: flexible GMRES with the same preconditioner;
* ``hints:RUN``: flexible CG with a hybrid preconditioner in the spirit of HINTS (Zhang,
  Kahana, Turkel, Karniadakis, Lu, arXiv 2208.13273 / Nat. Mach. Intell. 2024): relaxation
  sweeps remove the high-frequency error, the operator the smooth error it learnt. Each
  application runs ``sweeps`` forward Gauss-Seidel sweeps from zero, the network on the
  remaining residual (scaled by the exact energy line search), then ``sweeps`` backward sweeps.

Inputs (computed from the matrix, so any 5-point / 7-point system on a square or cubic grid
works, whichever generator or file it came from): per node the ``2 d`` face coefficients of
the stencil, ``w = -A[i, i +- s_k]`` (on the boundary the Dirichlet face gets what the diagonal
holds beyond the interior faces), as ``log w`` minus its mean over the grid, which removes the
``1/h^2`` and any global scale; and the residual scaled to unit RMS. The output scale does not
matter: both flexible methods take the optimal step along ``z``.

Training (:func:`train_preconditioner`): residual-like right-hand sides ``r`` from white to
smooth: white noise coloured by ``lambda^-beta`` in the sine basis of the grid Laplacian
(eigenvalues ``lambda``), ``beta`` uniform in ``smoothness`` (default [0, 1]: white noise to
``Laplace^-1`` noise). The default ``energy`` loss is the energy error left after one exact
line search along ``z``:

    1 - (z.r)^2 / ((z.A z) (r.A^-1 r))   in [0, 1],  0 iff z is parallel to A^-1 r,

the quantity that decides how much one flexible-CG step gains (``r.A^-1 r`` comes from a
sparse direct solve per training vector). ``residual`` is the same with ``||r - c A z||^2``.
"""

from __future__ import annotations

import dataclasses
import math
import time
import weakref
from pathlib import Path
from typing import Any, Literal, Optional

import numpy as np
import scipy.sparse as sp
import torch

from .. import runtime
from ..config import from_dict, to_dict
from ..errors import ConfigError, DataError, ModelError
from ..solvers.linear import SolveResult, register_run_method
from ..runs import register_kind
from ..training.api import register_trainer

KIND = "precond"
#: model config on top of each architecture's defaults (``--set`` overrides): FNO zero-pads the
#: non-periodic grid, U-Net uses no batch statistics (a preconditioner sees single residuals).
MODEL_DEFAULTS: dict[str, dict[str, Any]] = {
    "fno": {"modes": 16, "width": 32, "padding": 8},
    "unet": {"norm": "none", "depth": 4, "width": 16},
    "mgno": {"levels": 5, "channels": 24, "n_layers": 4},
}


# ----------------------------------------------------------------------------- the stencil


def grid_dim(A: sp.spmatrix) -> int:
    """2 for a 5-point, 3 for a 7-point stencil (from the nonzeros per row)."""
    per_row = A.nnz / max(A.shape[0], 1)
    return 2 if per_row <= 5 else 3


def stencil(A: sp.spmatrix, shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """``(diag (*shape), off (2 d, *shape))`` of a 5/7-point matrix on the C-ordered grid ``shape``.

    ``off[2 k]`` holds ``A[i, i + s_k]`` (the next node along axis ``k``), ``off[2 k + 1]``
    ``A[i, i - s_k]``; zero where the neighbour is outside the grid. Raises DataError for any
    other sparsity (another stencil, a periodic wrap, the wrong grid).
    """
    A = sp.coo_matrix(A)
    n = int(np.prod(shape))
    if A.shape != (n, n):
        raise DataError(f"the matrix has {A.shape[0]} unknowns, the grid {'x'.join(map(str, shape))} has {n}")
    strides = [int(np.prod(shape[k + 1:])) for k in range(len(shape))]
    rows, cols, vals = A.row, A.col, A.data
    off = np.zeros((2 * len(shape), n))
    diag = np.zeros(n)
    placed = cols == rows
    diag[rows[placed]] = vals[placed]
    index = np.unravel_index(rows, shape)
    for k, s in enumerate(strides):
        for j, sign in enumerate((1, -1)):
            sel = (cols - rows == sign * s) & ((index[k] + sign >= 0) & (index[k] + sign < shape[k]))
            off[2 * k + j, rows[sel]] = vals[sel]
            placed |= sel
    if not np.all(placed | (vals == 0)):
        raise DataError(
            f"a neural preconditioner needs a {2 * len(shape) + 1}-point stencil on a "
            f"{'x'.join(map(str, shape))} grid; this matrix couples other unknowns (another stencil, "
            "grid or boundary condition)"
        )
    return diag.reshape(shape), off.reshape(2 * len(shape), *shape)


def face_features(diag: np.ndarray, off: np.ndarray) -> np.ndarray:
    """Centred log face coefficients ``(2 d, *shape)`` float32 (see the module docstring)."""
    w = -off.copy()
    missing = off == 0
    remainder = np.clip(diag - w.sum(axis=0), 0.0, None)
    count = missing.sum(axis=0)
    share = np.where(count > 0, remainder / np.maximum(count, 1), 0.0)
    w = np.where(missing, share[None], w)
    positive = w[w > 0]
    floor = positive.min() if positive.size else 1.0
    logw = np.log(np.maximum(w, floor * 1e-3))
    return (logw - logw.mean()).astype(np.float32)


def stencil_apply(diag: torch.Tensor, off: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """``A z`` per sample: ``diag`` ``(B, *S)``, ``off`` ``(B, 2 d, *S)``, ``z`` ``(B, *S)``.

    Off-diagonals are zero where the neighbour is outside the grid, so a periodic roll is exact.
    """
    out = diag * z
    for k in range(z.ndim - 1):
        axis = k + 1
        out = out + off[:, 2 * k] * torch.roll(z, -1, axis) + off[:, 2 * k + 1] * torch.roll(z, 1, axis)
    return out


def energy_loss(diag, off, r, z, r_ainv_r, eps: float = 1e-30) -> torch.Tensor:
    """Mean over the batch of ``1 - (z.r)^2 / ((z.A z)(r.A^-1 r))`` (shapes as :func:`stencil_apply`)."""
    dims = tuple(range(1, z.ndim))
    zr = (z * r).sum(dims)
    zaz = (z * stencil_apply(diag, off, z)).sum(dims)
    return (1 - zr**2 / (zaz.clamp_min(eps) * r_ainv_r)).mean()


def residual_loss(diag, off, r, z, eps: float = 1e-30) -> torch.Tensor:
    """Mean over the batch of ``min_c ||r - c A z||^2 / ||r||^2 = 1 - (Az.r)^2 / (||Az||^2 ||r||^2)``."""
    dims = tuple(range(1, z.ndim))
    az = stencil_apply(diag, off, z)
    return (1 - (az * r).sum(dims) ** 2 / ((az * az).sum(dims).clamp_min(eps) * (r * r).sum(dims))).mean()


# ----------------------------------------------------------------------------- right-hand sides


def laplacian_eigenvalues(shape: tuple[int, ...]) -> np.ndarray:
    """Eigenvalues of the unit-spacing Dirichlet Laplacian on ``shape`` in the DST-I basis."""
    lam = np.zeros(shape)
    for k, n in enumerate(shape):
        j = np.arange(1, n + 1)
        view = [1] * len(shape)
        view[k] = n
        lam = lam + (4 * np.sin(np.pi * j / (2 * (n + 1))) ** 2).reshape(view)
    return lam


def residual_like(rng: np.random.Generator, shape: tuple[int, ...], count: int,
                  smoothness: tuple[float, float] = (0.0, 1.0)) -> np.ndarray:
    """``count`` vectors ``(count, N)`` with unit RMS: sine-basis noise scaled by ``lambda^-beta``."""
    from scipy.fft import idstn

    lam = laplacian_eigenvalues(shape) / (4 * len(shape))  # in (0, 1]
    lo, hi = smoothness
    out = np.empty((count, int(np.prod(shape))))
    for i in range(count):
        beta = rng.uniform(lo, hi)
        coeff = rng.standard_normal(shape) * lam ** (-beta)
        v = idstn(coeff, type=1, norm="ortho").reshape(-1)
        out[i] = v / np.sqrt(np.mean(v * v))
    return out


# ----------------------------------------------------------------------------- training


@dataclasses.dataclass(frozen=True)
class PrecondTrainOptions:
    """Options of :func:`train_preconditioner`.

    epochs, batch_size, lr, weight_decay: Adam with a cosine schedule to ``lr / 100``.
    n_train: coefficient samples taken from the file (all when None); ``val_fraction`` of them
        (the last ones) are held out to report the validation loss.
    rhs_per_system: training right-hand sides drawn per coefficient sample.
    smoothness: range of ``beta`` of the residual-like right-hand sides (0 white, 1 smooth).
    loss: ``energy`` (default) or ``residual`` (see the module docstring).
    seed, device (``auto``/``cpu``/``cuda``), num_threads, checkpoint_every (epochs).
    """

    epochs: int = 50
    batch_size: int = 16
    lr: float = 1e-3
    weight_decay: float = 0.0
    n_train: Optional[int] = None
    val_fraction: float = 0.1
    rhs_per_system: int = 8
    smoothness: tuple[float, float] = (0.0, 1.0)
    loss: Literal["energy", "residual"] = "energy"
    seed: int = 0
    device: str = "auto"
    num_threads: Optional[int] = None
    checkpoint_every: int = 5

    def __post_init__(self):
        for key in ("epochs", "batch_size", "rhs_per_system", "checkpoint_every"):
            if not (isinstance(getattr(self, key), int) and getattr(self, key) >= 1):
                raise ConfigError(f"precond training option {key!r} must be an integer >= 1, got {getattr(self, key)!r}")
        if not self.lr > 0 or self.weight_decay < 0:
            raise ConfigError(f"precond training needs lr > 0 and weight_decay >= 0, got {self.lr}, {self.weight_decay}")
        if not 0 <= self.val_fraction < 1:
            raise ConfigError(f"val_fraction must be in [0, 1), got {self.val_fraction}")
        if self.n_train is not None and self.n_train < 2:
            raise ConfigError(f"n_train must be >= 2 (or null for all samples), got {self.n_train}")
        lo, hi = self.smoothness
        if not 0 <= lo <= hi <= 2:
            raise ConfigError(f"smoothness must be a range [lo, hi] with 0 <= lo <= hi <= 2, got {list(self.smoothness)}")
        if self.loss not in ("energy", "residual"):
            raise ConfigError(f"precond loss must be 'energy' or 'residual', got {self.loss!r}")
        if self.device not in ("auto", "cpu", "cuda"):
            raise ConfigError(f"device must be auto, cpu or cuda, got {self.device!r}")


@dataclasses.dataclass
class _Systems:
    """Training tensors: features ``(S, 2d, *g)``, stencils, and vectors ``r`` with their system."""

    features: torch.Tensor
    diag: torch.Tensor
    off: torch.Tensor
    r: torch.Tensor
    r_ainv_r: torch.Tensor
    system: torch.Tensor

    def to(self, device) -> "_Systems":
        return _Systems(*(t.to(device) for t in dataclasses.astuple(self)))


def _prepare(matrices: list[sp.csr_matrix], shape: tuple[int, ...], opts: PrecondTrainOptions, first: int,
             progress) -> _Systems:
    import scipy.sparse.linalg as spla

    feats, diags, offs, rs, rar, owner = [], [], [], [], [], []
    for i, A in enumerate(matrices):
        diag, off = stencil(A, shape)
        scale = float(diag.mean())  # A / scale keeps float32 tame; the losses are scale invariant
        feats.append(face_features(diag, off))
        diags.append(diag / scale)
        offs.append(off / scale)
        r = residual_like(np.random.default_rng([opts.seed, first + i, 7]), shape, opts.rhs_per_system, opts.smoothness)
        e = spla.splu(sp.csc_matrix(A), permc_spec="MMD_AT_PLUS_A").solve(np.ascontiguousarray(r.T)).T
        rs.append(r.reshape(-1, *shape))
        rar.append(np.sum(r * e, axis=1) * scale)
        owner.append(np.full(len(r), i))
        progress()
    f32 = lambda xs: torch.from_numpy(np.stack(xs).astype(np.float32))  # noqa: E731
    return _Systems(f32(feats), f32(diags), f32(offs), torch.from_numpy(np.concatenate(rs).astype(np.float32)),
                    torch.from_numpy(np.concatenate(rar)), torch.from_numpy(np.concatenate(owner)))


def build_network(model: str | torch.nn.Module, dim: int, model_config: dict | None = None,
                  seed: int = 0) -> torch.nn.Module:
    """The grid operator ``model`` with ``2 dim + 1`` input channels and one output channel
    (a module built by :func:`sciml.operators.create` is checked and returned as given)."""
    from ..operators import base

    if isinstance(model, torch.nn.Module):
        return _checked_network(model, dim, model_config)
    if model not in base.available():
        from ..errors import UnknownNameError

        raise UnknownNameError("model", model, [m for m in base.available() if getattr(base.get(m), "input_kind", "grid") == "grid"])
    cls = base.get(model)
    if getattr(cls, "input_kind", "grid") != "grid":
        raise ConfigError(f"a neural preconditioner needs a grid operator (e.g. fno, mgno, unet); {model!r} takes points")
    fields = {f.name for f in dataclasses.fields(cls.Config)}
    config = {k: v for k, v in MODEL_DEFAULTS.get(model, {}).items() if k in fields}
    config.update({"in_channels": 2 * dim + 1, "out_channels": 1, "dim": dim})
    config.update(model_config or {})
    if config["in_channels"] != 2 * dim + 1 or config["out_channels"] != 1:
        raise ConfigError(f"a {dim}-D neural preconditioner has {2 * dim + 1} input channels and 1 output; drop "
                          "in_channels/out_channels from the model config")
    torch.manual_seed(seed)
    return base.create(model, **config)


def _checked_network(net: torch.nn.Module, dim: int, model_config: dict | None) -> torch.nn.Module:
    if model_config:
        raise ConfigError("model_config applies to a model name; the given network is already built")
    cfg = net.config_dict() if hasattr(net, "config_dict") else {}
    if getattr(net, "input_kind", "grid") != "grid" or not getattr(net, "name", ""):
        raise ConfigError(f"a neural preconditioner needs a registered grid operator (sciml.operators.create), got "
                          f"{getattr(net, 'name', '') or type(net).__name__}")
    if (cfg.get("in_channels"), cfg.get("out_channels")) != (2 * dim + 1, 1):
        raise ConfigError(f"a {dim}-D neural preconditioner has {2 * dim + 1} input channels and 1 output, the given "
                          f"{net.name} has {cfg.get('in_channels')} and {cfg.get('out_channels')}; build it with "
                          f"in_channels={2 * dim + 1}, out_channels=1")
    return net


def _batch_loss(net, data: _Systems, idx: torch.Tensor, loss: str) -> torch.Tensor:
    s = data.system[idx]
    r = data.r[idx]
    z = net(torch.cat([data.features[s], r.unsqueeze(1)], dim=1))[:, 0]
    if loss == "energy":
        return energy_loss(data.diag[s], data.off[s], r, z, data.r_ainv_r[idx].to(z.dtype))
    return residual_loss(data.diag[s], data.off[s], r, z)


@torch.no_grad()
def _mean_loss(net, data: _Systems, loss: str, batch: int) -> float:
    net.eval()
    n = data.r.shape[0]
    total = sum(float(_batch_loss(net, data, torch.arange(i, min(i + batch, n), device=data.r.device), loss))
                * (min(i + batch, n) - i) for i in range(0, n, batch))
    net.train()
    return total / n


def load_matrices(data: str | Path, n: int | None = None, progress: bool = False) -> tuple[list, tuple[int, ...], dict]:
    """The matrices of the first ``n`` samples of a dataset file, their grid shape and the file's info."""
    from ..datasets import system_from_file
    from ..datasets.format import open_dataset

    ds = open_dataset(data)
    total = int(ds.sizes["sample"])
    ds.close()
    n = total if n is None else int(n)
    if n > total:
        raise DataError(f"{data}: asked for {n} coefficient samples but the file holds {total}; lower n_train")
    matrices, shape, info = [], None, {}
    for i in range(n):
        A, _, info = system_from_file(data, i)
        shape = tuple(info["shape"])
        if len(shape) not in (2, 3):
            raise DataError(f"{data}: pde {info['pde']!r} is {len(shape)}-D; neural preconditioners need 2-D or 3-D grids")
        matrices.append(sp.csr_matrix(A))
    return matrices, shape, info


def train_preconditioner(model: str | torch.nn.Module, data: str | Path, out: str | Path, model_config: dict | None = None,
                         progress: bool = True, **options) -> dict:
    """Train the grid operator ``model`` as a preconditioner for the matrices of dataset ``data``.

    ``options`` are :class:`PrecondTrainOptions`. Writes the run directory ``out`` (weights,
    ``run.json``, ``metrics.jsonl``) and returns a summary.
    """
    from ..runs import check_new, save_network, write_metrics

    out = check_new(out)
    opts = from_dict(PrecondTrainOptions, options, "precond training options")
    device = runtime.device(opts.device)
    with runtime.limit_threads(opts.num_threads):
        matrices, shape, info = load_matrices(data, opts.n_train)
        dim = len(shape)
        net = build_network(model, dim, model_config, opts.seed).to(device)
        n_val = int(round(opts.val_fraction * len(matrices)))
        if len(matrices) - n_val < 1:
            raise ConfigError(f"{len(matrices)} samples leave none for training with val_fraction={opts.val_fraction}")
        with runtime.progress(len(matrices), "systems", enabled=progress) as step:
            train = _prepare(matrices[: len(matrices) - n_val], shape, opts, 0, step).to(device)
            val = _prepare(matrices[len(matrices) - n_val:], shape, opts, len(matrices) - n_val, step).to(device) if n_val else None
        n = train.r.shape[0]
        batches = math.ceil(n / opts.batch_size)
        optimiser = torch.optim.Adam(net.parameters(), lr=opts.lr, weight_decay=opts.weight_decay)
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, opts.epochs * batches, eta_min=opts.lr / 100)
        meta_base = {"model": net.name, "dim": dim, "train": to_dict(opts), "data": str(Path(data).resolve()),
                     "pde": info.get("pde"), "shape": list(shape), "parameters": sum(p.numel() for p in net.parameters())}
        rows: list[dict] = []
        t0 = time.perf_counter()
        generator = torch.Generator().manual_seed(opts.seed)
        with runtime.progress(opts.epochs * batches, f"precond {net.name}", enabled=progress,
                              text="loss {task.fields[loss]}", fields={"loss": "-"}) as advance:
            for epoch in range(1, opts.epochs + 1):
                perm = torch.randperm(n, generator=generator).to(device)
                total = 0.0
                for i in range(0, n, opts.batch_size):
                    idx = perm[i: i + opts.batch_size]
                    loss = _batch_loss(net, train, idx, opts.loss)
                    if not torch.isfinite(loss):
                        raise ModelError(f"precond training diverged at epoch {epoch} (loss {float(loss)}); lower lr "
                                         f"(lr={opts.lr:g}); the last checkpoint in {out} is kept")
                    optimiser.zero_grad(set_to_none=True)
                    loss.backward()
                    optimiser.step()
                    schedule.step()
                    total += float(loss.detach()) * idx.numel()
                    advance(loss=f"{float(loss.detach()):.3g}")
                row = {"epoch": epoch, "train_loss": total / n, "lr": optimiser.param_groups[0]["lr"],
                       "seconds": time.perf_counter() - t0}
                if val is not None:
                    row["val_loss"] = _mean_loss(net, val, opts.loss, opts.batch_size)
                rows.append(row)
                write_metrics(out, rows)
                if epoch % opts.checkpoint_every == 0 or epoch == opts.epochs:
                    save_network(out, KIND, net.config_dict(), net,
                                 extra={**meta_base, "epoch": epoch, "train_loss": row["train_loss"],
                                        "val_loss": row.get("val_loss"), "seconds": row["seconds"]})
    last = rows[-1]
    return {"run_dir": str(out), "model": net.name, "epochs": opts.epochs, "train_loss": last["train_loss"],
            "val_loss": last.get("val_loss"), "parameters": meta_base["parameters"], "seconds": last["seconds"],
            "shape": shape, "device": str(device)}


# ----------------------------------------------------------------------------- preconditioners


def load_preconditioner(run_dir: str | Path) -> tuple[torch.nn.Module, dict]:
    """The trained network (eval mode, CPU) and the run's metadata."""
    from ..operators import base
    from ..runs import load_state, read_network

    state, meta = read_network(run_dir, KIND)
    name = meta.get("model")
    if name not in base.available():
        raise ModelError(f"{run_dir}: its run.json names the model {name!r}, which this sciml does not have; retrain the run")
    net = base.create(name, **meta["config"])
    return load_state(net, state, run_dir), meta


register_kind(KIND, load_preconditioner)


#: CUDA graphs of a network's forward pass, per network and grid: (graph, static input, static output)
_GRAPHS: "weakref.WeakKeyDictionary[torch.nn.Module, dict]" = weakref.WeakKeyDictionary()


def torch_csr(A: sp.spmatrix, device: str | torch.device, dtype=torch.float64) -> torch.Tensor:
    """``A`` as a torch sparse CSR tensor on ``device`` (for ``A @ v`` with torch vectors)."""
    import warnings

    A = sp.csr_matrix(A)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
        return torch.sparse_csr_tensor(torch.from_numpy(A.indptr.astype(np.int64)),
                                       torch.from_numpy(A.indices.astype(np.int64)),
                                       torch.from_numpy(A.data.astype(np.float64)), size=A.shape, dtype=dtype,
                                       device=device, check_invariants=False)


class NeuralPreconditioner:
    """``r -> z ~ A^-1 r`` by the trained network; features of ``A`` computed once.

    Takes numpy or torch vectors (torch: float64 on the network's device, returned likewise, no
    host round trip). On a GPU the forward pass is captured once per grid as a CUDA graph
    (``graph=None``: on CUDA devices) and replayed, which removes the launch latency of the
    network's many small kernels; the capture is checked against the eager pass and dropped,
    with a note in ``self.notes``, if they differ by more than 1e-3.
    """

    def __init__(self, net: torch.nn.Module, A: sp.spmatrix, shape: tuple[int, ...], device: str | torch.device = "cpu",
                 graph: Optional[bool] = None):
        self.net = net.to(device).eval()
        self.shape, self.device = tuple(shape), torch.device(device)
        diag, off = stencil(A, self.shape)
        self.features = torch.from_numpy(face_features(diag, off)).unsqueeze(0).to(self.device)
        self.graph = (self.device.type == "cuda") if graph is None else bool(graph)
        self.calls = 0
        self.notes: list[str] = []

    @torch.no_grad()
    def prepare(self) -> None:
        """Capture (or find) the CUDA graph for this grid now, so that a solve's setup holds its cost."""
        if self.graph:
            self._graph_entry()

    @torch.no_grad()
    def _graph_entry(self):
        graphs = _GRAPHS.setdefault(self.net, {})
        key = (self.shape, str(self.device))
        if key not in graphs:
            try:
                graphs[key] = self._capture()
            except RuntimeError as exc:  # an operation that cannot be captured: run eagerly
                self.notes.append(f"CUDA graph capture of the network failed ({str(exc).splitlines()[0]}); not used")
                graphs[key] = None
        entry = graphs[key]
        if entry is None:
            self.graph = False
            return None
        if entry["owner"] is not self:  # another matrix on the same grid: its coefficient features
            entry["input"][:, : self.features.shape[1]].copy_(self.features)
            entry["owner"] = self
        return entry

    def _capture(self):
        c = self.features.shape[1]
        static_in = torch.empty((1, c + 1, *self.shape), device=self.device)
        static_in[:, :c] = self.features
        static_in[:, c:].normal_(generator=torch.Generator(self.device).manual_seed(0))
        eager = self.net(static_in).clone()
        stream = torch.cuda.Stream(self.device)
        stream.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(stream):  # warm-up off the capture stream, as torch.cuda.graph asks
            for _ in range(2):
                self.net(static_in)
        torch.cuda.current_stream(self.device).wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            static_out = self.net(static_in)
        graph.replay()
        err = float(torch.linalg.vector_norm(static_out - eager) / torch.linalg.vector_norm(eager).clamp_min(1e-30))
        if not err <= 1e-3:
            self.notes.append(f"CUDA graph of the network differs from its eager pass ({err:.1e}); not used")
            return None
        return {"graph": graph, "input": static_in, "output": static_out, "owner": self}

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        entry = self._graph_entry() if self.graph else None
        if entry is None:
            return self.net(torch.cat([self.features, x], dim=1))
        entry["input"][:, self.features.shape[1]:].copy_(x)
        entry["graph"].replay()
        return entry["output"].clone()

    @torch.no_grad()
    def __call__(self, r):
        self.calls += 1
        if isinstance(r, torch.Tensor):  # stays on the device, no host synchronisation
            scale = torch.sqrt(torch.mean(r * r)).clamp_min(1e-300)
            x = (r / scale).to(torch.float32).reshape(1, 1, *self.shape)
            return self._forward(x).reshape(-1).to(r.dtype)
        scale = float(np.sqrt(np.mean(r * r)))
        if not scale > 0:
            return np.zeros_like(r)
        x = torch.from_numpy((r / scale).astype(np.float32)).reshape(1, 1, *self.shape).to(self.device)
        return self._forward(x).reshape(-1).double().cpu().numpy()


class HybridPreconditioner:
    """HINTS-style ``r -> z``: ``sweeps`` forward Gauss-Seidel sweeps, a line-searched network
    correction of the remaining residual, ``sweeps`` backward sweeps (all from ``z = 0``).

    Numpy vectors: lexicographic sweeps (pyamg). Torch vectors (``device`` given): red-black
    sweeps on the device (red then black forward, black then red backward), which are exact
    Gauss-Seidel in the red-black order because a 5/7-point stencil couples only the two colours.
    """

    def __init__(self, A: sp.csr_matrix, network, sweeps: int = 2, device: str | torch.device | None = None):
        self.A, self.network, self.sweeps = sp.csr_matrix(A), network, int(sweeps)
        if device is not None:
            shape = network.shape
            self.At = torch_csr(self.A, device)
            self.dinv = torch.from_numpy(1.0 / self.A.diagonal()).to(device)
            red = torch.from_numpy((np.indices(shape).sum(axis=0) % 2 == 0).reshape(-1).astype(np.float64)).to(device)
            self.colours = (red, 1.0 - red)

    def _sweep(self, z: torch.Tensor, r: torch.Tensor, order: tuple[int, int]) -> torch.Tensor:
        for c in order:
            z = z + self.colours[c] * self.dinv * (r - self.At @ z)
        return z

    def __call__(self, r):
        if isinstance(r, torch.Tensor):
            z = torch.zeros_like(r)
            for _ in range(self.sweeps):
                z = self._sweep(z, r, (0, 1))
            rest = r - self.At @ z
            c = self.network(rest)
            Ac = self.At @ c
            cAc = c @ Ac
            ok = torch.isfinite(cAc) & (cAc > 0)  # decided on the device: no host synchronisation
            z = z + torch.where(ok, (c @ rest) / torch.where(ok, cAc, 1.0) * c, 0.0)
            for _ in range(self.sweeps):
                z = self._sweep(z, r, (1, 0))
            return z
        from pyamg.relaxation.relaxation import gauss_seidel

        z = np.zeros_like(r)
        gauss_seidel(self.A, z, r, iterations=self.sweeps, sweep="forward")
        rest = r - self.A @ z
        c = self.network(rest)
        Ac = self.A @ c
        cAc = float(c @ Ac)
        if np.isfinite(cAc) and cAc > 0:
            z += (float(c @ rest) / cAc) * c
        gauss_seidel(self.A, z, r, iterations=self.sweeps, sweep="backward")
        return z


_CACHE: dict[str, tuple[torch.nn.Module, dict]] = {}


def _network_for(A: sp.spmatrix, run: str) -> tuple[NeuralPreconditioner, dict]:
    from .dcdm import grid_shape

    key = str(Path(run).resolve())
    if key not in _CACHE:
        _CACHE[key] = load_preconditioner(run)
    net, meta = _CACHE[key]
    dim = int(meta.get("dim", 2))
    if grid_dim(A) != dim:
        raise DataError(f"{run} was trained on {dim}-D grids; this matrix is {grid_dim(A)}-D")
    shape = grid_shape(A.shape[0], dim)
    return NeuralPreconditioner(net, A, shape, runtime.device("auto")), meta


def neural_solve(A: sp.spmatrix, b: np.ndarray, run: str | Path, method: str = "fcg", tol: float = 1e-8,
                 maxiter: int | None = None, x0: np.ndarray | None = None, fallback: str | None = "amg",
                 sweeps: int = 2, memory: int = 10, restart: int = 30, patience: int = 10,
                 backend: str = "auto") -> SolveResult:
    """Solve ``A x = b`` with the preconditioner trained in ``run``: ``method`` is ``fcg``,
    ``fgmres`` or ``hints`` (FCG with the hybrid preconditioner, ``sweeps`` Gauss-Seidel sweeps
    on each side). ``fallback`` (``amg``, ``ic``, ``sgs``, ``jacobi`` or None) takes over when
    the network stops helping (see :mod:`sciml.solvers.flexible`).

    ``backend``: ``numpy`` runs the Krylov iteration on host vectors (scipy matrix, pyamg
    lexicographic Gauss-Seidel); ``torch`` on torch vectors on the network's device (sparse CSR
    matrix, red-black Gauss-Seidel, CUDA-graph network on a GPU); ``auto`` picks torch when the
    network runs on a GPU, numpy otherwise.
    """
    from ..solvers.flexible import fcg, fgmres

    if method not in ("fcg", "fgmres", "hints"):
        raise ConfigError(f"neural preconditioned method must be fcg, fgmres or hints, got {method!r}")
    if backend not in ("auto", "numpy", "torch"):
        raise ConfigError(f"backend must be auto, numpy or torch, got {backend!r}")
    t0 = time.perf_counter()
    A = sp.csr_matrix(A, dtype=np.float64)
    network, _ = _network_for(A, str(run))
    on_device = backend == "torch" or (backend == "auto" and network.device.type == "cuda")
    label = "the network"
    precondition = network
    if method == "hints":
        precondition = HybridPreconditioner(A, network, sweeps, network.device if on_device else None)
        label = "the hybrid network/Gauss-Seidel preconditioner"
    system, rhs, host = A, b, None
    if on_device:
        system, host = torch_csr(A, network.device), A
        rhs = torch.as_tensor(np.asarray(b, dtype=np.float64), device=network.device)
    network.prepare()
    setup = time.perf_counter() - t0
    name = f"{method}:{run}"
    options = dict(fallback=fallback, patience=patience, name=name, label=label, host=host)
    if method == "fgmres":
        result = fgmres(system, rhs, precondition, tol, maxiter, x0, restart=restart, **options)
    else:
        result = fcg(system, rhs, precondition, tol, maxiter, x0, memory=memory, **options)
    return dataclasses.replace(result, setup_time=setup + result.setup_time, notes=tuple(network.notes) + result.notes)


@register_run_method("fcg")
def solve_fcg(A, b, tol, maxiter, x0, run) -> SolveResult:
    """The ``fcg:RUN`` solve method."""
    return neural_solve(A, b, run, "fcg", tol, maxiter, x0)


@register_run_method("fgmres")
def solve_fgmres(A, b, tol, maxiter, x0, run) -> SolveResult:
    """The ``fgmres:RUN`` solve method."""
    return neural_solve(A, b, run, "fgmres", tol, maxiter, x0)


@register_run_method("hints")
def solve_hints(A, b, tol, maxiter, x0, run) -> SolveResult:
    """The ``hints:RUN`` solve method."""
    return neural_solve(A, b, run, "hints", tol, maxiter, x0)


def _summary(r: dict) -> str:
    val = f" (validation {r['val_loss']:.4g})" if r.get("val_loss") is not None else ""
    return (f"run {r['run_dir']}: {r['model']} preconditioner, {r['epochs']} epochs, {r['parameters']} parameters, "
            f"energy loss {r['train_loss']:.4g}{val}; use it with "
            f"`sciml solve --data FILE --method hints:{r['run_dir']},fcg:{r['run_dir']},pcg-amg`")


@register_trainer(KIND, PrecondTrainOptions, _summary)
def _fit(model, data, out: Path, options: dict, progress: bool, test_data) -> dict:
    """``sciml.training.train(MODEL, task="precond", data=...)``: a grid operator (name or module) as a preconditioner."""
    model = model if model is not None else options.pop("model", None)
    options.pop("model", None)
    if model is None or model == KIND:
        raise ConfigError("name the grid operator to train as a preconditioner, e.g. "
                          "`sciml train fno --task precond --data darcy.h5 --out runs/p`")
    if data is None:
        raise ConfigError("--data is required: a Darcy or ConDiff dataset (.h5) whose matrices the preconditioner learns")
    return train_preconditioner(model, data, out, model_config=options.pop("model_config", None), progress=progress,
                                **options)
