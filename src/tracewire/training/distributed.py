"""Data parallelism under ``torchrun``: process-group setup and gradient averaging.

Every rank builds the same module from the same seed, reads its own share of each step's windows
(``ModelActivations.window_indices``) and averages gradients with one ``all_reduce`` per tensor
before the optimiser step, so all ranks keep identical parameters; with equal shares this is the
single-process gradient of the whole global batch. Backend: ``nccl`` when CUDA is available,
``gloo`` otherwise.
"""

from __future__ import annotations

import logging
import os

import torch
import torch.distributed as dist
from torch import nn

log = logging.getLogger(__name__)


def setup() -> tuple[int, int]:
    """(rank, world size); initialises the process group when launched by ``torchrun`` with >1 process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        if torch.cuda.is_available():
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group(backend=backend)
        log.info("rank %d/%d joined the %s process group", dist.get_rank(), world, backend)
    if dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def device() -> torch.device:
    """This rank's device: its GPU (``LOCAL_RANK``) when CUDA is available, else the CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return torch.device("cpu")


def average_gradients(module: nn.Module, world: int) -> None:
    if world <= 1:
        return
    for param in module.parameters():
        if param.grad is not None:
            dist.all_reduce(param.grad, op=dist.ReduceOp.SUM)
            param.grad.div_(world)


def _all_reduce_sum(tensor: torch.Tensor) -> None:
    """``all_reduce`` that also works for CPU tensors under NCCL (through a copy on this rank's GPU)."""
    if dist.get_backend() == "nccl" and tensor.device.type != "cuda":
        on_gpu = tensor.to(device())
        dist.all_reduce(on_gpu, op=dist.ReduceOp.SUM)
        tensor.copy_(on_gpu.cpu())
    else:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)


def average_(tensor: torch.Tensor, world: int) -> torch.Tensor:
    """In-place mean of ``tensor`` over ranks (no-op for one process)."""
    if world > 1:
        _all_reduce_sum(tensor)
        tensor.div_(world)
    return tensor


def sum_(tensor: torch.Tensor, world: int) -> torch.Tensor:
    """In-place sum of ``tensor`` over ranks (no-op for one process)."""
    if world > 1:
        _all_reduce_sum(tensor)
    return tensor


def barrier(world: int) -> None:
    if world > 1:
        dist.barrier()
