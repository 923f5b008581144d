"""Data-parallel training over several processes (torch.distributed, DDP): which share of a step's windows each rank
computes, and the few collectives the trainer needs besides DDP's own gradient all-reduce.

The design keeps one run one run, whatever the number of ranks: every rank draws the step's whole global batch from
the same seeded sampler (cheap: indices) and computes only its share of it, so the windows a step trains on, the
sampler's state in a checkpoint and therefore the loss curve do not depend on the world size. A checkpoint written
with N ranks resumes on M. The share is whole micro-batches when `grad_accum` splits over the ranks, else the same
slice of rows of every micro-batch when `batch_size` does; a global batch that splits neither way is refused.

A world of one process is the plain trainer: no process group, no collective. torch is imported where a collective
runs, so that the gateway can check a request's split (`share_of`) without loading it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from model.config import ConfigError

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1

    @property
    def main(self) -> bool:
        """Rank 0: the one that reports and writes checkpoints."""
        return self.rank == 0

    @classmethod
    def current(cls) -> World:
        """The process group this process belongs to, if any."""
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            return cls(dist.get_rank(), dist.get_world_size())
        return cls()


@dataclass(frozen=True)
class Share:
    """Which windows of a step a rank computes: the micro-batches `micro` (indices into the step's grad_accum), and of
    each of those the rows `rows` (a slice of batch_size)."""

    micro: tuple[int, ...]
    rows: slice

    @property
    def accumulation(self) -> int:
        return len(self.micro)


def share_of(world: World, batch_size: int, grad_accum: int) -> Share:
    if world.size == 1:
        return Share(tuple(range(grad_accum)), slice(None))
    if grad_accum % world.size == 0:
        return Share(tuple(range(world.rank, grad_accum, world.size)), slice(None))
    if batch_size % world.size == 0:
        rows = batch_size // world.size
        return Share(tuple(range(grad_accum)), slice(world.rank * rows, (world.rank + 1) * rows))
    raise ConfigError("batch_size", f"a step's {grad_accum} micro-batch(es) of {batch_size} sequences do not split "
                                    f"evenly over {world.size} processes: make grad_accum or batch_size a multiple "
                                    f"of {world.size}")


def check_world(processes: int, hosts: int, batch_size: int, grad_accum: int, most_processes: int,
                most_hosts: int) -> None:
    """A run of `processes` ranks on each of `hosts` workers: no more of either than a job may have, and a global
    batch the whole world can share. ConfigError naming the field otherwise."""
    if processes > most_processes:
        raise ConfigError("processes", f"at most {most_processes} training processes per host here "
                                       f"(LFZ_MAX_TRAIN_PROCESSES), not {processes}")
    if hosts > most_hosts:
        raise ConfigError("hosts", f"at most {most_hosts} hosts per training job here (LFZ_MAX_TRAIN_HOSTS), "
                                   f"not {hosts}")
    try:
        share_of(World(0, processes * hosts), batch_size, grad_accum)
    except ConfigError as error:
        raise ConfigError(f"hyperparameters.{error.field}", error.message) from None


def sum_over(world: World, value: torch.Tensor) -> torch.Tensor:
    """The sum of `value` over every rank (in place; `value` itself with one rank)."""
    import torch.distributed as dist

    if world.size > 1:
        dist.all_reduce(value, op=dist.ReduceOp.SUM)
    return value


def any_rank(world: World, flag: bool, device: torch.device) -> bool:
    """True on every rank when it is True on one: a decision every rank must take at the same step."""
    if world.size == 1:
        return flag
    import torch
    import torch.distributed as dist

    value = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())


def backend_for(device: torch.device) -> str:
    return "nccl" if device.type == "cuda" else "gloo"
