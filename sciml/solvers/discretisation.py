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


def cell_faces(k: np.ndarray) -> list[np.ndarray]:
    """Face coefficients from cell-centred values: the mean of the cells adjacent to each edge.

    The nodes ``x_p = p h`` (``p = 0..n+1``) are the corners of the ``(n+1)^dim`` cells that
    carry ``k``. The edge from interior node ``p`` to ``p + e_d`` borders the ``2^(dim-1)``
    cells ``p - e_e`` / ``p`` along every other axis ``e``; its coefficient is their mean
    (in 2-D the arithmetic mean of the two cells on either side of the edge).

    Parameters
    ----------
    k : cell values, shape ``(n+1,) * dim``.

    Returns
    -------
    list of face arrays in the layout :func:`diffusion_operator` expects (interior shape ``n``).
    """
    k = np.asarray(k, dtype=np.float64)
    faces = []
    for d in range(k.ndim):
        face = k
        for e in range(k.ndim):
            if e != d:  # average the neighbouring cells across axis e (n+1 -> n entries)
                face = 0.5 * (np.take(face, np.arange(face.shape[e] - 1), axis=e)
                              + np.take(face, np.arange(1, face.shape[e]), axis=e))
        faces.append(face)
    return faces


def condiff_operator(k: np.ndarray) -> sp.csr_matrix:
    """ConDiff's finite-volume matrix of ``-div(k grad u)``, ``u = 0`` on the boundary.

    ``n x n`` unknowns at the interior nodes ``x_i = (i + 1) h``, ``h = 1 / (n + 1)``; ``k`` at
    the ``(n+1)^2`` cell centres ``(i + 1/2) h``. The coupling of two neighbouring unknowns is
    ``-(k_a + k_b) / 2 / h^2`` with ``k_a, k_b`` the two cells sharing their edge, and the
    diagonal ``(k_sw + k_se + k_nw + k_ne) / h^2``, the sum of the four surrounding cells,
    which is also the sum of the four edge coefficients (each cell borders two of the edges).
    This is ``fd_mtx2`` of Trifonov et al. 2024 (arXiv 2406.04709,
    ``condiff-dataset/ConDiff:condiff.py``) in C order. Second order (``ORDER``).

    Parameters
    ----------
    k : cell-centred coefficient, shape ``(n+1, n+1)`` (or ``(n+1,) * dim``), ``n >= 1``.

    Returns
    -------
    csr_matrix of shape ``(n^dim, n^dim)``, symmetric positive definite for ``k > 0``.
    """
    k = np.asarray(k)
    if k.ndim < 1 or min(k.shape) < 2 or len(set(k.shape)) != 1:
        raise ConfigError(f"the cell coefficient must be (n+1)^dim with n >= 1, got shape {k.shape}")
    return diffusion_operator(cell_faces(k), 1.0 / k.shape[0])


def masked_laplacian(solid: np.ndarray) -> sp.csr_matrix:
    """``(2d+1)``-point ``-Laplace`` on the fluid points of a grid with solid obstacles.

    Points ``x_i = (i + 1) h``, ``h = 1 / (n + 1)``, as :func:`laplacian`; ``solid`` marks the
    obstacle points. A fluid row couples to its fluid neighbours with ``-1 / h^2``, counts
    ``1 / h^2`` on the diagonal per fluid neighbour and per domain-boundary neighbour
    (``p = 0`` there, Dirichlet) and nothing for a solid neighbour (zero flux across the
    fluid-solid face: the MAC pressure Poisson matrix). A solid row is the decoupled
    equation ``(2d / h^2) p = 0``: it keeps the unknown vector on the whole grid and adds
    the eigenvalue ``2d / h^2``, which lies inside the fluid spectrum ``(0, 4d / h^2)``.
    Without solids this is :func:`laplacian`. Second order (``ORDER``) away from obstacles;
    at a face midway between a fluid and a solid point the no-flux condition is the
    standard second-order cell-centred one.

    Parameters
    ----------
    solid : boolean array of shape ``(n,) * dim``.

    Returns
    -------
    csr_matrix of shape ``(n^dim, n^dim)``, symmetric; positive definite when every fluid
    region touches the domain boundary.
    """
    solid = np.asarray(solid, dtype=bool)
    if solid.ndim < 1 or min(solid.shape) < 1:
        raise ConfigError(f"the solid mask must be a non-empty grid, got shape {solid.shape}")
    fluid = ~solid
    faces = []
    for d in range(solid.ndim):
        # a face conducts when both sides are fluid; the outside of the domain counts as fluid
        edge = np.ones_like(np.take(fluid, [0], axis=d))
        padded = np.concatenate([edge, fluid, edge], axis=d)
        n_d = padded.shape[d]
        faces.append((np.take(padded, np.arange(n_d - 1), axis=d) & np.take(padded, np.arange(1, n_d), axis=d))
                     .astype(np.float64))
    hs = [1.0 / (m + 1) for m in solid.shape]
    A = diffusion_operator(faces, hs)
    return (A + sp.diags(solid.reshape(-1) * sum(2.0 / h**2 for h in hs))).tocsr()
