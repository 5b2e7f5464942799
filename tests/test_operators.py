"""The whole model registry x example configs: contract, gradients, save/load, rebuild; presets,
names and config errors; the DeepONet wrapper and the grid adapter."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

import sciml

from sciml.errors import CheckpointError, ConfigError, ModelError, UnknownNameError
from sciml.operators import (
    PointsOnGrid,
    as_grid_model,
    available,
    create,
    get,
    load_safetensors_state,
    presets,
    save_safetensors_state,
    state_to_safetensors,
)

CASES = [(name, i) for name in available() for i in range(len(get(name).example_configs()))]
IDS = [f"{name}-{i}" for name, i in CASES]


def build(name: str, i: int, seed: int = 0):
    torch.manual_seed(seed)
    cls = get(name)
    model = cls(cls.example_configs()[i])
    torch.manual_seed(seed + 100)
    return model, model.example_input(batch=3)


def expected_shape(model, inputs) -> tuple[int, ...]:
    c = model.config
    if model.input_kind == "grid":
        return (inputs[0].shape[0], c.out_channels, *inputs[0].shape[2:])
    return (inputs[2].shape[0], inputs[2].shape[1], c.out_channels)


def test_registry_holds_the_first_models():
    assert {"fno", "deeponet"} <= set(available())
    assert not set(available()) & set(presets.presets())  # available() lists models only


@pytest.mark.parametrize("name, i", CASES, ids=IDS)
def test_output_shape_and_finite(name, i):
    model, inputs = build(name, i)
    assert model.input_kind in ("grid", "points")
    out = model(*inputs)
    assert out.shape == expected_shape(model, inputs)
    assert torch.isfinite(out).all()
    assert out.std() > 0  # not a constant map


@pytest.mark.parametrize("name, i", CASES, ids=IDS)
def test_every_parameter_gets_a_gradient(name, i):
    model, inputs = build(name, i)
    out = model(*inputs)
    (out * torch.randn_like(out)).sum().backward()
    unused = getattr(model, "forward_unused_parameters", ())  # e.g. CORAL's output-encoding step size
    for pname, p in model.named_parameters():
        if pname in unused:
            continue
        assert p.grad is not None, f"{pname} got no gradient"
        assert p.grad.abs().sum() > 0, f"{pname} got a zero gradient"


@pytest.mark.parametrize("name, i", CASES, ids=IDS)
def test_safetensors_round_trip_gives_identical_outputs(name, i, tmp_path):
    model, inputs = build(name, i, seed=0)
    other, _ = build(name, i, seed=1)
    model.eval(), other.eval()
    with torch.no_grad():
        want, before = model(*inputs), other(*inputs)
    assert not torch.equal(want, before)
    save_safetensors_state(model, tmp_path / "m.safetensors")
    load_safetensors_state(other, tmp_path / "m.safetensors")
    with torch.no_grad():
        assert torch.equal(other(*inputs), want)
    # the plain state_dict is storable as it is (no complex or shared tensors)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp_path / "plain.safetensors"))
    assert set(load_file(str(tmp_path / "plain.safetensors"))) == set(model.state_dict())


@pytest.mark.parametrize("name, i", CASES, ids=IDS)
def test_rebuild_from_config_dict_alone(name, i):
    model, _ = build(name, i)
    config = json.loads(json.dumps(model.config_dict()))  # what model.json holds
    rebuilt = get(name).from_config(config)
    assert rebuilt.config == model.config
    assert {k: v.shape for k, v in rebuilt.state_dict().items()} == {k: v.shape for k, v in model.state_dict().items()}
    assert create(name, **config).config == model.config


def test_unknown_name_lists_models_and_presets():
    with pytest.raises(UnknownNameError) as info:
        create("fnoo")
    message = str(info.value)
    assert "'fnoo'" in message
    for valid in ("fno", "deeponet", "fno-darcy-paper"):
        assert valid in message
    with pytest.raises(UnknownNameError, match="valid models are: coral, deeponet, fno"):
        get("fno-darcy-paper")  # get() is for model classes only


@pytest.mark.parametrize(
    "name, config",
    [("fno", {"widht": 3}), ("deeponet", {"n_sensors": 4, "brnach": 3}), ("fno-darcy-paper", {"mode": 3})],
)
def test_unknown_config_key_is_named(name, config):
    bad = [k for k in config if k != "n_sensors"][0]
    with pytest.raises(ConfigError, match=f"unknown key '{bad}'"):
        create(name, **config)


def test_create_passes_a_model_through_but_not_with_keywords():
    model = create("fno", modes=(2,), width=2, n_layers=1, projection=2)
    assert create(model) is model
    with pytest.raises(ConfigError, match="already built"):
        create(model, width=4)


# ----------------------------------------------------------------------------- presets


def test_paper_presets_are_frozen():
    # a preset that a published number is measured with must never change (add a new name instead)
    assert presets.resolve("fno-darcy-paper") == (
        "fno",
        {"in_channels": 1, "out_channels": 1, "modes": (12, 12), "width": 32, "n_layers": 4, "projection": 128,
         "add_grid": True, "padding": 0, "activation": "gelu"},
    )
    assert presets.resolve("fno-burgers-paper")[1]["modes"] == (16,)
    assert presets.resolve("fno-burgers-paper")[1]["width"] == 64
    assert presets.resolve("deeponet-antiderivative")[1]["branch"] == (40, 40)
    mgno = presets.resolve("mgno-darcy-paper")[1]
    assert (mgno["channels"], mgno["n_layers"], mgno["levels"], mgno["padding_mode"]) == (24, 5, 6, "zeros")
    lsm = presets.resolve("lsm-darcy-paper")[1]
    assert (lsm["d_model"], lsm["num_token"], lsm["num_basis"], lsm["heads"], lsm["patch_size"]) == (64, 4, 12, 8, (6, 6))


def test_preset_overrides_and_resolution():
    model = create("fno-burgers-paper", width=8, projection=16)
    assert (model.config.dim, model.config.modes, model.config.width, model.config.n_layers) == (1, (16,), 8, 4)
    assert presets.resolve("fno") == ("fno", {})
    name, config = presets.resolve("fno-darcy-paper")
    config["width"] = 1  # callers get a copy
    assert presets.resolve("fno-darcy-paper")[1]["width"] == 32
    for preset in presets.presets():
        model_name, _ = presets.resolve(preset)
        assert model_name in available()
    assert create("deeponet-darcy", n_sensors=9).config.trunk == (128, 128, 128, 128)


# ----------------------------------------------------------------------------- safetensors helpers


class _Complex(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.randn(3, 2, dtype=torch.complex64))
        self.register_buffer("scale", torch.tensor([1.5]))


def test_complex_weights_are_stored_as_real_views(tmp_path):
    model = _Complex()
    tensors = state_to_safetensors(model)
    assert set(tensors) == {"w.__complex__", "scale"}
    assert tensors["w.__complex__"].dtype == torch.float32 and tensors["w.__complex__"].shape == (3, 2, 2)
    save_safetensors_state(model, tmp_path / "c.safetensors")
    other = _Complex()
    load_safetensors_state(other, tmp_path / "c.safetensors")
    assert torch.equal(other.w, model.w)


def test_loading_other_architecture_raises_one_clear_error(tmp_path):
    save_safetensors_state(create("fno", modes=(2,), width=2, n_layers=1, projection=2), tmp_path / "a.safetensors")
    with pytest.raises(CheckpointError, match="of shape .* this model needs"):
        load_safetensors_state(create("fno", modes=(2,), width=3, n_layers=1, projection=2), tmp_path / "a.safetensors")
    with pytest.raises(CheckpointError, match="lacks weight 'spectral.1.weight'"):
        load_safetensors_state(create("fno", modes=(2,), width=2, n_layers=2, projection=2), tmp_path / "a.safetensors")
    with pytest.raises(CheckpointError, match="not found"):
        load_safetensors_state(_Complex(), tmp_path / "missing.safetensors")


# ----------------------------------------------------------------------------- DeepONet


def _deeponet(**kw):
    torch.manual_seed(0)
    return create("deeponet", **{"n_sensors": 5, "coord_dim": 1, "branch": (8,), "trunk": (8,), **kw})


def test_deeponet_is_branch_dot_trunk_plus_bias():
    # G(v)(y) = sum_k b_k(v) t_k(y) + b0 with DeepXDE's nets (trunk output activated too)
    model = _deeponet(activation="tanh")
    v, y = torch.randn(4, 5, 1), torch.rand(6, 1)
    out = model(v, torch.rand(5, 1).expand(4, -1, -1), y.expand(4, -1, -1))
    net = model.net
    branch = net.branch.linears[0](v.reshape(4, 5))
    trunk = torch.tanh(net.trunk.linears[0](y))
    assert torch.allclose(out[..., 0], branch @ trunk.T + net.b[0], atol=1e-6)


def test_deeponet_needs_shared_query_points_and_its_sensor_count():
    model = _deeponet()
    v, x_in = torch.randn(2, 5, 1), torch.rand(2, 5, 1)
    with pytest.raises(ModelError, match="same query points"):
        model(v, x_in, torch.rand(2, 3, 1))
    with pytest.raises(ModelError, match=r"expects values \(batch, 5, 1\)"):
        model(torch.randn(2, 4, 1), x_in[:, :4], torch.rand(3, 1).expand(2, -1, -1))
    with pytest.raises(ModelError, match="coord_dim=1"):
        model(v, x_in, torch.rand(3, 2).expand(2, -1, -1))


def test_deeponet_config_errors():
    with pytest.raises(ConfigError, match="needs n_sensors"):
        create("deeponet")
    with pytest.raises(ConfigError, match="last branch and trunk widths must be equal"):
        create("deeponet", n_sensors=3, branch=(8,), trunk=(4,))
    with pytest.raises(ConfigError, match="divisible by out_channels=3"):
        create("deeponet", n_sensors=3, out_channels=3, branch=(8,), trunk=(8,), multi_output="split_both")
    with pytest.raises(ConfigError, match="multi_output"):
        create("deeponet", n_sensors=3, multi_output="shared")


def test_deepxde_import_is_silent_forces_pytorch_and_writes_no_config(tmp_path):
    code = (
        "import os, torch\n"
        "from sciml.operators import create\n"
        "m = create('deeponet', n_sensors=3, coord_dim=1, branch=(4,), trunk=(4,))\n"
        "import deepxde.backend as b\n"
        "print(os.environ['DDE_BACKEND'], b.backend_name, torch.get_default_device())\n"
    )
    root = str(Path(sciml.__file__).resolve().parents[1])
    env = {**os.environ, "HOME": str(tmp_path), "DDE_BACKEND": "tensorflow", "PYTHONPATH": root}
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.split() == ["pytorch", "pytorch", "cpu"]
    assert res.stderr == ""  # no "Using backend" banner
    assert not (tmp_path / ".deepxde").exists()


# ----------------------------------------------------------------------------- grid adapter


class _Probe(torch.nn.Module):
    """A point operator returning the input value and the query coordinates at each point."""

    input_kind = "points"

    def forward(self, v, x_in, x_out):
        assert torch.equal(x_in, x_out)
        return torch.cat([v, x_out], -1)


def test_points_on_grid_keeps_the_grid_order():
    x = torch.randn(2, 1, 3, 4)
    out = PointsOnGrid(_Probe())(x)
    assert out.shape == (2, 3, 3, 4)
    assert torch.equal(out[:, 0], x[:, 0])
    assert torch.allclose(out[0, 1], torch.tensor([0.0, 0.5, 1.0])[:, None].expand(3, 4))
    assert torch.allclose(out[0, 2], torch.linspace(0, 1, 4)[None, :].expand(3, 4))


def test_as_grid_model_wraps_point_operators_only():
    fno = create("fno", modes=(2, 2), width=2, n_layers=1, projection=2)
    assert as_grid_model(fno) is fno
    deeponet = create("deeponet", n_sensors=12, coord_dim=2, branch=(8,), trunk=(8,), out_channels=2)
    grid_model = as_grid_model(deeponet)
    assert isinstance(grid_model, PointsOnGrid)
    assert grid_model(torch.randn(3, 1, 3, 4)).shape == (3, 2, 3, 4)
    with pytest.raises(ModelError, match="wraps point operators"):
        PointsOnGrid(fno)
