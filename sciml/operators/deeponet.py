"""DeepONet (Lu et al., "Learning nonlinear operators via DeepONet", Nat. Mach. Intell. 2021).

A thin wrapper of DeepXDE's ``DeepONetCartesianProd`` (PyTorch backend): the networks, their
initialisation and the multi-output strategies are DeepXDE's; this module adapts shapes to the
sciml point-operator contract and validates them.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

import torch

from ..errors import ConfigError, ModelError
from ..runtime import deepxde_nn
from .base import Operator, register

_ACTIVATIONS = ("relu", "tanh", "gelu", "elu", "selu", "sigmoid", "silu", "sin")
_STRATEGIES = ("independent", "split_both", "split_branch", "split_trunk")


@dataclasses.dataclass(frozen=True)
class DeepONetConfig:
    """DeepONet architecture; layer widths exclude the input layer (it is derived).

    Branch net: ``n_sensors * in_channels -> *branch``; trunk net: ``coord_dim -> *trunk``
    (DeepXDE applies the activation to the trunk output as well). With ``out_channels > 1`` the
    DeepXDE ``multi_output`` strategy applies: ``independent`` (default, as DeepXDE's: one
    branch/trunk pair per output, for outputs that are unrelated fields), or ``split_both``,
    ``split_branch``, ``split_trunk`` which share nets and split their last layer (Lu et al.,
    CMAME 2022, sec. 3.1.6). ``initializer`` is a DeepXDE initializer name.
    """

    n_sensors: int | None = None
    in_channels: int = 1
    out_channels: int = 1
    coord_dim: int = 2
    branch: tuple[int, ...] = (128, 128, 128)
    trunk: tuple[int, ...] = (128, 128, 128)
    activation: Literal["relu", "tanh", "gelu", "elu", "selu", "sigmoid", "silu", "sin"] = "relu"
    initializer: Literal[
        "Glorot normal", "Glorot uniform", "He normal", "He uniform", "LeCun normal", "LeCun uniform"
    ] = "Glorot normal"
    multi_output: Literal["independent", "split_both", "split_branch", "split_trunk"] = "independent"

    def __post_init__(self) -> None:
        if self.n_sensors is None or self.n_sensors < 1:
            raise ConfigError(
                f"deeponet needs n_sensors >= 1 (input points per sample, e.g. 7225 for an 85x85 grid), "
                f"got {self.n_sensors}; set n_sensors (training derives it from the data)"
            )
        for key in ("in_channels", "out_channels", "coord_dim"):
            if getattr(self, key) < 1:
                raise ConfigError(f"deeponet {key} must be >= 1, got {getattr(self, key)}")
        object.__setattr__(self, "branch", tuple(int(w) for w in self.branch))
        object.__setattr__(self, "trunk", tuple(int(w) for w in self.trunk))
        if not self.branch or not self.trunk or min(self.branch + self.trunk) < 1:
            raise ConfigError(
                f"deeponet branch and trunk need >= 1 layer of width >= 1, "
                f"got {list(self.branch)}, {list(self.trunk)}"
            )
        if self.activation not in _ACTIVATIONS:
            raise ConfigError(f"deeponet activation must be one of {list(_ACTIVATIONS)}, got {self.activation!r}")
        if self.multi_output not in _STRATEGIES:
            raise ConfigError(f"deeponet multi_output must be one of {list(_STRATEGIES)}, got {self.multi_output!r}")
        self._check_widths()

    def _check_widths(self) -> None:
        b, t, k = self.branch[-1], self.trunk[-1], self.out_channels
        strategy = self.multi_output if k > 1 else "independent"
        want = {
            "independent": (b == t, "the last branch and trunk widths must be equal"),
            "split_both": (
                b == t and b % k == 0,
                f"the last branch and trunk widths must be equal and divisible by out_channels={k}",
            ),
            "split_branch": (b == t * k, f"the last branch width must be out_channels={k} times the last trunk width"),
            "split_trunk": (t == b * k, f"the last trunk width must be out_channels={k} times the last branch width"),
        }
        ok, rule = want[strategy]
        if not ok:
            raise ConfigError(f"deeponet ({strategy}): {rule}, got branch {b} and trunk {t}; change branch or trunk")


@register("deeponet")
class DeepONet(Operator):
    """Unstacked DeepONet, ``G(v)(y) = sum_k b_k(v(x_1..x_m)) t_k(y) + b_0`` (Lu et al. 2021).

    Point operator: ``forward(v: (B, N_in, C_in), x_in: (B, N_in, d), x_out: (B, N_out, d))
    -> (B, N_out, C_out)``. The branch sees the values at ``n_sensors`` fixed sensors, flattened
    point-major (``v[b].reshape(-1)``); ``x_in`` is only checked for shape, the sensors must be
    the same points (in the same order) as in training. The trunk evaluates the query points,
    which are shared by the batch (DeepXDE's Cartesian-product format).
    """

    Config = DeepONetConfig
    input_kind = "points"
    resolution_independent = False

    def __init__(self, config: DeepONetConfig):
        super().__init__(config)
        c = config
        self.net = deepxde_nn().DeepONetCartesianProd(
            [c.n_sensors * c.in_channels, *c.branch],
            [c.coord_dim, *c.trunk],
            c.activation,
            c.initializer,
            num_outputs=c.out_channels,
            multi_output_strategy=c.multi_output if c.out_channels > 1 else None,
        )

    @classmethod
    def example_configs(cls) -> list[DeepONetConfig]:
        return [
            DeepONetConfig(n_sensors=12, coord_dim=2, branch=(16, 16), trunk=(16, 16)),
            DeepONetConfig(n_sensors=10, in_channels=2, out_channels=2, coord_dim=1, branch=(12, 8), trunk=(8,),
                           activation="tanh", multi_output="split_both"),
            DeepONetConfig(n_sensors=6, out_channels=2, coord_dim=3, branch=(8,), trunk=(8,), activation="tanh"),
        ]

    def example_input(self, batch: int = 2) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        c = self.config
        x_in = torch.rand(c.n_sensors, c.coord_dim).expand(batch, -1, -1)
        x_out = torch.rand(7, c.coord_dim).expand(batch, -1, -1)
        return torch.randn(batch, c.n_sensors, c.in_channels), x_in, x_out

    def forward(self, v: torch.Tensor, x_in: torch.Tensor, x_out: torch.Tensor) -> torch.Tensor:
        """``(B, N_in, C_in), (B, N_in, d), (B, N_out, d) -> (B, N_out, C_out)``."""
        c = self.config
        b = v.shape[0]
        if v.ndim != 3 or v.shape[1:] != (c.n_sensors, c.in_channels):
            raise ModelError(
                f"deeponet expects values (batch, {c.n_sensors}, {c.in_channels}) at its n_sensors fixed sensors, "
                f"got shape {tuple(v.shape)}; give the sensor values it was built for"
            )
        for name, pts in (("x_in", x_in), ("x_out", x_out)):
            if pts.ndim != 3 or pts.shape[0] != b or pts.shape[2] != c.coord_dim:
                raise ModelError(
                    f"deeponet expects {name} of shape (batch={b}, n_points, coord_dim={c.coord_dim}), "
                    f"got {tuple(pts.shape)}"
                )
        if x_in.shape[1] != c.n_sensors:
            raise ModelError(f"deeponet has {c.n_sensors} sensors but x_in holds {x_in.shape[1]} points")
        query = x_out[0]
        if b > 1 and not torch.equal(x_out, query.expand_as(x_out)):
            raise ModelError(
                "deeponet (Cartesian product) needs the same query points x_out for every sample in the batch; "
                "batch samples by query set or evaluate them one at a time"
            )
        y = self.net((v.reshape(b, -1), query))
        return y.unsqueeze(-1) if y.ndim == 2 else y
