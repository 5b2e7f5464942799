"""Importers: turn datasets in the formats users already hold into sciml dataset files.

>>> from sciml.datasets import importers
>>> importers.available()                      # ['condiff', 'fno-mat', 'neuralop', 'pdebench', 'the-well']
>>> importers.convert("fno-mat", "piececonst_r421_N1024_smooth1.mat", "darcy421.h5")

Formats: FNO ``.mat`` (v5 and v7.3; Darcy and Burgers), PDEBench HDF5 (2-D Darcy, 1-D
Burgers), ConDiff HDF5 (diffusion and Poisson), neuraloperator ``.pt`` dicts of tensors
(read memory-mapped with ``weights_only``), The Well's HDF5 files. Each importer reads its source a block of
samples at a time, puts the axes in sciml order (MATLAB v7.3 axes reversed back, ConDiff's
Fortran-ordered vectors reshaped), refuses NaN/Inf unless asked not to, and records the
source in the file's ``params``.
"""

from .base import IMPORTERS, Source
from .convert import convert

available = IMPORTERS.available

__all__ = ["Source", "available", "convert"]
