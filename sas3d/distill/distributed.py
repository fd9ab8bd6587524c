"""Data-parallel training: torchrun ranks on GPUs, or CPU ranks that `sas3d train` starts itself.

A batch is split over the ranks (each takes every W-th scene of the global batch), every loss is a
per-scene mean averaged over scenes, gradients are averaged by DistributedDataParallel and
BatchNorm statistics are reduced over all ranks (torch's SyncBatchNorm on CUDA, :class:`SyncBatchNormCPU`
on gloo), so W ranks compute the update one process computes on the whole batch.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.distributed as dist
import torch.nn as nn


@dataclass
class DistInfo:
    """This process's place in a (possibly single-process) run."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world_size > 1


def init_distributed(device: str) -> DistInfo:
    """Join the process group named by torchrun's (or our spawner's) environment, if any."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    info = DistInfo(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")))
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.startswith("cuda") else "gloo")
    return info


def barrier(info: DistInfo) -> None:
    if info.active:
        dist.barrier()


def gather_objects(info: DistInfo, value: Any) -> list[Any]:
    """``value`` of every rank, in rank order ([value] without a process group)."""
    if not info.active:
        return [value]
    out: list[Any] = [None] * info.world_size
    dist.all_gather_object(out, value)
    return out


def mean_over_ranks(info: DistInfo, values: torch.Tensor) -> torch.Tensor:
    if info.active:
        values = values.clone()
        dist.all_reduce(values)
        values /= info.world_size
    return values


class _SyncBatchNormFunction(torch.autograd.Function):
    """Batch normalisation over the rows of every rank (training mode), with the exact backward."""

    @staticmethod
    def forward(ctx, x, weight, bias, eps):  # type: ignore[override]
        n_local = x.shape[0]
        local_mean = x.mean(dim=0) if n_local else torch.zeros(x.shape[1], dtype=x.dtype)
        local_m2 = ((x - local_mean) ** 2).sum(dim=0)
        parts = [torch.zeros(2 * x.shape[1] + 1, dtype=torch.float64) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, torch.cat([local_mean.double() * n_local, local_m2.double(), torch.tensor([float(n_local)], dtype=torch.float64)]))
        stacked = torch.stack(parts)
        c = x.shape[1]
        counts = stacked[:, -1]
        n = counts.sum()
        mean = stacked[:, :c].sum(dim=0) / n
        rank_means = stacked[:, :c] / counts.clamp_min(1).unsqueeze(1)
        m2 = stacked[:, c : 2 * c].sum(dim=0) + (counts.unsqueeze(1) * (rank_means - mean) ** 2).sum(dim=0)
        var = m2 / n  # biased, for normalising (as nn.BatchNorm1d)
        invstd = (var + eps).rsqrt().to(x.dtype)
        xhat = (x - mean.to(x.dtype)) * invstd
        ctx.save_for_backward(xhat, weight, invstd)
        ctx.total = float(n)
        unbiased = (m2 / (n - 1).clamp_min(1)).to(x.dtype)
        mean = mean.to(x.dtype)
        ctx.mark_non_differentiable(mean, unbiased)
        return xhat * weight + bias, mean, unbiased

    @staticmethod
    def backward(ctx, grad_out, _grad_mean, _grad_var):  # type: ignore[override]
        xhat, weight, invstd = ctx.saved_tensors
        g = grad_out * weight
        sums = torch.cat([g.sum(dim=0), (g * xhat).sum(dim=0)]).double()
        dist.all_reduce(sums)
        c = xhat.shape[1]
        mean_g, mean_gx = (sums[:c] / ctx.total).to(g.dtype), (sums[c:] / ctx.total).to(g.dtype)
        grad_x = invstd * (g - mean_g - xhat * mean_gx)
        return grad_x, (grad_out * xhat).sum(dim=0), grad_out.sum(dim=0), None


class SyncBatchNormCPU(nn.BatchNorm1d):
    """``nn.BatchNorm1d`` whose training-mode statistics span every rank of the gloo process group
    (torch's ``nn.SyncBatchNorm`` is GPU-only). Same parameters and buffers, so checkpoints load
    into a plain ``nn.BatchNorm1d``; in eval mode, or without a process group, it is one."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(x)
        out, mean, var = _SyncBatchNormFunction.apply(x, self.weight, self.bias, self.eps)
        with torch.no_grad():
            m = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked + 1)
            self.running_mean.mul_(1 - m).add_(mean.detach(), alpha=m)
            self.running_var.mul_(1 - m).add_(var.detach(), alpha=m)
            self.num_batches_tracked += 1
        return out


def sync_batchnorm(model: nn.Module, device: torch.device) -> nn.Module:
    """Replace every BatchNorm1d by its synchronised form (torch's on CUDA, ours on CPU), in place."""
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(model)
    for name, child in list(model.named_children()):
        if type(child) is nn.BatchNorm1d:
            sync = SyncBatchNormCPU(child.num_features, child.eps, child.momentum, child.affine, child.track_running_stats)
            sync.load_state_dict(child.state_dict())
            setattr(model, name, sync)
        else:
            sync_batchnorm(child, device)
    return model


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _rank_main(rank: int, world: int, port: int, fn: Callable[..., Any], args: tuple) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    try:
        fn(*args)
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def run_cpu_ranks(world: int, fn: Callable[..., Any], *args: Any) -> None:
    """Run ``fn(*args)`` in ``world`` spawned gloo ranks on this machine and wait for them."""
    import torch.multiprocessing as mp

    mp.spawn(_rank_main, args=(world, _free_port(), fn, args), nprocs=world, join=True)
