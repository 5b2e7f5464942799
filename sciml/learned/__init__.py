"""Learned iterative solvers: DCDM, Convergent Graph Solvers (with their graph problems) and
neural preconditioners (a trained grid operator inside flexible CG/GMRES or HINTS).

Each registers its ``NAME:RUN`` solve methods into :func:`sciml.solvers.solve`, its trainer into
:func:`sciml.training.train` and its run kind into :func:`sciml.runs.load`.
"""
