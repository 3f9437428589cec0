"""The learner's ranks under torchrun: one process per GPU training one model, or one process.

    join_world(device)  under torchrun (WORLD_SIZE > 1): the process group, NCCL on CUDA and
                        gloo on the CPU, plus a gloo group for what rank 0 tells the others;
                        without torchrun: `World()`, rank 0 of 1, where every collective is a no-op

Who does what (learner/loop.py): rank 0 alone reads scored episodes, builds each step's samples
and broadcasts them (`broadcast`, over the gloo group: pickled Python objects stay on the CPU);
every rank runs the staleness filter and the advantages on the whole list (the same state on
each), then trains on its `shard`; `all_reduce_grads` sums the gradients, and since the loss of
every rank is divided by the token count of the *whole* step, the sum is the gradient one process
would compute on the whole batch; clipping and AdamW then take the same step on every rank.
Rank 0 alone saves and publishes a version while the others wait for its name (a broadcast).

Gradients are summed explicitly once per step rather than by DistributedDataParallel: a step runs
the transformer body and the LM head separately (chunked log-probs, not the wrapped forward that
DDP hooks into), accumulates over a number of packed micro-batches that differs between ranks (and
may be zero on one), and the KL reference runs through the same modules with the adapter off; one
all-reduce after the last backward is correct in all of these cases. It gives up DDP's overlap
of communication with the backward pass, which costs little for LoRA's small gradients.

The gloo group's timeout is long: the other ranks wait in a broadcast while rank 0 waits for
traffic, saves or publishes. A rank that dies is torchrun's to handle: it stops the others, and a
restart resumes every rank from the last complete version.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch import Tensor

T = TypeVar("T")
WAIT_FOR_LEADER = timedelta(days=7)  # how long a rank waits for rank 0's next word
BUCKET_ELEMENTS = 1 << 25  # gradient elements per all-reduce (128 MiB of float32)


def pick_device(setting: str, local_rank: int | None = None) -> torch.device:
    """`auto` | `cpu` | `cuda` | `cuda:N`; with a local rank, `cuda` means cuda:LOCAL_RANK."""
    if setting == "auto":
        setting = "cuda" if torch.cuda.is_available() else "cpu"
    if setting == "cuda" and local_rank is not None:
        return torch.device("cuda", local_rank)
    return torch.device(setting)


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0
    group: Any = None  # the gloo group rank 0 broadcasts objects over

    @property
    def leader(self) -> bool:
        return self.rank == 0

    def device(self, setting: str) -> torch.device:
        return pick_device(setting, self.local_rank if self.size > 1 else None)

    def broadcast(self, obj: T) -> T:
        """Rank 0's `obj` on every rank (what the others pass is ignored)."""
        if self.size == 1:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0, group=self.group)
        return box[0]  # type: ignore[no-any-return]

    def shard(self, items: Sequence[T], size_of: Callable[[T], int]) -> list[T]:
        """This rank's share of `items`, balanced by `size_of(item)` (largest first, each to the
        least loaded rank), in the original order. The same split on every rank."""
        if self.size == 1:
            return list(items)
        loads = [0] * self.size
        mine = []
        for i in sorted(range(len(items)), key=lambda i: -size_of(items[i])):
            r = loads.index(min(loads))
            loads[r] += size_of(items[i])
            if r == self.rank:
                mine.append(i)
        return [items[i] for i in sorted(mine)]

    def sync_params(self, params: Sequence[Tensor]) -> None:
        """Rank 0's values of `params` on every rank (e.g. a LoRA adapter's random init)."""
        if self.size > 1:
            with torch.no_grad():
                for p in params:
                    dist.broadcast(p.data, src=0)

    def all_reduce_grads(self, params: Sequence[Tensor]) -> None:
        """Sum the gradients of `params` across ranks (a missing gradient counts as zeros)."""
        if self.size == 1:
            return
        grads = []
        for p in params:
            if type(p).__name__ == "DTensor":  # FSDP2 reduces sharded gradients itself (learner/sharded.py)
                continue
            if p.grad is None:  # nothing to train on this rank this step
                p.grad = torch.zeros_like(p)
            grads.append(p.grad)
        for bucket in _buckets(grads):
            flat = torch.cat([g.reshape(-1) for g in bucket])
            dist.all_reduce(flat)
            offset = 0
            for g in bucket:
                g.copy_(flat[offset : offset + g.numel()].view_as(g))
                offset += g.numel()

    def all_reduce(self, t: Tensor, op: str = "sum") -> Tensor:
        """`t` summed (or maxed) across ranks, in place."""
        if self.size > 1:
            dist.all_reduce(t, op=dist.ReduceOp.MAX if op == "max" else dist.ReduceOp.SUM)
        return t

    def close(self) -> None:
        if self.size > 1 and dist.is_initialized():
            dist.destroy_process_group()


def join_world(device: str) -> World:
    """Join torchrun's process group (env:// rendezvous: RANK, WORLD_SIZE, LOCAL_RANK, MASTER_*),
    or `World()` when not started by torchrun or started with one process."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1:
        return World()
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    dev = pick_device(device, local_rank)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    dist.init_process_group("nccl" if dev.type == "cuda" else "gloo", rank=rank, world_size=size)
    group = dist.new_group(backend="gloo", timeout=WAIT_FOR_LEADER)
    return World(rank=rank, size=size, local_rank=local_rank, group=group)


def _buckets(grads: Sequence[Tensor]) -> list[list[Tensor]]:
    """Consecutive gradients of one dtype and device, at most BUCKET_ELEMENTS each (or one alone)."""
    out: list[list[Tensor]] = []
    size = 0
    for g in grads:
        last = out[-1][-1] if out else None
        if (
            last is None
            or (last.dtype, last.device) != (g.dtype, g.device)
            or size + g.numel() > BUCKET_ELEMENTS
        ):
            out.append([])
            size = 0
        out[-1].append(g)
        size += g.numel()
    return out
