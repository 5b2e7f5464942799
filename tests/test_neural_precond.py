"""Neural preconditioners: stencil features, the energy loss, training, and the fcg/fgmres/hints solves."""

import json

import numpy as np
import pytest
import scipy.sparse as sp
import scipy.sparse.linalg as spla
import torch

from sciml import datasets, solvers
from sciml.errors import ConfigError, DataError
from sciml.solvers import discretisation
from sciml.learned.neural_precond import (
    torch_csr,
    energy_loss,
    face_features,
    neural_solve,
    residual_like,
    residual_loss,
    stencil,
    stencil_apply,
    train_preconditioner,
)
from test_cli import assert_one_line_error, run_cli

pytestmark = pytest.mark.usefixtures("one_thread")


def _matrices():
    rng = np.random.default_rng(0)
    a = np.where(rng.standard_normal((12, 12)) > 0, 12.0, 3.0)
    k = np.exp(rng.standard_normal((11, 11)))
    return [
        (discretisation.darcy_operator(a), (10, 10)),
        (discretisation.condiff_operator(k), (10, 10)),
        (solvers.laplacian(6, dim=3), (6, 6, 6)),
    ]


@pytest.mark.parametrize("case", range(3))
def test_stencil_apply_is_the_matrix(case):
    A, shape = _matrices()[case]
    diag, off = stencil(A, shape)
    z = np.random.default_rng(1).standard_normal((3, A.shape[0]))
    ours = stencil_apply(torch.from_numpy(np.broadcast_to(diag, (3, *shape)).copy()),
                         torch.from_numpy(np.broadcast_to(off, (3, *off.shape)).copy()),
                         torch.from_numpy(z.reshape(3, *shape)))
    assert np.allclose(ours.numpy().reshape(3, -1), (A @ z.T).T, rtol=1e-12, atol=1e-9)


def test_stencil_rejects_other_couplings():
    A = solvers.laplacian(8, dim=2).tolil()
    A[0, 7] = -1.0  # a periodic wrap along x
    with pytest.raises(DataError, match="5-point stencil"):
        stencil(A.tocsr(), (8, 8))
    with pytest.raises(DataError, match="unknowns"):
        stencil(solvers.laplacian(8, dim=2), (9, 9))


def test_face_features_recover_the_coefficient():
    # constant coefficient: every face (boundary faces from the diagonal) is the same
    assert np.abs(face_features(*stencil(solvers.laplacian(9, dim=2) * 7.0, (9, 9)))).max() < 1e-6
    # ConDiff: the x-faces of a node are the cell-face coefficients of the discretisation (up to
    # the one constant that centring removes), independent of the grid's 1/h^2 and of A's scale
    k = np.exp(np.random.default_rng(2).standard_normal((9, 9)))
    A = discretisation.condiff_operator(k)
    f1, f2 = face_features(*stencil(A, (8, 8))), face_features(*stencil(A * 1e-3, (8, 8)))
    assert np.allclose(f1, f2, atol=1e-5)
    logx = np.log(discretisation.cell_faces(k)[0])  # x-faces, (n + 1, n)
    towards_next = f1[0][:-1] - logx[1:-1]  # interior nodes that have a neighbour at i + 1
    towards_prev = f1[1][1:] - logx[1:-1]
    assert np.ptp(towards_next) < 1e-5 and np.ptp(towards_prev) < 1e-5
    assert towards_next.mean() == pytest.approx(towards_prev.mean(), abs=1e-5)
    # boundary faces come back from the diagonal: the face to x = 0 of the first row of nodes
    # (corners, with two boundary faces, get their mean)
    assert np.allclose(f1[1][0, 1:-1] - towards_prev.mean(), logx[0, 1:-1], atol=1e-5)


def test_energy_and_residual_losses():
    A, shape = _matrices()[1]
    diag, off = (torch.from_numpy(t).unsqueeze(0) for t in stencil(A, shape))
    r = np.random.default_rng(3).standard_normal(A.shape[0])
    e = spla.spsolve(A.tocsc(), r)
    rt = torch.from_numpy(r.reshape(1, *shape))
    rar = torch.tensor([r @ e])
    for scale in (1.0, -3.0, 1e-4):  # the exact inverse, at any scale, leaves nothing
        z = torch.from_numpy(scale * e.reshape(1, *shape))
        assert float(energy_loss(diag, off, rt, z, rar)) == pytest.approx(0.0, abs=1e-10)
        assert float(residual_loss(diag, off, rt, z)) == pytest.approx(0.0, abs=1e-10)
    # z = r: steepest descent's energy reduction, 1 - (r.r)^2 / ((r.Ar)(r.A^-1 r))
    expected = 1 - (r @ r) ** 2 / ((r @ (A @ r)) * (r @ e))
    assert float(energy_loss(diag, off, rt, rt, rar)) == pytest.approx(expected, rel=1e-10)
    Ar = A @ r
    assert float(residual_loss(diag, off, rt, rt)) == pytest.approx(1 - (Ar @ r) ** 2 / ((Ar @ Ar) * (r @ r)), rel=1e-10)


def test_residual_like_vectors_range_from_white_to_smooth():
    shape = (32, 32)
    white = residual_like(np.random.default_rng(0), shape, 20, (0.0, 0.0))
    smooth = residual_like(np.random.default_rng(0), shape, 20, (1.0, 1.0))
    assert np.allclose(np.sqrt(np.mean(white**2, axis=1)), 1.0)
    assert np.allclose(np.sqrt(np.mean(smooth**2, axis=1)), 1.0)
    # smoothness by the mean squared difference of neighbours: white noise ~2, Laplace^-1 noise ~0.1
    def roughness(v):
        g = v.reshape(-1, *shape)
        return float(np.mean(np.diff(g, axis=1) ** 2))
    assert roughness(white) == pytest.approx(2.0, rel=0.1)
    assert roughness(smooth) < 0.1 * roughness(white)  # measured 0.094 vs 2.0
    again = residual_like(np.random.default_rng(0), shape, 20, (0.0, 0.0))
    assert np.array_equal(white, again)


@pytest.fixture(scope="module")
def darcy_files(tmp_path_factory):
    root = tmp_path_factory.mktemp("precond")
    train = root / "darcy34.h5"
    datasets.generate("darcy", n=24, resolution=34, seed=0, out=train, progress=False)
    return root, train


@pytest.fixture(scope="module")
def trained(darcy_files):
    root, train = darcy_files
    torch.set_num_threads(1)
    out = root / "run_mgno"
    result = train_preconditioner("mgno", train, out, progress=False, epochs=6, rhs_per_system=8,
                                  model_config={"levels": 4, "channels": 12, "n_layers": 2})
    return out, result


def test_training_lowers_the_energy_loss(trained):
    out, result = trained
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 6 and rows[-1]["epoch"] == 6
    # one line search along z = A^-1 r leaves no energy error; z = r (untrained) leaves ~0.9
    assert rows[0]["val_loss"] > 0.3
    assert rows[-1]["val_loss"] < 0.5 * rows[0]["val_loss"]
    meta = json.loads((out / "run.json").read_text())
    assert meta["kind"] == "precond" and meta["model"] == "mgno" and meta["shape"] == [32, 32] and meta["epoch"] == 6


def test_neural_solves_beat_ic_and_transfer_to_a_finer_grid(trained):
    out, _ = trained
    for resolution in (34, 66):  # trained at 32^2 unknowns, used at 32^2 and 64^2 on unseen coefficients
        A, b, _ = datasets.system("darcy", resolution=resolution, seed=9)
        ic = solvers.solve(A, b, method="pcg-ic", tol=1e-8)
        hints = solvers.solve(A, b, method=f"hints:{out}", tol=1e-8)
        assert hints.converged and hints.residual <= 1e-8 and hints.notes == ()
        assert hints.iterations < 0.6 * ic.iterations, (resolution, hints.iterations, ic.iterations)
        cg = solvers.solve(A, b, method="cg", tol=1e-8)
        for method in ("fcg", "fgmres"):  # the network alone: far better than no preconditioner
            res = solvers.solve(A, b, method=f"{method}:{out}", tol=1e-8)
            assert res.converged and res.residual <= 1e-8
            assert res.iterations < 0.4 * cg.iterations, (method, resolution, res.iterations, cg.iterations)
        assert np.allclose(hints.x, spla.spsolve(A.tocsc(), b), rtol=1e-5, atol=1e-7 * np.abs(hints.x).max())


def test_torch_backend_matches_the_numpy_backend(trained):
    """The device-resident iteration (torch vectors, sparse CSR, red-black Gauss-Seidel) on the CPU:
    same solution, the same iterations for the network alone (+-1), and red-black HINTS within a
    few iterations of lexicographic HINTS; a NaN network still falls back to AMG and converges."""
    out, _ = trained
    A, b, _ = datasets.system("darcy", resolution=50, seed=4)
    exact = spla.spsolve(A.tocsc(), b)
    for method in ("fcg", "fgmres", "hints"):
        host = neural_solve(A, b, out, method, tol=1e-8, backend="numpy")
        dev = neural_solve(A, b, out, method, tol=1e-8, backend="torch")
        assert isinstance(dev.x, np.ndarray) and dev.converged and dev.residual <= 1e-8, (method, dev.notes)
        assert np.linalg.norm(dev.x - exact) <= 1e-6 * np.linalg.norm(exact)
        slack = 1 if method != "hints" else max(2, host.iterations // 4)
        assert abs(dev.iterations - host.iterations) <= slack, (method, dev.iterations, host.iterations)
        assert dev.notes == () and host.notes == ()
    from sciml.solvers.flexible import fcg

    bt = torch.from_numpy(b)
    broken = fcg(torch_csr(A, "cpu"), bt, lambda r: r * float("nan"), tol=1e-8, host=sp.csr_matrix(A))
    assert broken.converged and broken.residual <= 1e-8 and "non-finite" in broken.notes[0]


def test_torch_backend_red_black_sweeps_are_gauss_seidel():
    """One red-black sweep pair equals scipy's triangular solve in the red-black ordering."""
    import torch

    from sciml.learned.neural_precond import HybridPreconditioner

    A, b, _ = datasets.system("darcy", resolution=12, seed=1)
    A = sp.csr_matrix(A)
    shape = (10, 10)

    class _Grid:  # the hybrid preconditioner reads the grid shape off its network
        pass

    net = _Grid()
    net.shape = shape
    hybrid = HybridPreconditioner(A, net, 1, "cpu")
    r = np.random.default_rng(0).standard_normal(A.shape[0])
    z = hybrid._sweep(torch.zeros(A.shape[0], dtype=torch.float64), torch.from_numpy(r), (0, 1)).numpy()
    order = np.argsort((np.indices(shape).sum(axis=0) % 2).reshape(-1), kind="stable")  # red first
    P = A[order][:, order]
    lower = sp.tril(P, format="csr")
    expected = np.empty_like(r)
    expected[order] = spla.spsolve_triangular(lower, r[order], lower=True)
    assert np.allclose(z, expected, rtol=1e-12, atol=1e-12)


def test_a_mismatched_network_still_converges(trained):
    """A Darcy-trained network on a high-contrast ConDiff matrix: falls back if it must, converges."""
    out, _ = trained
    A, b, _ = datasets.system("condiff", resolution=48, seed=0, variance=2.0)
    for method in ("fcg", "fgmres", "hints"):
        res = neural_solve(A, b, out, method, tol=1e-8)
        assert res.converged and res.residual <= 1e-8, (method, res.notes)


def test_fno_and_unet_train_as_preconditioners(darcy_files):
    _, train = darcy_files
    root = train.parent
    for model, cfg in (("fno", {"modes": 8, "width": 16, "n_layers": 3, "projection": 32, "padding": 4}),
                       ("unet", {"depth": 2, "width": 8})):
        out = root / f"run_{model}"
        result = train_preconditioner(model, train, out, progress=False, epochs=15, lr=3e-3, model_config=cfg, n_train=12)
        rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
        assert result["val_loss"] < 0.7 * rows[0]["val_loss"], (model, rows[0]["val_loss"], result["val_loss"])
        A, b, _ = datasets.system("darcy", resolution=34, seed=9)
        res = solvers.solve(A, b, method=f"hints:{out}", tol=1e-8)
        assert res.converged and res.iterations < solvers.solve(A, b, method="pcg-ic", tol=1e-8).iterations


def test_bad_uses(trained, darcy_files, tmp_path):
    out, _ = trained
    _, train = darcy_files
    with pytest.raises(DataError, match="trained on 2-D"):
        neural_solve(solvers.laplacian(8, dim=3), np.ones(512), out)
    rect = sp.kronsum(solvers.laplacian(6, dim=1), solvers.laplacian(7, dim=1)).tocsr()  # a 7 x 6 grid
    with pytest.raises(DataError, match="square/cubic grid"):
        neural_solve(rect, np.ones(42), out)
    with pytest.raises(ConfigError, match="already holds a run"):
        train_preconditioner("mgno", train, out, progress=False, epochs=1)
    with pytest.raises(ConfigError, match="grid operator"):
        train_preconditioner("deeponet", train, tmp_path / "x", progress=False, epochs=1)
    with pytest.raises(ConfigError, match="smoothness"):
        train_preconditioner("fno", train, tmp_path / "y", progress=False, smoothness=[0.5, 3.0])


def test_cli_train_and_solve(darcy_files, tmp_path, capsys):
    _, train = darcy_files
    run = tmp_path / "cli_run"
    code, out, err = run_cli(["train", "fno", "--task", "precond", "--data", train, "--out", run, "--epochs", "1",
                              "--n-train", "4", "--set", "modes=6", "--set", "width=8", "--set", "n_layers=1",
                              "--set", "projection=8", "--no-progress"], capsys)
    assert code == 0, err
    assert "preconditioner" in out and f"hints:{run}" in out
    code, out, err = run_cli(["solve", "--data", train, "--index", "3", "--method",
                              f"pcg-ic,hints:{run},fcg:{run},fgmres:{run}"], capsys)
    assert code == 0, err
    for name in (f"hints:{run}", f"fcg:{run}", f"fgmres:{run}"):
        assert name in out
    assert out.count("yes") >= 4  # every method converged

    code, _, err = run_cli(["train", "fno", "--task", "precond", "--out", tmp_path / "z"], capsys)
    assert_one_line_error(code, err, "--data is required")
    code, _, err = run_cli(["train", "fno", "--task", "precond", "--data", train, "--out", tmp_path / "w",
                            "--option", "los=energy"], capsys)
    assert_one_line_error(code, err, "los", "loss")
    code, _, err = run_cli(["evaluate", run], capsys)
    assert_one_line_error(code, err, "neural preconditioner", f"hints:{run}")
    code, _, err = run_cli(["solve", "darcy", "-s", "10", "--method", "hints:" + str(tmp_path / "none")], capsys)
    assert_one_line_error(code, err, "not a run directory")
