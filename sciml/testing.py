"""Reusable assertions for numerical tests: convergence orders, residuals, solver agreement.

Each assertion says what it measured when it fails, so a failing CI log shows the number
(an observed order of 1.3 says more than ``assert False``).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import scipy.sparse as sp

from .solvers.linear import relative_residual

__all__ = ["assert_convergence_order", "assert_monotone_ish", "assert_small_residual", "observed_order",
           "relative_residual"]


def observed_order(hs: Sequence[float], errors: Sequence[float]) -> float:
    """Least-squares slope of ``log(error)`` against ``log(h)`` (the observed order)."""
    hs, errors = np.asarray(hs, dtype=float), np.asarray(errors, dtype=float)
    if hs.shape != errors.shape or hs.size < 2:
        raise ValueError(f"need at least two (h, error) pairs of equal length, got {hs.size} and {errors.size}")
    if np.any(hs <= 0) or np.any(errors <= 0):
        raise ValueError(f"h and errors must be positive for a log-log fit, got h={hs}, errors={errors}")
    slope, _ = np.polyfit(np.log(hs), np.log(errors), 1)
    return float(slope)


def assert_convergence_order(hs: Sequence[float], errors: Sequence[float], order: float, tol: float = 0.15) -> float:
    """Assert the observed order ``|slope - order| <= tol``; returns the slope.

    On failure the message lists the slope, every ``(h, error)`` pair and the pairwise
    orders ``log(e_i / e_{i+1}) / log(h_i / h_{i+1})``.
    """
    slope = observed_order(hs, errors)
    if abs(slope - order) > tol:
        h, e = np.asarray(hs, dtype=float), np.asarray(errors, dtype=float)
        local = np.log(e[:-1] / e[1:]) / np.log(h[:-1] / h[1:])
        pairs = ", ".join(f"h={a:.4g}: {b:.3e}" for a, b in zip(h, e))
        raise AssertionError(
            f"observed order {slope:.3f}, expected {order} +- {tol}; errors {pairs}; "
            f"pairwise orders {np.array2string(local, precision=3)}"
        )
    return slope


def assert_small_residual(A: sp.spmatrix, x: np.ndarray, b: np.ndarray, tol: float) -> float:
    """Assert ``||b - A x|| / ||b|| <= tol`` (float64); returns the relative residual."""
    r = relative_residual(A, x, b)
    if not r <= tol:
        raise AssertionError(f"relative residual {r:.3e} exceeds {tol:.1e}")
    return r


def assert_monotone_ish(history: Sequence[float], growth: float = 10.0) -> None:
    """Assert a residual history ends below its start and never rises above ``growth``
    times its running minimum.

    CG residual norms are not monotone (only the A-norm of the error is), so a strict check
    would be wrong; bounded oscillation around a decreasing trend is what to expect.
    """
    h = np.asarray(history, dtype=float)
    if h.size < 2:
        return
    worst = float(np.max(h / np.maximum(np.minimum.accumulate(h), np.finfo(float).tiny)))
    if worst > growth:
        raise AssertionError(f"residual jumped to {worst:.3g} times its running minimum (limit {growth})")
    if not h[-1] < h[0]:
        raise AssertionError(f"residual did not decrease: first {h[0]:.3e}, last {h[-1]:.3e}")
