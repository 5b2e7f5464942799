"""Local coefficient features of a structured-grid matrix, shared by the learned solvers.

A network that should see the PDE's coefficient (jumps, contrast, obstacles) gets it from the
matrix itself, without knowing which PDE made it: at every grid point ``p`` the symmetrically
scaled stencil

    F[k, p] = A[p, p + o_k] / sqrt(A[p, p] A[p + o_k, p + o_k]),   o_k in {-1, 0, 1}^d \\ {0},

i.e. the off-diagonal entries of ``D^-1/2 A D^-1/2`` (unit diagonal, so the centre is dropped).
The features are dimensionless (unchanged when ``A`` is scaled by a constant, so by ``h^-2`` or
the coefficient's mean), lie in ``[-1, 1]`` for a diagonally dominant M-matrix, are zero where
the stencil leaves the grid (the network sees the boundary) and where a row is decoupled (a
solid cell), and are defined on every level of a multigrid hierarchy (9-/27-point Galerkin
stencils) as on the finest (5-/7-point). At a jump of contrast ``c`` the coupling across it is
about ``2 / (1 + c)`` of the smooth value's, so contrast ``1e5`` is visible as a near-zero face.
"""

from __future__ import annotations

import itertools

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F

from ..solvers.multigrid import stencils


def _offsets(dim: int) -> list[tuple[int, ...]]:
    return list(itertools.product((-1, 0, 1), repeat=dim))


def feature_count(dim: int) -> int:
    """Channels of :func:`stencil_features` for a ``dim``-D grid (8 in 2-D, 26 in 3-D)."""
    return 3**dim - 1


def stencil_features(S: torch.Tensor) -> torch.Tensor:
    """``(B, 3^d - 1, *shape)`` features of stencils ``S`` ``(B, 3^d, *shape)`` (see the module
    docstring); same dtype and device as ``S``. Rows with a non-positive diagonal get zeros."""
    dim = S.dim() - 2
    shape = tuple(S.shape[2:])
    offs = _offsets(dim)
    centre = len(offs) // 2
    diag = S[:, centre]
    inv = torch.where(diag > 0, diag.clamp_min(torch.finfo(S.dtype).tiny).rsqrt(), torch.zeros_like(diag))
    pad = F.pad(inv, (1, 1) * dim)  # zero beyond the grid
    out = []
    for k, off in enumerate(offs):
        if k == centre:
            continue
        neighbour = pad[(slice(None),) + tuple(slice(1 + o, 1 + o + m) for o, m in zip(off, shape))]
        out.append(S[:, k] * inv * neighbour)
    return torch.stack(out, dim=1)


def matrix_features(A: sp.spmatrix, shape=None, dtype=torch.float32, device=None) -> torch.Tensor:
    """:func:`stencil_features` ``(3^d - 1, *shape)`` of one CSR matrix on its square or cube grid
    (or ``shape``), as ``dtype`` on ``device``."""
    S = stencils([sp.csr_matrix(A)], shape)
    return stencil_features(S)[0].to(dtype=dtype, device=device or "cpu")


def dense_features(A: np.ndarray | sp.spmatrix, shape) -> np.ndarray:
    """Slow reference of :func:`matrix_features` for tests: a loop over points and offsets."""
    A = sp.csr_matrix(A)
    shape = tuple(shape)
    dim = len(shape)
    offs = [o for o in _offsets(dim) if any(o)]
    d = A.diagonal()
    out = np.zeros((len(offs), *shape))
    for p in np.ndindex(*shape):
        i = np.ravel_multi_index(p, shape)
        for k, o in enumerate(offs):
            q = tuple(a + b for a, b in zip(p, o))
            if all(0 <= c < m for c, m in zip(q, shape)) and d[i] > 0:
                j = np.ravel_multi_index(q, shape)
                if d[j] > 0:
                    out[(k, *p)] = A[i, j] / np.sqrt(d[i] * d[j])
    return out
