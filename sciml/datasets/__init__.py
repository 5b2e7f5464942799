"""PDE dataset generators and the dataset file format.

>>> from sciml import datasets
>>> datasets.available()                      # ['darcy', 'poisson']
>>> path = datasets.generate("darcy", n=8, resolution=85, seed=0, out="darcy.h5")
>>> ds = datasets.open(path)                  # validated xarray.Dataset: a, u on (sample, x, y)
>>> print(datasets.format_summary(datasets.summary(path)))

Sample ``i`` of a file is a pure function of (config, seed, i). ``system`` returns the
sparse linear system of one sample (``system_from_file`` that of a stored one);
``reference_solve`` re-solves a stored sample with its classical solver (for timing
against learned models).
"""

from .format import open_dataset as open
from .generators import (
    Generator,
    LinearGenerator,
    available,
    compute_sample,
    config_class,
    create,
    generate,
    reference_solve,
    register,
    system,
    system_from_file,
)
from .summary import format_summary, summary

__all__ = [
    "Generator",
    "LinearGenerator",
    "available",
    "compute_sample",
    "config_class",
    "create",
    "format_summary",
    "generate",
    "open",
    "reference_solve",
    "register",
    "summary",
    "system",
    "system_from_file",
]
