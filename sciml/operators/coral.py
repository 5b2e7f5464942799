"""CORAL: operator learning with neural fields (Serrano, Le Boudec, Kassai Koupai, Wang, Yin,
Vittaut, Gallinari, "Operator Learning with Neural Fields: Tackling PDEs on General Geometries",
NeurIPS 2023).

A point operator that never looks at a grid. Each function is represented by a small latent code
``z`` of a *modulated* neural field: ``v(x) ~ f_theta(x; phi(z))``, a SIREN whose hidden layers
are shifted by ``phi(z) = W z + b`` (a linear hypernetwork, shift-only FiLM modulation). A code is
found by *auto-decoding*: starting from ``z = 0``, a few gradient steps on the reconstruction
error at the points where the function is known (so any number and placement of points works).
The inner step size is meta-learned together with the field (second-order MAML, as "functa",
Dupont et al. 2022). The operator itself is a map between codes, ``z_u = g_psi(z_v)``, a
residual MLP, and the output is decoded at any query points: ``u(x) = f_theta_out(x; phi_out(z_u))``.

Training has two stages (:func:`fit_coral`): first both fields (input and output functions) are
fitted with the meta-learned inner loop; then, fields frozen, the codes of all training pairs are
computed once and the processor is fitted on them (codes z-scored with training statistics,
which the model keeps as buffers).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError, DataError, ModelError
from .base import Operator, register


@dataclasses.dataclass(frozen=True)
class CoralConfig:
    """CORAL architecture; defaults are the paper's (section 4 and appendix).

    Fields ``f(x; z)``: a SIREN with ``depth`` hidden layers of ``width`` units and frequency
    ``w0``, modulated by shifts from a ``latent_dim`` code; ``inner_steps`` auto-decoding steps
    from ``z = 0`` with a learned per-dimension step size initialised at ``inner_lr``. Processor:
    ``processor_depth`` residual SiLU blocks of ``processor_width`` units on the codes.
    ``in_channels``/``out_channels``: channels of the input/output functions; ``coord_dim``:
    dimension of the points (coordinates should span about ``[0, 1]`` or ``[-1, 1]``: SIREN
    frequencies are tuned to that range).
    """

    in_channels: int = 1
    out_channels: int = 1
    coord_dim: int = 2
    latent_dim: int = 128
    width: int = 128
    depth: int = 4
    w0: float = 30.0
    inner_steps: int = 3
    inner_lr: float = 0.01
    processor_width: int = 128
    processor_depth: int = 3

    def __post_init__(self) -> None:
        for key in ("in_channels", "out_channels", "coord_dim", "latent_dim", "width", "depth", "inner_steps",
                    "processor_width", "processor_depth"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"coral {key} must be an integer >= 1, got {value!r}; set a positive value")
        for key in ("w0", "inner_lr"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not (math.isfinite(value) and value > 0):
                raise ConfigError(f"coral {key} must be a finite number > 0, got {value!r}; "
                                  f"the paper uses {'30' if key == 'w0' else '0.01'}")


# ----------------------------------------------------------------------------- neural field


class ModulatedSiren(nn.Module):
    """A SIREN (Sitzmann et al. 2020) with shift modulations from a latent code (CORAL eq. 2).

    ``h_0 = x``; ``h_{l+1} = sin(w0 (W_l h_l + b_l + s_l(z)))`` for the ``depth`` hidden layers,
    ``f(x; z) = W_out h_depth + b_out``, with the shifts ``(s_1 ... s_depth) = A z + c`` from one
    linear map ``hyper`` (``latent_dim -> depth * width``). SIREN initialisation: first layer
    ``U(-1/d, 1/d)`` for ``d`` input coordinates, every later layer ``U(-sqrt(6/fan_in)/w0,
    +sqrt(6/fan_in)/w0)``; biases keep PyTorch's default; the hypernetwork's bias starts at 0, so
    ``z = 0`` is the plain SIREN.

    ``inner_lr``: the meta-learned auto-decoding step size, one per code dimension (Meta-SGD
    style), initialised at the config value; used by :meth:`encode`.
    """

    def __init__(self, coord_dim: int, out_channels: int, latent_dim: int = 128, width: int = 128, depth: int = 4,
                 w0: float = 30.0, inner_lr: float = 0.01, inner_steps: int = 3):
        super().__init__()
        self.coord_dim, self.out_channels, self.latent_dim = coord_dim, out_channels, latent_dim
        self.width, self.depth, self.w0, self.inner_steps = width, depth, float(w0), inner_steps
        self.layers = nn.ModuleList([nn.Linear(coord_dim if i == 0 else width, width) for i in range(depth)])
        self.last = nn.Linear(width, out_channels)
        self.hyper = nn.Linear(latent_dim, depth * width)
        self.inner_lr = nn.Parameter(torch.full((latent_dim,), float(inner_lr)))
        with torch.no_grad():
            for i, layer in enumerate([*self.layers, self.last]):
                fan_in = layer.in_features
                bound = 1.0 / fan_in if i == 0 else math.sqrt(6.0 / fan_in) / self.w0
                layer.weight.uniform_(-bound, bound)
            self.hyper.bias.zero_()

    def shifts(self, codes: torch.Tensor) -> torch.Tensor:
        """The modulations ``(B, latent_dim) -> (B, depth, width)``."""
        return self.hyper(codes).view(codes.shape[0], self.depth, self.width)

    def forward(self, codes: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
        """``f(x; z)``: codes ``(B, latent_dim)``, coords ``(B, N, d)`` -> ``(B, N, out_channels)``."""
        s = self.shifts(codes)
        h = coords
        for i, layer in enumerate(self.layers):
            h = torch.sin(self.w0 * (layer(h) + s[:, i, None, :]))
        return self.last(h)

    def reconstruction_loss(self, codes: torch.Tensor, values: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
        """Per-sample mean squared error ``(B,)`` of ``f(.; z)`` at the given points."""
        return (self(codes, coords) - values).pow(2).flatten(1).mean(1)

    def encode(self, values: torch.Tensor, coords: torch.Tensor, steps: int | None = None,
               create_graph: bool | None = None) -> torch.Tensor:
        """Auto-decode: codes ``(B, latent_dim)`` of functions known at points.

        ``values (B, N, out_channels)`` at ``coords (B, N, d)``. From ``z = 0``, ``steps``
        (default ``inner_steps``) steps ``z <- z - inner_lr * grad_z sum_b mse_b(z)``: the loss
        is the sum over the batch of per-sample mean errors, so each code's step does not depend
        on the batch size or the number of points. ``create_graph`` (default: ``self.training``)
        keeps the graph of the inner steps (second-order MAML): the returned codes are then
        differentiable with respect to the field's weights and ``inner_lr``. Otherwise the codes
        come back detached (first order). Runs under ``torch.no_grad()`` too (gradients with
        respect to the codes are switched on inside).
        """
        steps = self.inner_steps if steps is None else int(steps)
        if create_graph is None:
            create_graph = self.training
        b = values.shape[0]
        z = torch.zeros(b, self.latent_dim, dtype=values.dtype, device=values.device)
        with torch.enable_grad():
            z.requires_grad_(True)
            for _ in range(steps):
                loss = self.reconstruction_loss(z, values, coords).sum()
                (grad,) = torch.autograd.grad(loss, z, create_graph=create_graph)
                z = z - self.inner_lr * grad
                if not create_graph:
                    z = z.detach().requires_grad_(True)
        return z if create_graph else z.detach()


# ----------------------------------------------------------------------------- processor


class ResidualMLP(nn.Module):
    """``g_psi``: ``latent -> width``, ``depth`` blocks ``h + W2 silu(W1 h)`` with SiLU after, ``-> latent``."""

    def __init__(self, latent_dim: int, width: int, depth: int):
        super().__init__()
        self.lift = nn.Linear(latent_dim, width)
        self.blocks = nn.ModuleList([nn.Sequential(nn.Linear(width, width), nn.SiLU(), nn.Linear(width, width))
                                     for _ in range(depth)])
        self.project = nn.Linear(width, latent_dim)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.lift(z)
        for block in self.blocks:
            h = F.silu(h + block(h))
        return self.project(h)


# ----------------------------------------------------------------------------- the model


@register("coral")
class Coral(Operator):
    """CORAL (Serrano et al., NeurIPS 2023): encode, process, decode through neural-field codes.

    ``z_v = encode_in(v at x_in)`` (auto-decoding with ``inr_in``), ``z_u = g(z_v)`` (the
    processor on z-scored codes), ``u(x_out) = inr_out(x_out; z_u)``. Point operator:
    ``forward(v: (B, N_in, C_in), x_in: (B, N_in, d), x_out: (B, N_out, d)) -> (B, N_out, C_out)``;
    input and output points are free (any number, any placement, per sample).

    In training mode the encoding keeps the inner loop's graph (second order); in eval mode it is
    first order and the codes are detached. Train with :func:`fit_coral` (two stages, as the
    paper); the values should be normalised by the caller (about zero mean, unit scale).

    ``inr_out.inner_lr`` is used only when encoding *output* functions (stage 1 of training), so a
    plain ``forward`` gives it no gradient; it is listed in ``forward_unused_parameters``.
    """

    Config = CoralConfig
    input_kind = "points"
    resolution_independent = True
    forward_unused_parameters: tuple[str, ...] = ("inr_out.inner_lr",)

    def __init__(self, config: CoralConfig):
        super().__init__(config)
        c = config
        field = dict(latent_dim=c.latent_dim, width=c.width, depth=c.depth, w0=c.w0, inner_lr=c.inner_lr,
                     inner_steps=c.inner_steps)
        self.inr_in = ModulatedSiren(c.coord_dim, c.in_channels, **field)
        self.inr_out = ModulatedSiren(c.coord_dim, c.out_channels, **field)
        self.processor = ResidualMLP(c.latent_dim, c.processor_width, c.processor_depth)
        # z-score statistics of the training codes (set by fit_coral; identity until then)
        for name in ("code_mean_in", "code_mean_out"):
            self.register_buffer(name, torch.zeros(c.latent_dim))
        for name in ("code_std_in", "code_std_out"):
            self.register_buffer(name, torch.ones(c.latent_dim))

    @classmethod
    def example_configs(cls) -> list[CoralConfig]:
        return [
            CoralConfig(latent_dim=8, width=16, depth=2, inner_steps=2, processor_width=16, processor_depth=1),
            CoralConfig(in_channels=2, out_channels=3, coord_dim=1, latent_dim=6, width=12, depth=3, inner_steps=1,
                        processor_width=8, processor_depth=2),
        ]

    def example_input(self, batch: int = 2) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        c = self.config
        x_in = torch.rand(batch, 20, c.coord_dim)
        return torch.randn(batch, 20, c.in_channels), x_in, torch.rand(batch, 9, c.coord_dim)

    def encode(self, v: torch.Tensor, x_in: torch.Tensor, create_graph: bool | None = None) -> torch.Tensor:
        """Codes ``(B, latent_dim)`` of the input functions (see :meth:`ModulatedSiren.encode`)."""
        return self.inr_in.encode(v, x_in, create_graph=create_graph)

    def process(self, z_in: torch.Tensor) -> torch.Tensor:
        """Input codes to output codes through the processor, in z-scored code space."""
        h = self.processor((z_in - self.code_mean_in) / self.code_std_in)
        return h * self.code_std_out + self.code_mean_out

    def decode(self, z_out: torch.Tensor, x_out: torch.Tensor) -> torch.Tensor:
        """Output field at ``x_out (B, N_out, d)`` -> ``(B, N_out, out_channels)``."""
        return self.inr_out(z_out, x_out)

    def forward(self, v: torch.Tensor, x_in: torch.Tensor, x_out: torch.Tensor) -> torch.Tensor:
        """``(B, N_in, C_in), (B, N_in, d), (B, N_out, d) -> (B, N_out, C_out)``."""
        self._check(v, x_in, x_out)
        return self.decode(self.process(self.encode(v, x_in)), x_out)

    def _check(self, v: torch.Tensor, x_in: torch.Tensor, x_out: torch.Tensor) -> None:
        c = self.config
        if v.ndim != 3 or v.shape[2] != c.in_channels or v.shape[1] < 1:
            raise ModelError(f"coral expects values (batch, n_points >= 1, in_channels={c.in_channels}), "
                             f"got shape {tuple(v.shape)}; check in_channels")
        b, n_in = v.shape[:2]
        if x_in.ndim != 3 or tuple(x_in.shape) != (b, n_in, c.coord_dim):
            raise ModelError(f"coral expects x_in of shape (batch={b}, n_points={n_in}, coord_dim={c.coord_dim}) "
                             f"to match the values, got {tuple(x_in.shape)}")
        if x_out.ndim != 3 or x_out.shape[0] != b or x_out.shape[2] != c.coord_dim:
            raise ModelError(f"coral expects x_out of shape (batch={b}, n_queries, coord_dim={c.coord_dim}), "
                             f"got {tuple(x_out.shape)}")


# ----------------------------------------------------------------------------- training


def _as_samples(values: torch.Tensor, coords: torch.Tensor, channels: int, coord_dim: int,
                name: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Check ``values (S, N, C)`` and ``coords (S, N, d)`` or shared ``(N, d)``; return both 3-D."""
    if values.ndim != 3 or values.shape[2] != channels or values.shape[1] < 1:
        raise DataError(f"fit_coral: {name} values must be (n_samples, n_points, {channels}), got "
                        f"{tuple(values.shape)}; reshape them or fix the model's channels")
    if coords.ndim == 2:
        coords = coords.unsqueeze(0).expand(values.shape[0], -1, -1)
    if coords.ndim != 3 or tuple(coords.shape) != (*values.shape[:2], coord_dim):
        raise DataError(f"fit_coral: {name} coords must be (n_samples, n_points, {coord_dim}) or "
                        f"(n_points, {coord_dim}) matching values {tuple(values.shape)}, got {tuple(coords.shape)}")
    return values, coords


def fit_coral(
    model: Coral,
    v_in: torch.Tensor,
    x_in: torch.Tensor,
    v_out: torch.Tensor,
    x_out: torch.Tensor,
    *,
    inr_epochs: int,
    processor_epochs: int,
    batch_size: int = 32,
    lr_inr: float = 1e-4,
    lr_code: float = 1e-4,
    lr_processor: float = 1e-3,
    weight_decay: float = 0.0,
    seed: int = 0,
    progress: Callable[[str, int, float], None] | None = None,
) -> dict[str, list[float]]:
    """Train a :class:`Coral` in the paper's two stages, in place; returns the losses per epoch.

    Data: ``v_in (S, N_in, C_in)`` at ``x_in (S, N_in, d)`` (or ``(N_in, d)`` shared by all
    samples), ``v_out (S, N_out, C_out)`` at ``x_out``; the points may differ per sample and
    between input and output. Values are used as given: normalise them first (about zero mean and
    unit scale per channel; SIREN outputs start near 0 at scale ~1) and undo that on predictions.

    Stage 1 (``inr_epochs`` epochs): both fields, each on its own functions, minimise the MSE of
    the reconstruction after the inner loop (second order, through the inner steps): AdamW with
    ``lr_inr`` (and ``weight_decay``) on the SIREN and hypernetwork weights, Adam with ``lr_code``
    on the two learned inner step sizes.
    Stage 2 (``processor_epochs`` epochs): fields frozen, the codes of every training pair are
    computed once (first order), their per-dimension mean and std stored in the model's buffers,
    and the processor fitted by Adam (``lr_processor``) on the MSE between processed z-scored input
    codes and z-scored output codes.

    ``batch_size`` samples per step, shuffled per epoch by a generator seeded with ``seed``.
    ``progress(stage, epoch, loss)`` is called after each epoch with stage ``"inr"`` (loss: the
    sum of both fields' mean reconstruction MSE) or ``"processor"``. Returns
    ``{"inr_in": [...], "inr_out": [...], "processor": [...]}`` (epoch means). Leaves the model
    in eval mode.
    """
    c = model.config
    for key, value in (("inr_epochs", inr_epochs), ("processor_epochs", processor_epochs)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ConfigError(f"fit_coral {key} must be an integer >= 0, got {value!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"fit_coral batch_size must be an integer >= 1, got {batch_size!r}")
    for key, value in (("lr_inr", lr_inr), ("lr_code", lr_code), ("lr_processor", lr_processor)):
        if not (math.isfinite(value) and value > 0):
            raise ConfigError(f"fit_coral {key} must be a finite number > 0, got {value!r}")
    v_in, x_in = _as_samples(v_in, x_in, c.in_channels, c.coord_dim, "input")
    v_out, x_out = _as_samples(v_out, x_out, c.out_channels, c.coord_dim, "output")
    if v_in.shape[0] != v_out.shape[0]:
        raise DataError(f"fit_coral needs as many input as output samples, got {v_in.shape[0]} and "
                        f"{v_out.shape[0]}; pair them up")
    device = next(model.parameters()).device
    n = v_in.shape[0]
    generator = torch.Generator().manual_seed(seed)
    history: dict[str, list[float]] = {"inr_in": [], "inr_out": [], "processor": []}

    def batches():
        order = torch.randperm(n, generator=generator)
        for start in range(0, n, batch_size):
            yield order[start : start + batch_size]

    def to(t: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        return t[idx].to(device)

    # ---- stage 1: the two neural fields, meta-learned auto-decoding
    fields = (model.inr_in, model.inr_out)
    weights = [p for f in fields for name, p in f.named_parameters() if name != "inner_lr"]
    opt_inr = torch.optim.AdamW(weights, lr=lr_inr, weight_decay=weight_decay)
    opt_step = torch.optim.Adam([f.inner_lr for f in fields], lr=lr_code)
    model.train()
    for epoch in range(inr_epochs):
        sums, count = [0.0, 0.0], 0
        for idx in batches():
            opt_inr.zero_grad(set_to_none=True)
            opt_step.zero_grad(set_to_none=True)
            losses = []
            for field, values, coords in ((model.inr_in, v_in, x_in), (model.inr_out, v_out, x_out)):
                vb, xb = to(values, idx), to(coords, idx)
                z = field.encode(vb, xb, create_graph=True)
                losses.append(field.reconstruction_loss(z, vb, xb).mean())
            (losses[0] + losses[1]).backward()
            opt_inr.step()
            opt_step.step()
            for k in range(2):
                sums[k] += losses[k].item() * len(idx)
            count += len(idx)
        history["inr_in"].append(sums[0] / count)
        history["inr_out"].append(sums[1] / count)
        if progress is not None:
            progress("inr", epoch, (sums[0] + sums[1]) / count)

    # ---- stage 2: the processor on frozen codes
    model.eval()
    if processor_epochs > 0:
        z_in, z_out = [], []
        for start in range(0, n, batch_size):
            idx = torch.arange(start, min(start + batch_size, n))
            z_in.append(model.inr_in.encode(to(v_in, idx), to(x_in, idx), create_graph=False))
            z_out.append(model.inr_out.encode(to(v_out, idx), to(x_out, idx), create_graph=False))
        z_in, z_out = torch.cat(z_in), torch.cat(z_out)
        with torch.no_grad():
            for tag, z in (("in", z_in), ("out", z_out)):
                getattr(model, f"code_mean_{tag}").copy_(z.mean(0))
                std = z.std(0, unbiased=False) if n > 1 else torch.ones_like(z[0])
                getattr(model, f"code_std_{tag}").copy_(std.clamp_min(1e-6))
        target = (z_out - model.code_mean_out) / model.code_std_out
        source = (z_in - model.code_mean_in) / model.code_std_in
        opt = torch.optim.Adam(model.processor.parameters(), lr=lr_processor)
        for epoch in range(processor_epochs):
            total = 0.0
            for idx in batches():
                idx = idx.to(device)
                opt.zero_grad(set_to_none=True)
                loss = F.mse_loss(model.processor(source[idx]), target[idx])
                loss.backward()
                opt.step()
                total += loss.item() * len(idx)
            history["processor"].append(total / n)
            if progress is not None:
                progress("processor", epoch, total / n)
    return history
