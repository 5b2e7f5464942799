"""Second-order finite-difference operators on uniform grids of the unit square / cube.

Every operator here discretises ``-div(k grad u)`` with zero Dirichlet data on the
*interior* nodes of a uniform node grid, as a symmetric positive definite CSR matrix.
Unknowns are the interior nodal values ``u[i0, i1, ...]`` (axis 0 is ``x``) flattened in
C order, so ``u.reshape(-1)`` / ``x.reshape(shape)`` convert between grid and vector.

The same matrices are used by the dataset generators (ground truth), by ``sciml solve``
and by the learned solvers, so every comparison is made on identical systems.

Attributes
----------
ORDER : int
    Order of accuracy of every operator in this module (2): for smooth ``k`` and ``u`` the
    nodal error of the discrete solution is ``O(h^2)`` (LeVeque, *Finite Difference Methods
    for ODEs and PDEs*, 2007, sections 2.15 and 3.2). Checked in
    ``tests/test_discretisation.py`` by the observed log-log slope.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import scipy.sparse as sp

from ..errors import ConfigError

ORDER = 2


def _as_spacings(h: float | Sequence[float], dim: int) -> tuple[float, ...]:
    hs = (float(h),) * dim if np.isscalar(h) else tuple(float(v) for v in h)
    if len(hs) != dim or min(hs) <= 0:
        raise ConfigError(f"grid spacing must be {dim} positive numbers, got {h!r}")
    return hs


def diffusion_operator(faces: Sequence[np.ndarray], h: float | Sequence[float]) -> sp.csr_matrix:
    """Conservative ``(2d+1)``-point matrix of ``-div(k grad u)``, zero Dirichlet data.

    ``(A u)_p = sum_d [ k_{p+e_d/2} (u_p - u_{p+e_d}) + k_{p-e_d/2} (u_p - u_{p-e_d}) ] / h_d^2``
    where boundary neighbours are zero (eliminated). Second order (``ORDER``).

    Parameters
    ----------
    faces : one array per axis ``d``; ``faces[d]`` has the interior shape ``m`` except that
        axis ``d`` has ``m[d] + 1`` entries: ``faces[d][..., j, ...]`` is the coefficient on
        the face between interior node ``j - 1`` and ``j`` along ``d`` (``j = 0`` and
        ``j = m[d]`` are the faces to the boundary nodes).
    h : grid spacing, one number or one per axis.

    Returns
    -------
    scipy.sparse.csr_matrix of shape ``(prod(m), prod(m))``, float64, symmetric.
    """
    dim = len(faces)
    hs = _as_spacings(h, dim)
    shape = tuple(np.shape(faces[0])[e] - (1 if e == 0 else 0) for e in range(dim))
    for d, fd in enumerate(faces):
        want = tuple(m + (1 if e == d else 0) for e, m in enumerate(shape))
        if np.shape(fd) != want:
            raise ConfigError(f"face coefficients along axis {d} must have shape {want}, got {np.shape(fd)}")
    n = int(np.prod(shape))
    diag = np.zeros(shape)
    offsets, bands = [0], []
    stride = n
    for d, fd in enumerate(faces):
        fd = np.asarray(fd, dtype=np.float64) / hs[d] ** 2
        stride //= shape[d]
        lower = np.take(fd, np.arange(shape[d]), axis=d)
        upper = np.take(fd, np.arange(1, shape[d] + 1), axis=d)
        diag += lower + upper
        # coupling of node j to j+1 along d is the face j+1; the last node has no interior
        # neighbour, and its zero also blanks the C-order wrap-around entry of the band
        coupling = upper.copy()
        index = [slice(None)] * dim
        index[d] = -1
        coupling[tuple(index)] = 0.0
        band = -coupling.reshape(-1)[: n - stride]
        offsets += [stride, -stride]
        bands += [band, band]
    matrix = sp.diags([diag.reshape(-1), *bands], offsets, shape=(n, n), format="csr")
    matrix.eliminate_zeros()
    return matrix


def nodal_faces(a: np.ndarray) -> list[np.ndarray]:
    """Face coefficients as the arithmetic mean of the two adjacent nodal values.

    ``k_{i+1/2} = (a_i + a_{i+1}) / 2`` along each axis (the rule of the FNO Darcy solver,
    ``neuraloperator/neuraloperator:data_generation/darcy/solve_gwf.m``).

    Parameters
    ----------
    a : nodal coefficient on the full node grid, boundary included, shape ``(s0, s1, ...)``.

    Returns
    -------
    list of face arrays in the layout :func:`diffusion_operator` expects (interior shape
    ``s - 2``).
    """
    a = np.asarray(a, dtype=np.float64)
    dim = a.ndim
    faces = []
    for d in range(dim):
        # keep interior indices along the other axes, all nodes along d
        index = tuple(slice(None) if e == d else slice(1, -1) for e in range(dim))
        sub = a[index]
        lo = np.take(sub, np.arange(sub.shape[d] - 1), axis=d)
        hi = np.take(sub, np.arange(1, sub.shape[d]), axis=d)
        faces.append(0.5 * (lo + hi))
    return faces


def darcy_operator(a: np.ndarray) -> sp.csr_matrix:
    """Matrix of ``-div(a grad u)`` on the interior nodes of an ``s x s`` node grid.

    Nodes ``x_i = i / (s - 1)`` include the boundary, ``h = 1 / (s - 1)``; face coefficients
    are arithmetic means of nodal ``a`` (FNO Darcy protocol, see :func:`nodal_faces`);
    ``u = 0`` on the boundary. Second order (``ORDER``).

    Parameters
    ----------
    a : nodal coefficient, shape ``(s, s)`` (or ``(s, s, s)`` in 3-D), ``s >= 3``.

    Returns
    -------
    csr_matrix of shape ``((s-2)^d, (s-2)^d)``.
    """
    a = np.asarray(a)
    if a.ndim < 1 or min(a.shape) < 3:
        raise ConfigError(f"the coefficient grid needs at least 3 nodes per axis, got shape {a.shape}")
    hs = [1.0 / (s - 1) for s in a.shape]
    return diffusion_operator(nodal_faces(a), hs)


def laplacian(n: int, dim: int = 2) -> sp.csr_matrix:
    """Standard ``(2d+1)``-point matrix of ``-Laplace`` on ``n^dim`` interior nodes.

    Nodes ``x_i = (i + 1) / (n + 1)``, ``i = 0..n-1`` (ConDiff convention), scaled by
    ``(n + 1)^2``; zero Dirichlet data. Second order (``ORDER``).

    Returns
    -------
    csr_matrix of shape ``(n^dim, n^dim)``.
    """
    if n < 1 or dim < 1:
        raise ConfigError(f"a Laplacian needs n >= 1 interior nodes and dim >= 1, got n={n}, dim={dim}")
    faces = [np.ones(tuple(n + 1 if e == d else n for e in range(dim))) for d in range(dim)]
    return diffusion_operator(faces, 1.0 / (n + 1))


def interior(u: np.ndarray) -> np.ndarray:
    """The interior nodes of a node grid that includes the boundary (drops one layer)."""
    return u[(slice(1, -1),) * u.ndim]


def pad_boundary(u_interior: np.ndarray) -> np.ndarray:
    """Embed interior nodal values into the full node grid with zero boundary values."""
    return np.pad(u_interior, 1)
