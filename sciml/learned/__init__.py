"""Learned iterative solvers: DCDM, Convergent Graph Solvers (with their graph problems) and
neural preconditioners (a trained grid operator inside flexible CG/GMRES or HINTS).

Importing this package registers, into the registries of earlier layers, each solver's
``NAME:RUN`` solve methods (:func:`sciml.solvers.solve`), its trainer (:func:`sciml.training.train`)
and its run kind (:func:`sciml.runs.load`). The earlier layers find it through the
``sciml.plugins`` entry points (:func:`sciml.registry.load_plugins`), never by importing it.
"""

from . import cgs, dcdm, dcdm_mg, neural_precond, nmg

__all__ = ["cgs", "dcdm", "dcdm_mg", "neural_precond", "nmg"]
