"""Samples for training and evaluation: cached in memory when they fit, else streamed from the file.

A :class:`Samples` is a range of a dataset's samples as grid tensors ``(B, C, *S)``. Two kinds:

- :class:`MemorySamples`: the whole range read once into float32 tensors (what training always did);
- :class:`FileSamples`: nothing held; every batch is read from the HDF5 file when it is needed, by
  the worker processes of a torch ``DataLoader`` (each opens the file itself), a few batches ahead.

:func:`open_samples` picks the kind from a memory budget (``cache_gb``; by default a quarter of
the machine's memory, shared by the processes of a data-parallel run on it). Both kinds give the
same tensors for the same indices, the epoch order (:func:`epoch_order`) and the normaliser fit
(:func:`fit_normaliser`) do not depend on the kind, so a run gives bit-identical weights either way.

Our files hold one sample per HDF5 chunk, so reading any sample is chunk-aligned. For files
chunked along the sample axis in blocks (imported ones), :func:`epoch_order` shuffles the blocks
and then the samples within windows of a few blocks, so a batch touches few chunks.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import math
import os
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import h5py
import numpy as np
import torch

from ..datasets.format import open_dataset, reading
from ..errors import DataError
from .data import DatasetSignature, GridData, _count, _layout, _signature, _stack, load_grid_data
from .normalisers import DataNormaliser, normaliser_class

#: fraction of the machine's memory the cached samples of one machine may take by default
CACHE_FRACTION = 0.25
#: samples per chunk of a streaming pass (normaliser fit)
PASS_CHUNK = 256


def memory_bytes() -> int:
    """Physical memory of this machine (bytes); 8 GiB when the system does not say."""
    try:
        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):  # pragma: no cover - non-POSIX
        return 8 << 30


def cache_budget(cache_gb: float | None, processes: int = 1) -> int:
    """Bytes of samples one process may cache: ``cache_gb`` GiB, or by default
    ``CACHE_FRACTION`` of the memory shared by the ``processes`` of this machine."""
    if cache_gb is not None:
        return int(float(cache_gb) * (1 << 30))
    return int(CACHE_FRACTION * memory_bytes() / max(1, processes))


def default_workers() -> int:
    """Loader worker processes when streaming: a quarter of the CPUs, at most 4; none (read in the
    training process) on a machine of 2 CPUs or fewer, where a worker only takes a core from the
    training step (reading a batch costs ~1 % of a CPU step there; see benchmarks/memory.py)."""
    cpus = os.cpu_count() or 2
    return 0 if cpus <= 2 else max(1, min(4, cpus // 4))


class Samples(ABC):
    """A range of a dataset's samples; ``read(idx)`` gives ``(x, y)`` float32 in the order of ``idx``."""

    signature: DatasetSignature
    path: Path
    coords: dict
    block: int = 1  # samples per HDF5 chunk along the sample axis

    @abstractmethod
    def __len__(self) -> int: ...

    @abstractmethod
    def read(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]: ...

    @abstractmethod
    def subset(self, start: int, stop: int) -> "Samples": ...

    @property
    def cached(self) -> bool:
        return isinstance(self, MemorySamples)


class MemorySamples(Samples):
    """Samples held as tensors (a :class:`GridData`)."""

    def __init__(self, data: GridData, block: int = 1):
        self.data, self.block = data, int(block)
        self.signature, self.path, self.coords = data.signature, data.path, data.coords

    def __len__(self) -> int:
        return len(self.data)

    def read(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        idx = idx.to(self.data.x.device)
        return self.data.x[idx], self.data.y[idx]

    def subset(self, start: int, stop: int) -> "MemorySamples":
        return MemorySamples(self.data.subset(start, stop), self.block)

    def to(self, device: torch.device) -> "MemorySamples":
        return MemorySamples(GridData(self.data.x.to(device), self.data.y.to(device), self.signature, self.path,
                                      self.coords), self.block)

    @property
    def x(self) -> torch.Tensor:
        return self.data.x

    @property
    def y(self) -> torch.Tensor:
        return self.data.y


class FileSamples(Samples, torch.utils.data.Dataset):
    """Samples ``[start, stop)`` of the file at ``path``, read on demand. Picklable: each process
    (a loader worker) opens the file on its first read."""

    def __init__(self, path: Path, start: int, stop: int, signature: DatasetSignature, coords: dict, block: int):
        self.path, self.start, self.stop = Path(path), int(start), int(stop)
        self.signature, self.coords, self.block = signature, coords, int(block)
        self._ds = None
        self._pid = None
        self._direct = None

    def __len__(self) -> int:
        return self.stop - self.start

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_ds": None, "_pid": None, "_direct": None}

    def _dataset(self):
        if self._ds is None or self._pid != os.getpid():
            self._ds, self._pid = open_dataset(self.path), os.getpid()
            self._direct = _direct_reader(self._ds, self.path)
        return self._ds

    def read(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        idx = np.asarray(idx.cpu() if isinstance(idx, torch.Tensor) else idx, dtype=np.int64).reshape(-1)
        if idx.size and (idx.min() < 0 or idx.max() >= len(self)):
            raise IndexError(f"sample index out of range [0, {len(self)})")
        order = np.argsort(idx, kind="stable")
        ds = self._dataset()
        sel = idx[order] + self.start  # increasing: HDF5 reads them in one pass
        with reading(self.path):
            if self._direct is not None:
                x, y = self._direct(sel)
            else:
                inputs, outputs, dims = _layout(ds, self.path)
                x = _stack(ds, inputs, dims, sel, self.path)
                y = _stack(ds, outputs, dims, sel, self.path)
        back = np.empty_like(order)
        back[order] = np.arange(order.size)
        return torch.from_numpy(np.ascontiguousarray(x[back])), torch.from_numpy(np.ascontiguousarray(y[back]))

    __getitem__ = read  # the loader hands each worker one batch's indices

    def subset(self, start: int, stop: int) -> "FileSamples":
        return FileSamples(self.path, self.start + start, self.start + stop, self.signature, self.coords, self.block)

    def close(self) -> None:
        if self._ds is not None:
            self._ds.close()
            self._ds = None


def _direct_reader(ds, path: Path):
    """A reader of sample rows straight from the HDF5 datasets (h5py), for files whose every input
    and output variable is stored on ``(sample, *grid)`` with no encoding to decode, or None (then
    the xarray path, which also transposes, stacks extra axes and interpolates staggered fields).
    xarray's per-read indexing cost ~0.7 ms per sample; this path reads chunk by chunk."""
    inputs, outputs, dims = _layout(ds, path)
    for name in (*inputs, *outputs):
        var = ds[name]
        if tuple(var.dims) != ("sample", *dims) or any(k in var.encoding for k in ("_FillValue", "scale_factor", "add_offset")):
            return None
        if "missing_value" in var.attrs:
            return None
    handle = h5py.File(path, "r")
    sets = [[handle[name] for name in names] for names in (inputs, outputs)]
    shape = tuple(int(ds.sizes[d]) for d in dims)

    def read(sel: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        out = [np.empty((sel.size, len(group), *shape), dtype=np.float32) for group in sets]
        # runs of consecutive indices are one read each
        cuts = np.flatnonzero(np.diff(sel) != 1) + 1
        for run in np.split(np.arange(sel.size), cuts):
            if not run.size:
                continue
            lo, hi = int(sel[run[0]]), int(sel[run[-1]]) + 1
            for arr, group in zip(out, sets):
                for c, dset in enumerate(group):
                    arr[run[0]:run[-1] + 1, c] = dset[lo:hi]
        return out[0], out[1]

    return read


def _sample_block(ds) -> int:
    """Samples per HDF5 chunk along the sample axis of the first input (1 when unchunked)."""
    name = str(ds.attrs["inputs"]).split()[0]
    chunks = ds[name].encoding.get("chunksizes") or ds[name].encoding.get("chunks")
    if not chunks:
        return 1
    axis = list(ds[name].dims).index("sample")
    return max(1, int(chunks[axis]))


def open_samples(path: str | Path, n: int | None = None, *, cache_gb: float | None = None, processes: int = 1,
                 clip: bool = False) -> Samples:
    """The first ``n`` samples (all when None) of ``path``: cached when their float32 tensors fit in
    :func:`cache_budget`, else streamed. Raises DataError as :func:`load_grid_data` does."""
    path = Path(path)
    ds = open_dataset(path)
    try:
        with reading(path):
            count = _count(ds, path, n, clip)
            inputs, outputs, dims = _layout(ds, path)
            x = _stack(ds, inputs, dims, 1, path)
            y = _stack(ds, outputs, dims, 1, path)
            signature, coords = _signature(ds, inputs, outputs, dims, x.shape, y.shape)
            block = _sample_block(ds)
    finally:
        ds.close()
    nbytes = count * (x.nbytes + y.nbytes)
    if nbytes <= cache_budget(cache_gb, processes):
        return MemorySamples(load_grid_data(path, count), block)
    return FileSamples(path, 0, count, signature, coords, block)


def as_samples(data: GridData | Samples) -> Samples:
    return data if isinstance(data, Samples) else MemorySamples(data)


# ----------------------------------------------------------------------------- epoch order


def epoch_order(n: int, generator: torch.Generator, block: int = 1, batch_size: int = 1) -> torch.Tensor:
    """The shuffled sample order of an epoch, from ``generator`` alone.

    With ``block == 1`` (our files: a chunk per sample) this is ``torch.randperm(n)``. With larger
    blocks the blocks are shuffled, then the samples inside consecutive windows of blocks holding at
    least four batches, so a batch reads a few chunks and still mixes samples of several.
    """
    if block <= 1:
        return torch.randperm(n, generator=generator)
    blocks = torch.randperm(math.ceil(n / block), generator=generator).tolist()
    per_window = max(1, math.ceil(4 * batch_size / block))
    parts = []
    for i in range(0, len(blocks), per_window):
        part = torch.cat([torch.arange(b * block, min((b + 1) * block, n)) for b in blocks[i:i + per_window]])
        parts.append(part[torch.randperm(part.numel(), generator=generator)])
    return torch.cat(parts)


# ----------------------------------------------------------------------------- reading batches


def iterate(samples: Samples, batches: Sequence[torch.Tensor], workers: int | None = None,
            prefetch: int = 4) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """``(x, y)`` of each index tensor in ``batches``, in order. Cached samples are indexed directly;
    streamed ones are read by ``workers`` processes (:func:`default_workers` when None; 0 reads in
    this process), ``prefetch`` batches ahead each."""
    if isinstance(samples, MemorySamples):
        for idx in batches:
            yield samples.read(idx)
        return
    workers = default_workers() if workers is None else int(workers)
    if workers <= 0 or len(batches) <= 1:
        source = (samples.read(idx) for idx in batches)
    else:
        source = torch.utils.data.DataLoader(
            samples, batch_size=None, sampler=list(batches), num_workers=min(workers, len(batches)),
            prefetch_factor=prefetch, persistent_workers=False,
            generator=torch.Generator(),  # its own seed draw: the global RNG (dropout, ...) is left alone
        )
    for k, item in enumerate(source, 1):
        yield item
        if k % TRIM_EVERY == 0:
            release_freed_memory()


#: batches between two :func:`release_freed_memory` calls in a streamed pass
TRIM_EVERY = 32
_LIBC: list = []


def release_freed_memory() -> None:
    """Give the heap memory freed by past batches back to the system (glibc's ``malloc_trim``).

    glibc raises its mmap threshold after the first large frees, so later batch-sized tensors come
    from the heap; freed, they stay mapped and a long streamed pass grows without bound (measured:
    ``sciml evaluate`` over 20,000 samples at 128^2 reached 13 GB, all of it returned by one
    ``malloc_trim``). A no-op where the C library has no ``malloc_trim``."""
    if not _LIBC:
        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
            _LIBC.append(libc.malloc_trim)
        except (OSError, AttributeError):
            _LIBC.append(None)
    if _LIBC[0] is not None:
        _LIBC[0](0)


def ranges(n: int, batch_size: int, start: int = 0, stop: int | None = None) -> list[torch.Tensor]:
    """Contiguous index batches covering ``[start, stop)`` of ``n`` samples."""
    stop = n if stop is None else stop
    return [torch.arange(i, min(i + batch_size, stop)) for i in range(start, stop, batch_size)]


# ----------------------------------------------------------------------------- normalisers


@dataclass
class _Moments:
    """Count, mean and sum of squared deviations (float64), combined chunk by chunk (Chan et al.)."""

    count: int = 0
    mean: torch.Tensor | None = None
    m2: torch.Tensor | None = None

    def add(self, x: torch.Tensor, reduce_dims: tuple[int, ...]) -> None:
        x = x.double()
        count = math.prod(x.shape[d] for d in reduce_dims)
        if count == 0:
            return
        mean = x.mean(dim=reduce_dims, keepdim=True)
        m2 = ((x - mean) ** 2).sum(dim=reduce_dims, keepdim=True)
        mean, m2 = mean.squeeze(0), m2.squeeze(0)
        if self.mean is None:
            self.count, self.mean, self.m2 = count, mean, m2
            return
        total = self.count + count
        delta = mean - self.mean
        self.mean = self.mean + delta * (count / total)
        self.m2 = self.m2 + m2 + delta ** 2 * (self.count * count / total)
        self.count = total

    def std(self) -> torch.Tensor:
        if self.count < 2:
            raise DataError(f"cannot fit a normaliser on {self.count} value(s); use at least 2 training samples")
        return torch.sqrt(self.m2 / (self.count - 1))


def fit_normaliser(kind: str, samples: Samples | GridData, workers: int | None = None,
                   chunk: int = PASS_CHUNK) -> DataNormaliser:
    """Fit the ``kind`` normaliser in one pass over ``samples`` in chunks of ``chunk`` samples, with
    float64 accumulators combined chunk by chunk; the same numbers for cached and streamed samples."""
    cls = normaliser_class(kind)
    if kind == "none":
        return DataNormaliser.fit(kind, torch.zeros(2, 1), torch.zeros(2, 1))
    samples = as_samples(samples)
    stats = [_Moments(), _Moments()]
    dims = None
    for x, y in iterate(samples, ranges(len(samples), chunk), workers):
        for st, t in zip(stats, (x, y)):
            dims = (0,) if kind == "pointwise" else tuple(d for d in range(t.dim()) if d != 1)
            st.add(t, dims)
    if stats[0].mean is None:
        raise DataError("cannot fit a normaliser on 0 samples; use at least 2 training samples")
    parts = [cls(st.mean.float(), st.std().float()) for st in stats]
    return DataNormaliser(*parts)
