"""Data-parallel training (DDP) under torchrun: the process group, the sampler, collective checks.

``torchrun --nproc_per_node N -m sciml train ...`` (or ``sciml train ... --nproc N``) starts one
process per rank with ``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``
set. :func:`world` joins them into a process group (gloo on the CPU; NCCL with the GPU
``cuda:LOCAL_RANK`` per rank) and leaves it at the end, also on errors; a process started without
them is a world of one, where every collective is the identity and training is unchanged.

``batch_size`` is the *global* batch. Every rank draws the same permutation of the epoch (from the
run's seed) and takes a disjoint share of each global batch (:func:`shard_batches`); its loss is
weighted by ``local / global * world_size``, so DDP's mean of the ranks' gradients is the gradient
of the global batch's mean loss and a run gives the same numbers (up to rounding) on any number of
processes. Checkpoints are ordinary single-process checkpoints: a run may be resumed on another
number of processes.
"""

from __future__ import annotations

import contextlib
import datetime
import gc
import os
import subprocess
import sys
from dataclasses import dataclass, field
from typing import Iterator, Sequence

import torch
from torch import nn

from .. import runtime
from ..errors import ConfigError, SciMLError

#: seconds a rank waits in a collective for the others before it fails (a crashed or stuck peer)
TIMEOUT_ENV = "SCIML_DDP_TIMEOUT"
DEFAULT_TIMEOUT = 600.0
_REQUIRED_ENV = ("RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


class RankLocalError(ConfigError):
    """A misconfiguration found on this rank alone (the others may not fail): unlike the errors
    every rank raises alike, which only rank 0 reports, this rank reports it itself."""


def env_rank() -> int:
    """This process's rank as torchrun set it (0 outside torchrun)."""
    return int(os.environ.get("RANK", "0") or 0)


def env_world_size() -> int:
    """The number of processes torchrun started (1 outside torchrun)."""
    return int(os.environ.get("WORLD_SIZE", "1") or 1)


def shard_batches(perm: torch.Tensor, batch_size: int, rank: int = 0, size: int = 1) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """The distributed sampler: ``(this rank's indices, the global batch)`` for each global batch.

    Global batch ``k`` is ``perm[k * batch_size : (k + 1) * batch_size]`` (the last may be short);
    rank ``r`` of ``size`` takes chunk ``r`` of its ``size`` contiguous, near-equal chunks
    (``torch.tensor_split``), so the ranks' shares are disjoint and together the whole batch. A share
    may be empty when the batch has fewer samples than there are ranks.
    """
    for i in range(0, perm.shape[0], batch_size):
        batch = perm[i : i + batch_size]
        yield (batch if size == 1 else torch.tensor_split(batch, size)[rank]), batch


@dataclass(frozen=True)
class World:
    """This process's place among the ranks; a world of one (the default) does no communication."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def distributed(self) -> bool:
        return self.size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the only one that writes files and shows progress."""
        return self.rank == 0

    def span(self, n: int) -> tuple[int, int]:
        """This rank's contiguous range ``[start, stop)`` of ``n`` items (evaluation is sharded so)."""
        return (self.rank * n) // self.size, ((self.rank + 1) * n) // self.size

    def sum(self, *values: float) -> list[float]:
        """``values`` summed over the ranks (float64, the same result on every rank)."""
        if not self.distributed:
            return [float(v) for v in values]
        import torch.distributed as dist

        t = torch.tensor([float(v) for v in values], dtype=torch.float64, device=self.device)
        dist.all_reduce(t)
        return t.tolist()

    def broadcast_(self, tensors: Sequence[torch.Tensor]) -> None:
        """Overwrite ``tensors`` in place with rank 0's values."""
        if not self.distributed:
            return
        import torch.distributed as dist

        for t in tensors:
            buf = t.detach().to(self.device).contiguous()
            dist.broadcast(buf, src=0)
            with torch.no_grad():
                t.copy_(buf.to(t.device))

    def barrier(self) -> None:
        if self.distributed:
            import torch.distributed as dist

            dist.barrier()

    def wrap(self, module: nn.Module) -> nn.Module:
        """``module`` in DistributedDataParallel (which averages the gradients over the ranks).

        On the GPU batch-norm layers become SyncBatchNorm, so their statistics are those of the
        global batch; torch has no SyncBatchNorm on the CPU, where they see the rank's share only.
        """
        if not self.distributed:
            return module
        from torch.nn.parallel import DistributedDataParallel

        if self.device.type == "cuda":
            module = nn.SyncBatchNorm.convert_sync_batchnorm(module)
            return DistributedDataParallel(module, device_ids=[self.device.index], output_device=self.device.index)
        return DistributedDataParallel(module)

    @contextlib.contextmanager
    def agree(self, what: str) -> Iterator[None]:
        """Run the block on every rank, then raise on *all* ranks if it failed on any.

        The failing rank raises its own exception; the others a :class:`SciMLError` naming that rank
        and its message, instead of waiting for it in the next collective.
        """
        if not self.distributed:
            yield
            return
        import torch.distributed as dist

        error: Exception | None = None
        try:
            yield
        except Exception as exc:  # re-raised below, after the ranks have compared notes
            error = exc
        message = None if error is None else (str(error) if isinstance(error, SciMLError) else f"{type(error).__name__}: {error}")
        messages: list[str | None] = [None] * self.size
        dist.all_gather_object(messages, message)
        if error is not None:
            raise error
        failed = [(r, m) for r, m in enumerate(messages) if m is not None]
        if failed:
            rank, msg = failed[0]
            raise SciMLError(f"rank {rank} of {self.size} failed while {what}: {msg}")


def _timeout() -> datetime.timedelta:
    raw = os.environ.get(TIMEOUT_ENV, "")
    try:
        seconds = float(raw) if raw else DEFAULT_TIMEOUT
    except ValueError:
        raise ConfigError(f"{TIMEOUT_ENV} must be a number of seconds, got {raw!r}") from None
    if seconds <= 0:
        raise ConfigError(f"{TIMEOUT_ENV} must be > 0 seconds, got {raw!r}")
    return datetime.timedelta(seconds=seconds)


@contextlib.contextmanager
def world(device: str = "auto") -> Iterator[World]:
    """The :class:`World` of this process for the training option ``device`` (auto, cpu, cuda).

    Under torchrun (``WORLD_SIZE`` > 1) the process group is initialised here (gloo on the CPU,
    NCCL on ``cuda:LOCAL_RANK``) with a timeout of ``$SCIML_DDP_TIMEOUT`` seconds (default 600),
    so a rank whose peer died fails instead of hanging, and destroyed on leaving, also on errors.
    A process group the caller initialised already is used and left alone.
    """
    
    size = env_world_size()
    base = runtime.device(device)
    if size <= 1:
        yield World(device=base)
        return
    missing = [k for k in _REQUIRED_ENV if not os.environ.get(k)]
    if missing:
        raise ConfigError(
            f"WORLD_SIZE={size} is set but {', '.join(missing)} {'is' if len(missing) == 1 else 'are'} not; "
            "launch data-parallel training with torchrun (or `sciml train ... --nproc N`), or unset WORLD_SIZE"
        )
    import torch.distributed as dist

    rank, local_rank = int(os.environ["RANK"]), int(os.environ["LOCAL_RANK"])
    if base.type == "cuda":
        if local_rank >= torch.cuda.device_count():
            raise RankLocalError(
                f"rank {rank} has LOCAL_RANK={local_rank} but this node has {torch.cuda.device_count()} GPU(s); "
                "start at most one process per GPU (--nproc_per_node) or train with device 'cpu'"
            )
        torch.cuda.set_device(local_rank)
        dev, backend = torch.device("cuda", local_rank), "nccl"
    else:
        dev, backend = torch.device("cpu"), "gloo"
    owns = not dist.is_initialized()
    if owns:
        dist.init_process_group(backend=backend, timeout=_timeout())
    try:
        if dist.get_world_size() != size:
            raise ConfigError(f"the process group has {dist.get_world_size()} ranks but WORLD_SIZE is {size}")
        yield World(rank=dist.get_rank(), size=size, local_rank=local_rank, device=dev)
        if owns:
            # leave together: rank 0 hosts the rendezvous store, and a rank still tearing down its
            # process group when rank 0 has exited can abort ("terminate called without an active
            # exception"), failing a run that finished (seen with the ranks on a loaded 2-core CPU)
            dist.barrier()
    finally:
        if owns and dist.is_initialized():
            # anything in a reference cycle that still holds the process group (a model wrapper,
            # its reducer) would keep the gloo group and its worker threads alive until the
            # interpreter's finalisation, where a rank can abort with "terminate called without an
            # active exception" after its run finished: free such objects while the interpreter is
            # whole (a mitigation: CI saw that abort, its cause is not pinned down)
            gc.collect()
            dist.destroy_process_group()
            gc.collect()


def launch(args: Sequence[str], nproc: int, *, threads: int | None = None) -> int:
    """Run ``sciml ARGS`` under ``python -m torch.distributed.run --standalone --nproc_per_node NPROC``
    on this machine, with its output streamed through, and return its exit code.

    ``OMP_NUM_THREADS`` (unless set) becomes ``threads`` or the CPU count over ``nproc``, so the
    ranks do not oversubscribe the cores.
    """
    if nproc < 1:
        raise ConfigError(f"--nproc must be >= 1, got {nproc}")
    env = dict(os.environ)
    if "OMP_NUM_THREADS" not in env:
        env["OMP_NUM_THREADS"] = str(threads or max(1, (os.cpu_count() or 1) // nproc))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           "-m", "sciml", *args]
    try:
        return subprocess.run(cmd, env=env, check=False).returncode
    except KeyboardInterrupt:  # the ranks got the same SIGINT; torchrun stops them
        return 130
