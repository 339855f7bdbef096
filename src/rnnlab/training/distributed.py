"""Data-parallel training over processes (torch.distributed), launched by torchrun.

``torchrun --nproc_per_node=N -m rnnlab train ...`` starts N processes with ``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK`` and the rendezvous address in their environment. Each builds the
same model (same seed), takes its slice of the same global batch, and
``DistributedDataParallel`` averages the gradients (gloo on CPU, NCCL on GPUs). Rank 0 alone
writes logs, metrics, plots and checkpoints.

Equal to one process with the same global batch: each process divides its loss *sum* by the
global batch's count of target elements and multiplies by N (DDP averages over N), so the
averaged gradient is the gradient of the global mean loss - also when padded sequences make the
processes' counts differ.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor


@dataclass(frozen=True)
class DistInfo:
    """Where this process stands: ``rank`` of ``world_size`` (1: no distribution)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def env_world_size() -> int:
    try:
        return int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        return 1


def init_distributed(device: torch.device) -> DistInfo:
    """Join the process group torchrun describes in the environment (no-op for one process)."""
    world = env_world_size()
    if world <= 1:
        return DistInfo()
    if not dist.is_available():  # pragma: no cover - builds without distributed
        raise RuntimeError("WORLD_SIZE > 1, but this torch has no torch.distributed")
    rank = int(os.environ["RANK"])
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend)
    return DistInfo(rank, world, local)


def shutdown(info: DistInfo, *, finished: bool = False) -> None:
    """Leave the process group (no-op for one process).

    ``finished``: training ended normally, so every rank gets here. Then all ranks first meet
    at a barrier, and none tears its connections down while another is still at work: rank 0
    still writes the last metrics and checkpoint after the last collective, and a rank that
    destroys its group and exits early leaves its peer's gloo threads to find the connection
    gone. After an error (``finished=False``) there is no barrier: a rank that failed alone
    would wait there for ever. Note: a group a DistributedDataParallel wrapper has used keeps
    its gloo threads after ``destroy_process_group`` (seen with torch 2.13, with no Python
    object left holding it), so they stop only at process exit; the barrier makes the ranks
    reach that exit together, with nothing left in flight between them.
    """
    if not (info.enabled and dist.is_initialized()):
        return
    if finished:
        dist.barrier()
    dist.destroy_process_group()


def all_sum(t: Tensor, info: DistInfo) -> Tensor:
    """The sum of ``t`` over processes (``t`` itself for one process)."""
    if not info.enabled:
        return t
    out = t.detach().clone()
    dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def all_gather_rows(t: Tensor, info: DistInfo) -> Tensor:
    """The processes' (b, ...) tensors stacked along the first axis, in rank order."""
    if not info.enabled:
        return t
    parts = [torch.empty_like(t) for _ in range(info.world_size)]
    dist.all_gather(parts, t.contiguous())
    return torch.cat(parts, 0)
