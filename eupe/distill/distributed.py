"""Process-group setup for ``torchrun`` and the two ways of sharding the student: DDP and FSDP2.

Small students (ViT-T/S/B, ConvNeXt) are replicated with DDP; the ~1.9B stage-1 proxy is sharded with FSDP2
(``torch.distributed.fsdp.fully_shard``) block by block, then at the root. Without ``torchrun`` everything runs
in one process.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from ..utils.device import resolve_device


@dataclass
class DistEnv:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def init_distributed(device: str | None = None) -> DistEnv:
    """Joins the ``torchrun`` process group (NCCL on CUDA, gloo on CPU) when ``WORLD_SIZE`` > 1."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = resolve_device(device)
    if dev.type == "cuda":
        dev = torch.device("cuda", local_rank if dev.index is None else dev.index)
        torch.cuda.set_device(dev)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
    return DistEnv(rank, world, local_rank, dev)


def shutdown_distributed() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def wrap_model(model: nn.Module, env: DistEnv, strategy: str) -> nn.Module:
    """``ddp``: DistributedDataParallel; ``fsdp``: FSDP2 per transformer block/stage, then the whole model."""
    if not env.enabled or strategy == "none":
        return model
    if strategy == "ddp":
        from torch.nn.parallel import DistributedDataParallel

        keep_gradient_strides(model)
        return DistributedDataParallel(model, device_ids=[env.device.index] if env.device.type == "cuda" else None)
    if strategy == "fsdp":
        from torch.distributed.fsdp import fully_shard

        backbone = model.backbone
        for block in list(getattr(backbone, "blocks", [])) + list(getattr(backbone, "stages", [])):
            fully_shard(block)
        fully_shard(model)
        return model
    raise ValueError(f"Unknown parallel strategy {strategy!r}; choose ddp, fsdp or none")


def keep_gradient_strides(model: nn.Module) -> None:
    """Gives every gradient of ``model`` the strides of its parameter, which DDP's bucket views have.

    Autograd may hand a parameter a gradient of other strides: the class and storage tokens ``[1, n, C]`` get
    slices of the token gradient ``[B, N, C]`` (the stride of the size-1 dimension is ``N * C``, not ``n * C``), and
    DDP then warns "Grad strides do not match bucket view strides" (and copies more slowly). A hook copies such a
    gradient into the parameter's layout (for the tokens: a few hundred values, and the slice no longer keeps the
    whole token gradient alive)."""
    for param in model.parameters():
        if param.requires_grad:
            param.register_hook(functools.partial(_with_strides, param.stride()))


def _with_strides(strides: tuple[int, ...], grad: torch.Tensor) -> torch.Tensor:
    if grad.stride() == strides:
        return grad
    return torch.empty_strided(grad.shape, strides, dtype=grad.dtype, device=grad.device).copy_(grad)


def all_reduce_mean(values: dict[str, torch.Tensor]) -> dict[str, float]:
    """Means of scalar tensors over all ranks (one collective), as floats."""
    names = sorted(values)
    stacked = torch.stack([values[n].detach().float().reshape(()) for n in names])
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(stacked)
        stacked /= dist.get_world_size()
    return dict(zip(names, stacked.tolist()))


def barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
