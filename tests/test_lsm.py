"""LSM: the padding rule, the latent attention and spectral basis against slow references, the
patch-wise block against a loop over patches, the paper model's size, resolution transfer, and a
tiny end-to-end training run."""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pytest
import torch

from sciml import datasets, evaluation, training
from sciml.errors import ConfigError, ModelError
from sciml.operators import create
from sciml.operators.lsm import (
    LSM,
    LatentAttention,
    LatentSpectral,
    LSMConfig,
    NeuralSpectralBlock,
    resolve_padding,
)

pytestmark = pytest.mark.usefixtures("one_thread")


PAPER_DARCY = {"in_channels": 1, "out_channels": 1, "d_model": 64, "num_token": 4, "num_basis": 12,
               "patch_size": (6, 6), "heads": 8, "padding": (11, 11)}


# ----------------------------------------------------------------------------- padding


@pytest.mark.parametrize("patch, n_scales", [((6,), 5), ((3, 2), 3), ((2, 1, 4), 2), ((5,), 1)])
def test_automatic_padding_is_the_minimal_one_that_divides(patch, n_scales):
    config = LSMConfig(patch_size=patch, n_scales=n_scales, dim=len(patch))
    multiple = [p * 2 ** (n_scales - 1) for p in patch]
    assert config.multiple == tuple(multiple)
    for n in range(1, 230):
        pads = resolve_padding((n,) * len(patch), config)
        for pad, m in zip(pads, multiple):
            assert (n + pad) % m == 0
            assert 0 <= pad < m  # no smaller padding reaches a multiple
    assert resolve_padding((85, 85), LSMConfig(patch_size=(6, 6))) == (11, 11)  # the paper's 85 + 11 = 96


def test_explicit_padding_is_used_where_it_fits_and_otherwise_names_the_sizes_that_work():
    config = LSMConfig(patch_size=(6, 6), padding=(11, 11))
    assert resolve_padding((85, 181), config) == (11, 11)
    with pytest.raises(ModelError) as info:
        resolve_padding((85, 43), config)
    assert str(info.value) == (
        "lsm padding 11 along y does not fit size 43: 43 + 11 = 54 is not a multiple of 96 (patch 6 x 2^4 for 4 "
        "halvings); with this padding the sizes that work are 85, 181, 277, ...; set padding to null for automatic "
        "padding (53 here)"
    )


def test_paper_padding_and_automatic_padding_give_the_same_model_at_85():
    torch.manual_seed(0)
    small = {"d_model": 8, "heads": 2, "num_basis": 4, "patch_size": (6, 6), "projection": 8}
    paper = LSM(LSMConfig(padding=(11, 11), **small)).eval()
    auto = LSM(LSMConfig(**small)).eval()
    auto.load_state_dict(paper.state_dict())
    x = torch.randn(2, 1, 85, 85)
    with torch.no_grad():
        assert torch.equal(paper(x), auto(x))


@pytest.mark.parametrize("sizes", [(43, 43), (211, 211), (85, 40), (7, 13)])
def test_model_trained_at_85_runs_at_other_resolutions(sizes):
    # padding None: 43 -> 96, 211 -> 288; even a grid smaller than one patch per coarse cell runs
    torch.manual_seed(0)
    model = LSM(LSMConfig(d_model=8, heads=2, num_basis=4, patch_size=(6, 6), projection=8)).eval()
    with torch.no_grad():
        out = model(torch.randn(1, 1, *sizes))
    assert out.shape == (1, 1, *sizes) and torch.isfinite(out).all()


# ----------------------------------------------------------------------------- latent attention


def test_encoding_is_invariant_to_the_order_of_a_patchs_points():
    torch.manual_seed(0)
    attention = LatentAttention(channels=16, heads=4, num_token=3).double()
    points = torch.randn(5, 36, 16, dtype=torch.float64)
    perm = torch.randperm(36)
    tokens = attention.encode(points)
    assert tokens.shape == (5, 3, 16)
    torch.testing.assert_close(attention.encode(points[:, perm]), tokens, rtol=0, atol=1e-13)
    # decoding acts point by point: permuting the points permutes its output the same way
    decoded = attention.decode(points, tokens)
    torch.testing.assert_close(attention.decode(points[:, perm], tokens), decoded[:, perm], rtol=0, atol=1e-13)


def test_encoding_is_the_attention_formula():
    # z_h = T_h + softmax_p(T_h . k_{p,h}) v_{p,h}, head h on channels [h c, (h + 1) c)
    torch.manual_seed(1)
    attention = LatentAttention(channels=6, heads=2, num_token=2).double()
    points = torch.randn(1, 5, 6, dtype=torch.float64)
    kv = attention.key_value(points[0])
    k, v = kv[:, :6], kv[:, 6:]
    want = torch.zeros(2, 6, dtype=torch.float64)
    for h in range(2):
        cols = slice(3 * h, 3 * h + 3)
        t = attention.tokens[h]  # (num_token, 3)
        weights = torch.softmax(t @ k[:, cols].T, -1)
        want[:, cols] = t + weights @ v[:, cols]
    torch.testing.assert_close(attention.encode(points)[0], want, rtol=0, atol=1e-13)


# ----------------------------------------------------------------------------- spectral basis


def test_spectral_basis_with_zero_weights_is_the_identity():
    spectral = LatentSpectral(channels=5, num_basis=12)
    with torch.no_grad():
        spectral.weight.zero_()
    z = torch.randn(3, 4, 5)
    assert torch.equal(spectral(z), z)


def test_spectral_basis_matches_an_explicit_sum():
    torch.manual_seed(0)
    channels, basis = 3, 5
    spectral = LatentSpectral(channels, basis).double()
    with torch.no_grad():
        spectral.weight.normal_()
    z = 3 * torch.randn(2, 4, channels, dtype=torch.float64)
    got = spectral(z)
    w = spectral.weight.detach().numpy()
    want = np.empty(z.shape)
    for i, j, c in itertools.product(*(range(n) for n in z.shape)):
        value = float(z[i, j, c])
        total = value
        for k in range(basis):
            phase = k * math.pi * value / basis
            total += w[c, k] * math.sin(phase) + w[c, basis + k] * math.cos(phase)
        want[i, j, c] = total
    np.testing.assert_allclose(got.detach().numpy(), want, rtol=1e-13, atol=1e-13)


# ----------------------------------------------------------------------------- patch-wise block


def _block_by_loop(block: NeuralSpectralBlock, x: torch.Tensor) -> torch.Tensor:
    """Slow reference: cut each patch out by slicing, run the latent pipeline on it, put it back."""
    out = torch.empty_like(x)
    b, c, *sizes = x.shape
    patch = block.patch_size
    for index in itertools.product(*(range(n // p) for n, p in zip(sizes, patch))):
        where = (slice(None), slice(None), *(slice(i * p, (i + 1) * p) for i, p in zip(index, patch)))
        points = x[where].reshape(b, c, -1).transpose(1, 2)  # (B, P, C), row-major inside the patch
        tokens = block.spectral(block.attention.encode(points))
        out[where] = block.attention.decode(points, tokens).transpose(1, 2).reshape(b, c, *patch)
    return out


@pytest.mark.parametrize("patch, sizes", [((4,), (12,)), ((3, 2), (6, 8)), ((2, 3, 1), (4, 6, 3))])
def test_block_acts_patch_by_patch(patch, sizes):
    torch.manual_seed(0)
    block = NeuralSpectralBlock(channels=8, heads=2, num_token=3, num_basis=4, patch_size=patch).double()
    x = torch.randn(2, 8, *sizes, dtype=torch.float64)
    torch.testing.assert_close(block(x), _block_by_loop(block, x), rtol=0, atol=1e-12)


# ----------------------------------------------------------------------------- architecture and config


def _authors_layer_count(w: int, in_channels: int, out_channels: int, basis: int, tokens: int) -> int:
    """Parameters of the authors' LSM_2D layer list (5 scales, bilinear U-Net, 3x3 convs without bias)."""
    def double_conv(i, o, m=None):
        m = m or o
        return 9 * i * m + 2 * m + 9 * m * o + 2 * o  # two convs, two BatchNorms (weight + bias)

    def spectral_block(c):
        return 2 * basis * c + tokens * c + (2 * c * c + 2 * c) + (c * c + c)  # basis, tokens, kv and q 1x1 convs

    unet = (double_conv(w, w) + double_conv(w, 2 * w) + double_conv(2 * w, 4 * w) + double_conv(4 * w, 8 * w)
            + double_conv(8 * w, 8 * w) + double_conv(16 * w, 4 * w, 8 * w) + double_conv(8 * w, 2 * w, 4 * w)
            + double_conv(4 * w, w, 2 * w) + double_conv(2 * w, w, w) + (w * w + w))
    blocks = sum(spectral_block(c) for c in (w, 2 * w, 4 * w, 8 * w, 8 * w))
    projections = (in_channels + 2) * w + w + w * 128 + 128 + 128 * out_channels + out_channels
    return unet + blocks + projections


def test_paper_darcy_model_has_the_authors_parameter_count():
    torch.manual_seed(0)
    model = create("lsm", **PAPER_DARCY)
    n = sum(p.numel() for p in model.parameters())
    assert n == _authors_layer_count(64, 1, 1, basis=12, tokens=4) == 19_187_457
    assert model.config.channels == (64, 128, 256, 512, 512)
    with torch.no_grad():
        assert model.eval()(torch.randn(1, 1, 85, 85)).shape == (1, 1, 85, 85)


def test_config_broadcasts_and_infers_dim():
    assert LSMConfig().dim == 2 and LSMConfig().patch_size == (6, 6) and LSMConfig().padding is None
    assert LSMConfig(dim=1).patch_size == (6,)
    assert LSMConfig(patch_size=(7, 2, 2)).dim == 3
    assert LSMConfig(padding=(12, 1, 11), patch_size=(2,)).patch_size == (2, 2, 2)
    assert create("lsm", patch_size=[4, 3], padding=[0, 1]).config.padding == (0, 1)  # lists from YAML
    assert LSMConfig(n_scales=1).channels == (64,) and LSMConfig(n_scales=3).channels == (64, 128, 128)


@pytest.mark.parametrize(
    "config, message",
    [
        ({"patch_size": (6, 6), "dim": 3}, "patch_size \\[6, 6\\] has 2 entries but dim is 3"),
        ({"padding": (1, 2, 3, 4)}, "dim must be 1, 2 or 3"),
        ({"heads": 6}, "heads=6 must divide d_model=64"),
        ({"padding": (-1,)}, "padding must be >= 0"),
        ({"patch_size": (0,)}, "patch_size must be >= 1"),
        ({"n_scales": 0}, "n_scales must be >= 1"),
    ],
)
def test_config_errors_say_what_to_do(config, message):
    with pytest.raises(ConfigError, match=message):
        LSMConfig(**config)


def test_wrong_channel_count_or_dim_raises():
    model = create("lsm", in_channels=2, d_model=8, heads=2, patch_size=(2,), n_scales=2)
    with pytest.raises(ModelError, match=r"expects input \(batch, 2, x, y\), got shape \(1, 1, 8, 8\)"):
        model(torch.zeros(1, 1, 8, 8))
    with pytest.raises(ModelError, match="got shape"):
        model(torch.zeros(1, 2, 8))


# ----------------------------------------------------------------------------- end to end

SMALL_LSM = {"d_model": 16, "heads": 4, "num_token": 4, "num_basis": 12, "patch_size": [4, 4], "n_scales": 3,
             "projection": 32}


@pytest.fixture(scope="module")
def trained(tmp_path_factory, darcy16):
    out = tmp_path_factory.mktemp("lsm") / "run"
    summary = training.train("lsm", data=darcy16[0], test_data=darcy16[1], out=out, epochs=40, batch_size=4,
                             lr=2e-3, model_config=SMALL_LSM, progress=False, figures=False, checkpoint_every=40,
                             num_threads=1)
    return out, summary


def test_training_on_darcy16_lowers_the_test_error(trained):
    out, summary = trained
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    # measured on darcy16 (seeds 0-3): train loss 0.20-0.23 -> 0.050-0.053, test 0.063-0.070 after 40 epochs
    assert rows[-1]["train_loss"] < 0.4 * rows[0]["train_loss"], [r["train_loss"] for r in rows]
    assert summary["test_loss"] < 0.1
    assert json.loads((out / "run.json").read_text())["config"]["padding"] is None


def test_trained_run_evaluates_at_another_resolution(trained, tmp_path):
    out, summary = trained
    fine = datasets.generate("darcy", n=3, resolution=24, seed=5, out=tmp_path / "fine.h5", progress=False)
    result = evaluation.evaluate(out, data=[fine], n_solver_samples=0)["datasets"][0]
    assert result["resolution"] == "24x24"
    # measured 0.11-0.13 at seeds 0-3 (24 is padded to 32 for patch 4 and 3 scales)
    assert np.isfinite(result["rel_l2_mean"]) and result["rel_l2_mean"] < 0.3
