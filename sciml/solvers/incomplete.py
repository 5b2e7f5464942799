"""Incomplete Cholesky factorisation with zero fill, IC(0), the classical CG preconditioner.

``A ~ L L^T`` with ``L`` lower triangular on the sparsity pattern of ``tril(A)``, and
``(L L^T)_ij = A_ij`` on that pattern (Meijerink and van der Vorst, Math. Comp. 1977). scipy has
no incomplete Cholesky (``spilu`` is unsymmetric and, with a drop tolerance, failed as a CG
preconditioner here, see shared/TARGETS.md), hence this row-by-row kernel (0.23 s at 256^2).
"""

from __future__ import annotations

import math

import numpy as np
import scipy.sparse as sp

from ..errors import SciMLError


def triangular_solver(L: sp.csr_matrix):
    """``r -> (L L^T)^-1 r`` for a lower-triangular ``L`` with a positive diagonal.

    SuperLU factorises the triangular ``L`` without reordering or pivoting (``L = L' U'``, no
    fill) and its compiled forward/transposed solves then cost 2.4 ms per application at 256^2,
    against 23 ms for two ``scipy.sparse.linalg.spsolve_triangular`` calls.
    """
    import scipy.sparse.linalg as spla

    lu = spla.splu(L.tocsc(), permc_spec="NATURAL", diag_pivot_thresh=0.0, options={"SymmetricMode": True})
    identity = np.arange(L.shape[0])
    if not (np.array_equal(lu.perm_r, identity) and np.array_equal(lu.perm_c, identity)):
        Lt = L.T.tocsr()  # SuperLU reordered after all: solve the two triangles directly

        def solve_slow(r: np.ndarray) -> np.ndarray:
            return spla.spsolve_triangular(Lt, spla.spsolve_triangular(L, r, lower=True), lower=False)

        return solve_slow

    def solve(r: np.ndarray) -> np.ndarray:
        return lu.solve(lu.solve(r), trans="T")

    return solve


def ichol0(A: sp.spmatrix) -> sp.csr_matrix:
    """IC(0) factor ``L`` (CSR, lower triangular, sorted indices) of the SPD matrix ``A``.

    Row ``i``: ``L_ik = (A_ik - sum_{j<k} L_ij L_kj) / L_kk`` for ``k < i`` in the pattern (the sum
    over columns in both rows' patterns), ``L_ii = sqrt(A_ii - sum_{k<i} L_ik^2)``. Raises
    SciMLError when a pivot is not positive (IC(0) exists for M-matrices such as the Poisson,
    Darcy and ConDiff matrices, not for every SPD matrix).
    """
    low = sp.tril(sp.csr_matrix(A, dtype=np.float64)).tocsr()
    low.sum_duplicates()
    low.sort_indices()
    indptr, indices, data = low.indptr, low.indices, low.data.copy()
    n = low.shape[0]
    rows: list[dict[int, float]] = [{} for _ in range(n)]  # finished rows of L, column -> value
    diag = np.empty(n)
    for i in range(n):
        start, end = indptr[i], indptr[i + 1]
        if end == start or indices[end - 1] != i:
            raise SciMLError(f"ichol0: row {i} has no diagonal entry; IC(0) needs an SPD matrix with a full diagonal")
        row = rows[i]
        square = 0.0
        for p in range(start, end - 1):
            k = int(indices[p])
            rk = rows[k]
            s = data[p]
            # columns j < k present in both rows: row i's entries so far are exactly those
            for j, lij in row.items():
                lkj = rk.get(j)
                if lkj is not None:
                    s -= lij * lkj
            lik = s / diag[k]
            row[k] = lik
            data[p] = lik
            square += lik * lik
        pivot = data[end - 1] - square
        if not pivot > 0:
            raise SciMLError(
                f"ichol0: pivot {pivot:.3g} <= 0 at row {i}; the matrix is not SPD or IC(0) breaks down for it "
                "(use pcg-amg or direct)"
            )
        diag[i] = data[end - 1] = math.sqrt(pivot)
        row[i] = diag[i]
    return sp.csr_matrix((data, indices, indptr), shape=low.shape)
