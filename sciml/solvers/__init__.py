"""Discretisations (sparse operators) and classical linear solvers.

>>> from sciml import solvers
>>> A = solvers.laplacian(31, dim=2)
>>> result = solvers.solve(A, b, method="pcg-amg", tol=1e-8)   # -> SolveResult

``available()`` lists the solve methods; unknown names raise ``UnknownNameError``.
"""

from .discretisation import ORDER, darcy_operator, diffusion_operator, laplacian, nodal_faces
from .linear import SolveResult, available, choose_method, register, relative_residual, solve

__all__ = [
    "ORDER",
    "SolveResult",
    "available",
    "choose_method",
    "darcy_operator",
    "diffusion_operator",
    "laplacian",
    "nodal_faces",
    "register",
    "relative_residual",
    "solve",
]
