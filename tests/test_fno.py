"""FNO: the spectral convolution against an explicit DFT, resolution invariance, resolution and
config errors, and the architecture of the paper's model."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from sciml.errors import ConfigError, ModelError
from sciml.operators import create
from sciml.operators.fno import FNO, FNOConfig, SpectralConv, check_resolution


def explicit_spectral_conv(x: np.ndarray, weight: np.ndarray, modes: tuple[int, ...]) -> np.ndarray:
    """Slow, obviously right reference of ``SpectralConv``, straight from the definition.

    ``u(x) = (1/N) sum_k c_k Re(Y_k e^{2 pi i k.x/n})``, ``Y_k = sum_c X_k[c] R_k[c, :]``,
    ``X_k = sum_x u(x) e^{-2 pi i k.x/n}``, over the kept frequencies ``k`` (``|k_j| <= m_j``
    with ``-m_j <= k_j < m_j`` on non-last axes, ``0 <= k_last < m_last``); ``c_k = 1`` if
    ``k_last = 0`` else 2 (the conjugate half of the real spectrum). ``R_k`` is
    ``weight[k_last, i(k_{d-2}), ..., i(k_0)]`` with ``i(k) = k mod 2m`` (the documented layout).
    """
    b, c, *sizes = x.shape
    d = len(sizes)
    coords = np.meshgrid(*[np.arange(n) for n in sizes], indexing="ij")
    w = weight[..., 0] + 1j * weight[..., 1]
    out = np.zeros((b, w.shape[-1], *sizes))
    ranges = [range(-m, m) for m in modes[:-1]] + [range(0, modes[-1])]
    for k in itertools.product(*ranges):
        phase = sum(2 * np.pi * kj * xj / n for kj, xj, n in zip(k, coords, sizes))
        coeff = (x * np.exp(-1j * phase)).reshape(b, c, -1).sum(-1)  # X_k, (B, C_in)
        index = (k[-1], *(kj % (2 * m) for kj, m in zip(reversed(k[:-1]), reversed(modes[:-1]))))
        y = coeff @ w[index]  # (B, C_out)
        scale = 1.0 if k[-1] == 0 else 2.0
        out += scale * np.real(y.reshape(*y.shape, *([1] * d)) * np.exp(1j * phase)) / math.prod(sizes)
    return out


@pytest.mark.parametrize("method", ["fft", "dft"])
@pytest.mark.parametrize(
    "modes, sizes", [((3,), (11,)), ((3, 2), (9, 8)), ((2, 3, 2), (6, 7, 5))], ids=["1d", "2d", "3d"]
)
def test_spectral_conv_matches_explicit_dft(method, modes, sizes):
    torch.manual_seed(0)
    conv = SpectralConv(2, 3, modes).double()
    with torch.no_grad():
        conv.weight.normal_()  # both signs and a wide range, unlike the positive initialisation
    conv.method = method
    x = torch.randn(2, 2, *sizes, dtype=torch.float64)
    got = conv(x).detach().numpy()
    want = explicit_spectral_conv(x.numpy(), conv.weight.detach().numpy(), modes)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-12 * np.abs(want).max())


@pytest.mark.parametrize("modes, sizes", [((12, 12), (85, 85)), ((16,), (4096,)), ((4, 3, 5), (16, 9, 12))])
def test_fft_and_dft_paths_agree_in_float32(modes, sizes):
    torch.manual_seed(1)
    conv = SpectralConv(4, 4, modes)
    x = torch.randn(2, 4, *sizes)
    conv.method = "fft"
    a = conv(x)
    conv.method = "dft"
    b = conv(x)
    # float32 round-off of sums over up to 4096 terms: ~sqrt(n) * 6e-8 relative
    assert ((a - b).norm() / a.norm()).item() < 2e-6


@pytest.mark.parametrize("modes", [(12, 12), (16,), (4, 3, 5)])
def test_complex_and_real_block_contractions_agree_with_gradients(modes):
    """The GPU path (complex bmm on a view of the weights) equals the CPU path (real block bmm)."""
    torch.manual_seed(2)
    conv = SpectralConv(5, 3, modes).double()
    kept = conv.weight.shape[:-3]
    a = torch.randn(2, 5, *kept, dtype=torch.complex128, requires_grad=True)
    outs = [conv._contract(a, complex_gemm=flag) for flag in (False, True)]
    grads = [torch.autograd.grad((y.real * 1.3 + y.imag).sum(), (conv.weight, a)) for y in outs]
    assert torch.allclose(outs[0], outs[1], rtol=1e-12, atol=1e-14)
    for g_real, g_complex in zip(*grads):
        assert torch.allclose(g_real, g_complex, rtol=1e-12, atol=1e-14)


def test_auto_method_picks_dft_for_low_modes_and_fft_near_nyquist():
    x = torch.zeros(1, 1, 85, 85)
    assert SpectralConv(1, 1, (12, 12))._pick(x) == "dft"
    assert SpectralConv(1, 1, (512,))._pick(torch.zeros(1, 1, 1024)) == "fft"


def _band_limited(s: int) -> torch.Tensor:
    """A periodic function with frequencies <= 3, sampled at x_i = i / s on [0, 1)^2."""
    x = torch.arange(s, dtype=torch.float64) / s
    gx, gy = torch.meshgrid(x, x, indexing="ij")
    u = torch.sin(2 * math.pi * gx) + 0.5 * torch.cos(2 * math.pi * (2 * gx + 3 * gy))
    return (u + 0.3 * torch.sin(6 * math.pi * gy))[None, None]


def _fno(n_layers: int, activation: str) -> FNO:
    torch.manual_seed(0)
    config = FNOConfig(modes=(8, 8), width=16, n_layers=n_layers, projection=32, add_grid=False, activation=activation)
    return FNO(config).double().eval()


def _at_shared_points(model: FNO, sizes: tuple[int, ...]) -> dict[int, torch.Tensor]:
    """Outputs restricted to the coarsest grid's points (every (s / s_min)-th point)."""
    with torch.no_grad():
        return {s: model(_band_limited(s))[..., :: s // sizes[0], :: s // sizes[0]] for s in sizes}


def test_resolution_invariance_is_exact_without_hidden_nonlinearity():
    # One Fourier layer: lift, K + W and the pointwise projection all commute with sampling a
    # band-limited input (frequency 3 < 32 / 2), so 32 and 64 points give the same values at the
    # shared points up to float64 round-off.
    out = _at_shared_points(_fno(1, "gelu"), (32, 64))
    assert ((out[32] - out[64]).norm() / out[64].norm()).item() < 1e-12


def test_resolution_invariance_of_deep_fno_up_to_aliasing():
    # With activations between Fourier layers the hidden fields are no longer band-limited; the
    # only difference between resolutions is the aliasing of their harmonics above s / 2. GELU is
    # analytic, so those harmonics decay exponentially (measured: 8e-14 at 32 vs 64 points).
    out = _at_shared_points(_fno(4, "gelu"), (32, 64))
    assert ((out[32] - out[64]).norm() / out[64].norm()).item() < 1e-9


def test_resolution_consistency_improves_under_refinement_with_relu():
    # ReLU has kinks: harmonics decay only algebraically, so aliasing is visible (measured 7.8e-6,
    # 1.3e-6, 2.3e-7 against 256 points) but shrinks at every refinement.
    out = _at_shared_points(_fno(4, "relu"), (32, 64, 128, 256))
    err = {s: ((out[s] - out[256]).norm() / out[256].norm()).item() for s in (32, 64, 128)}
    assert err[32] < 1e-4
    assert err[64] < err[32] / 2
    assert err[128] < err[64] / 2


def test_too_coarse_resolution_raises_with_the_rule():
    model = create("fno", modes=(12, 12), width=4, n_layers=1, projection=4)
    with pytest.raises(ModelError) as info:
        model(torch.zeros(1, 1, 30, 16))
    assert str(info.value) == (
        "resolution 16 along y is too small for modes 12: need >= 24 grid points; train with --set modes=[12,8] "
        "(at most (n + padding) // 2 per axis) or use finer data"
    )
    assert model(torch.zeros(1, 1, 24, 24)).shape == (1, 1, 24, 24)  # n = 2 * modes is enough
    with pytest.raises(ModelError, match="resolution 23 along x"):
        model(torch.zeros(1, 1, 23, 24))


def test_padding_counts_towards_the_resolution_rule():
    check_resolution((22,), (12,), padding=2)
    with pytest.raises(ModelError, match="need >= 22"):
        check_resolution((21,), (12,), padding=2)
    model = create("fno", modes=(12,), width=4, n_layers=1, projection=4, padding=2)
    assert model(torch.zeros(1, 1, 22)).shape == (1, 1, 22)


def test_wrong_channel_count_or_dim_raises():
    model = create("fno", in_channels=2, modes=(4, 4), width=4, n_layers=1, projection=4)
    with pytest.raises(ModelError, match=r"expects input \(batch, 2, x, y\)"):
        model(torch.zeros(1, 1, 8, 8))
    with pytest.raises(ModelError, match="got shape"):
        model(torch.zeros(1, 2, 8))


def test_dim_is_inferred_and_single_mode_is_broadcast():
    assert FNOConfig(modes=(16,)).dim == 1
    config = FNOConfig(modes=(4,), dim=3)
    assert config.modes == (4, 4, 4)
    assert create("fno", modes=[5, 6]).config.modes == (5, 6)  # lists from YAML become tuples
    with pytest.raises(ConfigError, match="has 2 entries but dim is 3"):
        FNOConfig(modes=(4, 4), dim=3)
    with pytest.raises(ConfigError, match="activation"):
        create("fno", activation="swish")
    with pytest.raises(ConfigError, match="dim must be 1, 2 or 3"):
        FNOConfig(modes=(2, 2, 2, 2))


def test_paper_darcy_model_has_the_paper_parameter_count():
    # lift 3*32+32, 4 x (complex 32*32*24*12 as 2 reals + 32*32+32), projection 32*128+128 + 128+1
    model = create("fno-darcy-paper")
    assert sum(p.numel() for p in model.parameters()) == 128 + 4 * (2 * 32 * 32 * 24 * 12 + 1056) + 4353 == 2_368_001
    assert model.spectral[0].weight.shape == (12, 24, 32, 32, 2)


def test_grid_channels_are_linspace_per_axis():
    from sciml.operators.fno import _grid

    grid = _grid((3, 2), 1, torch.device("cpu"), torch.float32)
    assert grid.shape == (1, 2, 3, 2)
    assert torch.equal(grid[0, 0], torch.tensor([[0.0, 0.0], [0.5, 0.5], [1.0, 1.0]]))
    assert torch.equal(grid[0, 1], torch.tensor([[0.0, 1.0], [0.0, 1.0], [0.0, 1.0]]))


def test_fno_learns_a_spectral_multiplier():
    # u -> u'' / 40 on periodic data is diagonal in Fourier space: a 1-layer FNO fits it quickly.
    torch.manual_seed(0)
    x = torch.arange(32) / 32
    k = torch.arange(1, 4)[:, None]
    coef = torch.randn(32, 3, 2)
    waves = coef[..., 0:1] * torch.sin(2 * math.pi * k * x) + coef[..., 1:2] * torch.cos(2 * math.pi * k * x)
    u, target = waves.sum(1)[:, None], (-((2 * math.pi * k) ** 2) / 40 * waves).sum(1)[:, None]
    model = create("fno", modes=(4,), width=8, n_layers=1, projection=16, add_grid=False)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny ops: a second thread only adds synchronisation latency
    try:
        for _ in range(150):
            opt.zero_grad()
            loss = (model(u) - target).norm() / target.norm()
            loss.backward()
            opt.step()
    finally:
        torch.set_num_threads(threads)
    assert loss.item() < 0.05


def test_spectral_transforms_run_in_float32_under_autocast():
    torch.manual_seed(0)
    model = create("fno", modes=(4, 4), width=8, n_layers=2, projection=16).eval()
    x = torch.randn(2, 1, 12, 10)
    with torch.no_grad():
        want = model(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            got = model(x)
    assert got.dtype == torch.bfloat16
    # bfloat16 keeps 8 bits of mantissa in the pointwise layers: ~1e-2 relative
    assert ((got.float() - want).norm() / want.norm()).item() < 3e-2
