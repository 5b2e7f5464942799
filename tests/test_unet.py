"""U-Net: the padding rule, periodic shift equivariance, the bias-only response to a zero input
checked by hand, positive homogeneity, the ConDiff parameter count, and a small Darcy training
run evaluated at another resolution."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from sciml import datasets, evaluation, training
from sciml.errors import ConfigError, ModelError
from sciml.operators import create
from sciml.operators.unet import UNet, UNetConfig, pad_amounts, pad_to_multiple


pytestmark = pytest.mark.usefixtures("one_thread")


def _unet(**kw) -> UNet:
    torch.manual_seed(0)
    return UNet(UNetConfig(**{"width": 4, "depth": 2, **kw})).double().eval()


# ----------------------------------------------------------------------------- padding


@pytest.mark.parametrize("depth", [1, 2, 3])
def test_padding_goes_to_the_next_multiple_of_two_to_the_depth(depth):
    m = 2**depth
    for n in range(5, 71):
        before, after = pad_amounts(n, m)
        padded = n + before + after
        assert padded % m == 0 and n <= padded < n + m
        assert 0 <= after - before <= 1


@pytest.mark.parametrize("mode, numpy_mode", [("replicate", "edge"), ("reflect", "reflect"), ("circular", "wrap"),
                                              ("zeros", "constant")])
def test_pad_modes_match_numpy_pad_even_beyond_the_axis_length(mode, numpy_mode):
    x = torch.randn(2, 3, 5, 3, dtype=torch.float64)
    padded, crop = pad_to_multiple(x, 16, mode)  # 5 -> 16 and 3 -> 16: pads longer than the axes
    want = np.pad(x.numpy(), [(0, 0), (0, 0), pad_amounts(5, 16), pad_amounts(3, 16)], mode=numpy_mode)
    np.testing.assert_array_equal(padded.numpy(), want)
    assert torch.equal(padded[(..., *crop)], x)


def test_every_size_round_trips_and_is_padded_to_the_next_multiple():
    model = UNet(UNetConfig(dim=1, depth=3, width=2, pad_mode="reflect")).eval()
    seen = []
    model.encoder[0].register_forward_pre_hook(lambda mod, args: seen.append(args[0].shape[-1]))
    with torch.no_grad():
        for n in range(5, 71):
            assert model(torch.randn(2, 1, n)).shape == (2, 1, n)
            assert seen[-1] == 8 * math.ceil(n / 8)
        model2d = UNet(UNetConfig(dim=2, depth=2, width=2, norm="instance"))
        for sizes in [(5, 70), (17, 9), (85, 43)]:
            assert model2d(torch.randn(1, 1, *sizes)).shape == (1, 1, *sizes)


# ----------------------------------------------------------------------------- symmetries


@pytest.mark.parametrize("dim", [1, 2])
@pytest.mark.parametrize("down, up, norm", [("maxpool", "transpose", "batch"), ("conv", "interp", "group"),
                                            ("maxpool", "interp", "none")])
def test_circular_unet_is_equivariant_to_shifts_by_multiples_of_two_to_the_depth(dim, down, up, norm):
    model = _unet(dim=dim, depth=2, downsample=down, upsample=up, norm=norm, norm_groups=2,
                  padding_mode="circular", add_grid=False)
    torch.manual_seed(1)
    x = torch.randn(2, 1, *(16, 12)[:dim], dtype=torch.float64)
    axes = tuple(range(2, 2 + dim))
    with torch.no_grad():
        y = model(x)
        for shift in [(4, 8), (-12, 4)]:
            s = shift[:dim]
            assert (model(x.roll(s, axes)) - y.roll(s, axes)).abs().max().item() < 1e-12
        # a shift by one point moves the max-pool/stride-2 cells: equivariance breaks far above
        # round-off (measured 3e-5 .. 0.6 against 1e-15 for the allowed shifts): the test is sharp
        off = (model(x.roll(1, 2)) - y.roll(1, 2)).abs().max().item()
    assert off > 1e-8


def _scalar_block(block, h):
    """A conv block applied to a spatially constant field with value ``h`` (interior/periodic):
    each 3^d convolution sums its taps, ``act(W_sum h + b)``."""
    for conv in block.convs:
        h = block.act(conv.weight.sum(tuple(range(2, conv.weight.ndim))) @ h + conv.bias)
    return h


def _bias_only_output(model) -> torch.Tensor:
    """By hand: the U-Net's response to a zero input, where every field stays constant in space
    (max-pool and interpolation keep constants), so each layer acts on one value per channel."""
    c = model.config
    h = _scalar_block(model.encoder[0], torch.zeros(c.in_channels, dtype=torch.float64))
    skips = [h]
    for block in model.encoder[1:]:
        skips.append(_scalar_block(block, skips[-1]))
    g = skips.pop()
    for i in reversed(range(c.depth)):
        up = model.up[i].conv
        g = up.weight.sum(tuple(range(2, up.weight.ndim))) @ g + up.bias
        g = _scalar_block(model.decoder[i], torch.cat([skips[i], g]))
    return model.head.weight[..., *([0] * c.dim)] @ g + model.head.bias


@pytest.mark.parametrize("dim", [1, 2])
def test_zero_input_gives_the_bias_only_output_computed_by_hand(dim):
    for padding_mode in ("circular", "zeros"):
        model = _unet(dim=dim, depth=2, width=3, norm="none", activation="gelu", upsample="interp",
                      padding_mode=padding_mode, add_grid=False, out_channels=2)
        with torch.no_grad():
            for p in model.parameters():  # biases of the default init are too small to matter
                p.add_(0.3 * torch.randn_like(p))
            want = _bias_only_output(model)
            size = 96  # zero padding: the centre is beyond the boundaries' reach (about 30 points)
            out = model(torch.zeros(1, 1, *[size] * dim, dtype=torch.float64))[0]
        assert want.abs().min() > 1e-2
        centre = out[(..., *[size // 2] * dim)]
        assert torch.allclose(centre, want, rtol=0, atol=1e-12)
        if padding_mode == "circular":  # periodic: the constant is exact everywhere
            assert torch.allclose(out, want.reshape(-1, *[1] * dim).expand_as(out), rtol=0, atol=1e-12)
        else:  # the boundary does change it
            assert (out - want.reshape(-1, *[1] * dim)).abs().max() > 1e-3


def test_relu_unet_without_biases_is_positively_homogeneous():
    # ReLU, max-pool, transposed conv, concatenation and replicate padding all commute with
    # scaling by a > 0, so without biases, norms or coordinate channels f(a x) = a f(x)
    model = _unet(dim=2, norm="none", add_grid=False, pad_mode="replicate")
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.zero_()
        x = torch.randn(2, 1, 13, 10, dtype=torch.float64)
        y = model(x)
        assert torch.allclose(model(2.5 * x), 2.5 * y, rtol=1e-12, atol=1e-14)
        assert torch.equal(model(torch.zeros_like(x)), torch.zeros_like(y))
        assert y.abs().max() > 0


# ----------------------------------------------------------------------------- configs


def test_condiff_unet_has_the_notebook_parameter_count_less_the_output_kernel():
    # ConDiff "UNet for Poisson 2D.ipynb" prints "Model size: 1388833" (depth 3 = 2 down-samplings,
    # width 32, N_convs 4, GELU, no norm; 3 more convs at the coarsest level). Its output conv is
    # 3x3 (32*9+1 = 289 weights) where ours is 1x1 (33): 256 fewer.
    model = create("unet", depth=2, width=32, convs_per_level=4, bottleneck_convs=3, norm="none",
                   activation="gelu", add_grid=False)
    assert sum(p.numel() for p in model.parameters()) == 1_388_833 - 256


def test_batch_norm_convs_have_no_bias_and_channels_double():
    model = create("unet", depth=3, width=8)
    assert model.config.channels == (8, 16, 32, 64)
    assert all(conv.bias is None for block in model.encoder for conv in block.convs)
    assert model.encoder[3].convs[0].weight.shape == (64, 32, 3, 3)
    assert model.decoder[0].convs[0].weight.shape == (8, 16, 3, 3)
    assert model.head.weight.shape == (1, 8, 1, 1)


def test_config_and_input_errors():
    with pytest.raises(ConfigError, match="dim must be 1, 2 or 3"):
        UNetConfig(dim=4)
    with pytest.raises(ConfigError, match="not a multiple of norm_groups 8"):
        UNetConfig(width=12, norm="group")
    with pytest.raises(ConfigError, match="upsample must be one of"):
        UNetConfig(upsample="pixelshuffle")
    with pytest.raises(ConfigError, match="depth must be >= 1"):
        UNetConfig(depth=0)
    model = create("unet", in_channels=2, depth=1, width=2)
    with pytest.raises(ModelError, match=r"expects input \(batch, 2, x, y\)"):
        model(torch.zeros(1, 1, 8, 8))


# ----------------------------------------------------------------------------- training


@pytest.fixture(scope="module")
def trained(tmp_path_factory, darcy16):
    run = tmp_path_factory.mktemp("unet") / "run"
    summary = training.train(
        "unet", data=darcy16[0], test_data=darcy16[1], out=run, epochs=30, batch_size=4, lr=2e-3,
        progress=False, figures=False, num_threads=1, model_config={"depth": 2, "width": 8},
    )
    return run, summary


def test_unet_learns_darcy16(trained):
    # measured: test rel. L2 0.076 after 30 epochs (0.072-0.076 over seeds 0-2; 0.20 after the
    # first epoch, about the mean field's error)
    _, summary = trained
    assert summary["test_loss"] < 0.11


def test_trained_unet_evaluates_at_another_resolution(trained, tmp_path):
    run, _ = trained
    fine = datasets.generate("darcy", n=4, resolution=27, seed=2, out=tmp_path / "d27.h5", progress=False)
    result = evaluation.evaluate(run, data=[fine], n_solver_samples=0, out=tmp_path / "e.json")["datasets"][0]
    assert result["shape"] == [27, 27]
    assert math.isfinite(result["rel_l2_mean"]) and result["rel_l2_mean"] < 1.0
