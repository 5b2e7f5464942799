"""MgNO: the V-cycle is linear and, with classical kernels, a real multigrid solver; restriction
and prolongation against explicit loops; zero vs circular padding; shift equivariance; config and
resolution errors; training on Darcy and evaluation at another resolution."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from sciml import datasets, evaluation, training
from sciml.errors import ConfigError, ModelError
from sciml.operators import create
from sciml.operators.mgno import MgNO, MgNOConfig, Prolongation, Stencil, VCycle, paper_iterations

# the paper's smooth-Darcy model (README: MgNO_DC_smooth, 24 channels, 5 layers, 6 levels)
PAPER = {"in_channels": 1, "out_channels": 1, "dim": 2, "channels": 24, "n_layers": 5, "levels": 6,
         "iterations": [[1, 0], [1, 0], [1, 0], [1, 0], [1, 0], [2, 0]], "padding_mode": "zeros",
         "activation": "gelu", "normalisation": "none"}


pytestmark = pytest.mark.usefixtures("one_thread")


def _double(model):
    return model.double().eval()


# ----------------------------------------------------------------------------- linearity


@pytest.mark.parametrize("dim, mode, sizes", [(1, "zeros", (37,)), (2, "circular", (19, 16)), (3, "zeros", (9, 8, 7))])
def test_vcycle_is_linear_in_f(dim, mode, sizes):
    torch.manual_seed(0)
    config = MgNOConfig(in_channels=2, dim=dim, channels=3, n_layers=2, levels=3,
                        iterations=((1, 1), (2, 0), (2, 1)), padding_mode=mode)
    model = _double(MgNO(config))
    for w, c_in in ((model.vcycles[0], 2), (model.vcycles[1], 3)):  # in_channels -> 3, 3 -> 3
        f, g = torch.randn(2, 2, c_in, *sizes, dtype=torch.float64)
        with torch.no_grad():
            got, want = w(2 * f + 3 * g), 2 * w(f) + 3 * w(g)
        assert got.shape == (2, 3, *sizes)
        assert ((got - want).norm() / want.norm()).item() < 1e-13


def test_layer_normalisation_makes_the_vcycle_nonlinear():
    # the authors' Navier-Stokes variant normalises after each coarse correction: W is then affine
    # in neither sense (kept as an option; the Darcy models have no normalisation)
    torch.manual_seed(0)
    w = _double(MgNO(MgNOConfig(dim=1, channels=3, n_layers=1, levels=3, normalisation="layer"))).vcycles[0]
    f = torch.randn(2, 1, 32, dtype=torch.float64)
    with torch.no_grad():
        assert ((w(3 * f) - 3 * w(f)).norm() / w(f).norm()).item() > 1e-2


# ----------------------------------------------------------------------------- grid transfers


def _extend(x: np.ndarray, i: int, mode: str) -> float:
    n = x.shape[-1]
    if mode == "circular":
        return x[..., i % n]
    return x[..., i] if 0 <= i < n else 0.0 * x[..., 0]


@pytest.mark.parametrize("mode", ["zeros", "circular"])
@pytest.mark.parametrize("n", [14, 15])
def test_restriction_and_prolongation_match_explicit_sums(mode, n):
    # R: u_c(j) = sum_k w[k] u(2j + k) (coarse j on fine 2j + 1), floor(n / 2) points;
    # RT: u(i) = sum_j w[i - 2j] u_c(j); both over the zero or periodic continuation (1D, 2 channels)
    torch.manual_seed(0)
    restrict = Stencil(2, 2, 1, 2, mode).double()
    prolong = Prolongation(2, 1, mode).double()
    x = torch.randn(1, 2, n, dtype=torch.float64)
    xc = torch.randn(1, 2, n // 2, dtype=torch.float64)
    with torch.no_grad():
        got_r, got_p = restrict(x)[0].numpy(), prolong(xc, (n,))[0].numpy()
    wr, wp, xn, xcn = restrict.weight.detach().numpy(), prolong.weight.detach().numpy(), x[0].numpy(), xc[0].numpy()
    want_r = np.stack([sum(wr[:, :, k] @ _extend(xn, 2 * j + k, mode) for k in range(3)) for j in range(n // 2)], -1)
    want_p = np.stack([
        sum(wp[:, :, i - 2 * j].T @ _extend(xcn, j, mode) for j in range(-2, n // 2 + 2) if 0 <= i - 2 * j < 4)
        for i in range(n)
    ], -1)
    np.testing.assert_allclose(got_r, want_r, atol=1e-13)
    np.testing.assert_allclose(got_p, want_p, atol=1e-13)


def test_full_weighting_and_linear_interpolation_are_exact_on_linear_functions():
    # the coarse grid sits on the odd fine points, so the zero padding of every level is the same
    # Dirichlet boundary: fine -1 and n = 2 n_c + 1 are coarse -1 and n_c (nested grids)
    restrict, prolong = Stencil(1, 1, 1, 2, "zeros").double(), Prolongation(1, 1, "zeros").double()
    with torch.no_grad():
        restrict.weight.copy_(torch.tensor([[[0.25, 0.5, 0.25]]]))
        prolong.weight.copy_(torch.tensor([[[0.5, 1.0, 0.5, 0.0]]]))
        ramp = torch.arange(1, 16, dtype=torch.float64)  # linear, zero at fine -1
        assert torch.allclose(restrict(ramp[None, None])[0, 0], ramp[1::2], atol=1e-14)
        hat = 1 - torch.abs(ramp - 8) / 8  # linear between coarse points, zero at fine -1 and 15
        assert torch.allclose(prolong(hat[None, None, 1::2], (15,))[0, 0], hat, atol=1e-15)


# ----------------------------------------------------------------------------- real multigrid


def _tensor_kernel(taps: list[float], dim: int) -> torch.Tensor:
    k = torch.tensor(taps, dtype=torch.float64)
    out = k
    for _ in range(dim - 1):
        out = out[..., None] * k
    return out[None, None]


def _laplacian(dim: int) -> torch.Tensor:
    """The (2d+1)-point stencil of -Laplace with h = 1."""
    k = torch.zeros((3,) * dim, dtype=torch.float64)
    k[(1,) * dim] = 2.0 * dim
    for axis, side in itertools.product(range(dim), (0, 2)):
        index = [1] * dim
        index[axis] = side
        k[tuple(index)] = -1.0
    return k[None, None]


def classical_vcycle(dim: int, levels: int, iterations) -> VCycle:
    """The V-cycle with textbook kernels: A_l = -Laplace on h_l = 2^l, damped Jacobi S_l
    (omega = 2/3 in 1D, 4/5 in 2D), full-weighting R, Pi = 0 (correction scheme: the coarse
    unknown is the error, started from zero) and (bi)linear interpolation RT."""
    omega = {1: 2 / 3, 2: 4 / 5}[dim]
    config = MgNOConfig(in_channels=1, dim=dim, channels=1, n_layers=1, levels=levels, iterations=iterations)
    vcycle = VCycle(1, 1, config).double()
    with torch.no_grad():
        for level in range(levels):
            h2 = 4.0**level
            vcycle.A[level].weight.copy_(_laplacian(dim) / h2)
            for smoother in vcycle.S[level]:
                smoother.weight.zero_()
                smoother.weight[(0, 0, *(1,) * dim)] = omega * h2 / (2 * dim)
        for level in range(levels - 1):
            vcycle.R[level].weight.copy_(_tensor_kernel([0.25, 0.5, 0.25], dim))
            vcycle.Pi[level].weight.zero_()
            vcycle.RT[level].weight.copy_(_tensor_kernel([0.5, 1.0, 0.5, 0.0], dim))
    return vcycle


def contraction(vcycle: VCycle, dim: int, n: int, cycles: int = 12) -> float:
    """Mean error reduction per cycle of ``u <- u + W(f - A u)`` over cycles 5..12 (e <- e - W A e)."""
    torch.manual_seed(0)
    e = torch.randn(1, 1, *(n,) * dim, dtype=torch.float64)
    norms = []
    with torch.no_grad():
        for _ in range(cycles):
            e = e - vcycle(vcycle.A[0](e))
            norms.append(e.norm().item())
    return (norms[-1] / norms[3]) ** (1 / (cycles - 4))


@pytest.mark.parametrize("dim, bound", [(1, 0.25), (2, 0.40)])
def test_vcycle_with_classical_kernels_converges_at_a_grid_independent_rate(dim, bound):
    # Multigrid theory (Hackbusch, "Multi-Grid Methods and Applications", 1985, ch. 7; Xu, SIAM
    # Review 34, 1992): for the Poisson model problem a V-cycle with a damped-Jacobi smoother,
    # full weighting and linear interpolation contracts the error by a factor bounded away from 1
    # independently of h. Measured V(1,1) with the coarsest grid (3 points) smoothed 10 times:
    # 1D 0.184 / 0.190 / 0.182, 2D 0.345 / 0.344 / 0.343 at n = 31 / 63 / 127; V(1,0) in 1D gives
    # exactly 1/3, the smoothing factor of damped Jacobi. Smoothing alone stalls (> 0.9).
    rates = {}
    for n in (31, 63, 127):
        levels = int(math.log2(n + 1)) - 1
        vcycle = classical_vcycle(dim, levels, ((1, 1),) * (levels - 1) + ((10, 0),))
        rates[n] = contraction(vcycle, dim, n)
    assert max(rates.values()) < bound, rates
    assert max(rates.values()) - min(rates.values()) < 0.02, rates  # grid-independent
    smoother_only = contraction(classical_vcycle(dim, 1, ((2, 0),)), dim, 127)
    assert smoother_only > 0.9, smoother_only


# ----------------------------------------------------------------------------- boundaries and symmetry


def _response(mode: str, position: int, n: int = 256) -> torch.Tensor:
    """Change of the output of a fixed 1D model when a 3-point bump is placed at ``position``."""
    torch.manual_seed(0)
    model = _double(MgNO(MgNOConfig(dim=1, channels=3, n_layers=2, levels=3, padding_mode=mode)))
    x = torch.zeros(1, 1, n, dtype=torch.float64)
    x[..., position:position + 3] = 1.0
    with torch.no_grad():
        return (model(x) - model(torch.zeros_like(x)))[0, 0]


def test_zero_padding_sees_nothing_across_the_boundary_and_circular_wraps():
    # the response to a bump at the right end reaches 50 points (measured); with zero padding the
    # left end is exactly untouched, with circular padding it wraps around to the left end
    zeros, circular = _response("zeros", 253), _response("circular", 253)
    assert torch.count_nonzero(zeros[:128]) == 0
    assert zeros[200:].abs().max() > 1e-3
    assert circular[:16].abs().min() > 0 and circular[:16].abs().max() > 1e-3


def test_zero_padding_is_translation_equivariant_only_away_from_the_boundary():
    # shifts by 2**levels map every level's grid to itself: in the interior the response moves
    # with the bump; near the boundary the zero padding (the Dirichlet condition) changes it
    shift = 8
    inner, moved = _response("zeros", 96), _response("zeros", 96 + shift)
    assert torch.allclose(moved[shift:], inner[:-shift], atol=1e-13, rtol=0)
    edge, edge_moved = _response("zeros", 0), _response("zeros", shift)
    assert (edge_moved[shift:] - edge[:-shift]).abs().max() > 1e-3


def test_circular_mode_is_equivariant_to_shifts_by_multiples_of_2_to_the_levels():
    torch.manual_seed(0)
    config = MgNOConfig(in_channels=2, out_channels=2, channels=4, n_layers=2, levels=3,
                        iterations=((1, 1), (2, 0), (2, 0)), padding_mode="circular", normalisation="layer")
    model = _double(MgNO(config))
    x = torch.randn(2, 2, 32, 16, dtype=torch.float64)
    with torch.no_grad():
        y = model(x)
        for shift in ((8, 0), (16, -8), (-24, 8)):
            got = model(torch.roll(x, shift, dims=(2, 3)))
            assert torch.allclose(got, torch.roll(y, shift, dims=(2, 3)), atol=1e-12, rtol=0), shift
        # a shift by one point moves the fine points off the coarse grids: not a symmetry
        off = model(torch.roll(x, 1, dims=2)) - torch.roll(y, 1, dims=2)
    assert off.abs().max() > 1e-3


# ----------------------------------------------------------------------------- config and resolution


def test_any_grid_size_from_the_minimum_up_works():
    model = create("mgno", dim=2, channels=2, n_layers=1, levels=4)
    for sizes in ((8, 8), (8, 9), (43, 85), (16, 31)):
        assert model(torch.randn(1, 1, *sizes)).shape == (1, 1, *sizes)


def test_too_small_grid_raises_naming_the_minimum_size():
    model = create("mgno", dim=2, channels=2, n_layers=1, levels=6)
    with pytest.raises(ModelError) as info:
        model(torch.zeros(1, 1, 40, 16))
    assert str(info.value) == (
        "resolution 16 along y is too small for levels=6: need >= 32 points per axis (2**(levels-1)); "
        "train with --set levels=5 (at most 5 levels fit) or use finer data"
    )
    assert model(torch.zeros(1, 1, 32, 32)).shape == (1, 1, 32, 32)
    assert MgNOConfig(levels=6).min_size == 32


def test_wrong_channels_or_dim_raise():
    model = create("mgno", in_channels=2, dim=2, channels=2, n_layers=1, levels=2)
    with pytest.raises(ModelError, match=r"expects input \(batch, 2, x, y\)"):
        model(torch.zeros(1, 1, 8, 8))
    with pytest.raises(ModelError, match="got shape"):
        model(torch.zeros(1, 2, 8))


def test_config_validation_and_the_paper_schedule():
    assert MgNOConfig(levels=4).iterations == ((1, 0), (1, 0), (1, 0), (2, 0)) == paper_iterations(4)
    assert MgNOConfig(levels=2, iterations=[[1, 2], [3, 0]]).iterations == ((1, 2), (3, 0))
    with pytest.raises(ConfigError, match="has 2 .* pairs but levels is 3"):
        MgNOConfig(levels=3, iterations=((1, 0), (2, 0)))
    with pytest.raises(ConfigError, match="pre >= 1"):
        MgNOConfig(levels=2, iterations=((0, 1), (2, 0)))
    with pytest.raises(ConfigError, match="padding_mode"):
        create("mgno", padding_mode="reflect")
    with pytest.raises(ConfigError, match="dim must be 1, 2 or 3"):
        MgNOConfig(dim=4)
    with pytest.raises(ConfigError, match="unknown key 'level'"):
        create("mgno", level=3)


def test_paper_darcy_model_parameter_count():
    # per V-cycle (f channels c_f, u channels c): 7 smoothers S 9 c c_f, 6 operators A 9 c c_f,
    # 5 R 9 c_f^2, 5 Pi 9 c^2, 5 RT 16 c^2; pointwise layers c_f c + c; output c (no bias)
    model = create("mgno", **PAPER)

    def vcycle(cf, c):
        return 63 * c * cf + 54 * c * cf + 45 * cf * cf + 45 * c * c + 80 * c * c

    want = vcycle(1, 24) + 4 * vcycle(24, 24) + (24 + 24) + 4 * (576 + 24) + 24
    assert sum(p.numel() for p in model.parameters()) == want == 738_573
    assert model(torch.zeros(1, 1, 85, 85)).shape == (1, 1, 85, 85)


# ----------------------------------------------------------------------------- training


def test_mgno_learns_darcy_and_evaluates_at_another_resolution(darcy16, tmp_path):
    train, test = darcy16
    summary = training.train(
        "mgno", data=train, test_data=test, out=tmp_path / "run", epochs=60, batch_size=8, lr=1e-2,
        model_config={"channels": 8, "n_layers": 2, "levels": 3}, progress=False, figures=False,
        num_threads=1, checkpoint_every=60,
    )
    # measured 0.087 (train 0.029); FNO with 4x4 modes, width 8 reaches 0.108 on the same data
    assert summary["test_loss"] < 0.12, summary
    fine = datasets.generate("darcy", n=4, resolution=32, seed=3, out=tmp_path / "d32.h5", progress=False)
    result = evaluation.evaluate(tmp_path / "run", data=[test, fine])
    errors = {d["resolution"]: d["rel_l2_mean"] for d in result["datasets"]}
    assert len(errors) == 2 and all(math.isfinite(e) for e in errors.values()), errors
    assert errors[result["datasets"][0]["resolution"]] == pytest.approx(summary["test_loss"], rel=1e-4)
