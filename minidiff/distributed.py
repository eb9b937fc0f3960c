"""Multi-process data-parallel training with torchrun: process group, rank helpers, global-batch BatchNorm.

    python -m torch.distributed.run --nproc_per_node 2 stages/b2_4_train_class_conditioned.py ...

torchrun starts one process per device and sets RANK, LOCAL_RANK, WORLD_SIZE, MASTER_ADDR and MASTER_PORT.
`setup` joins the process group (NCCL on GPUs, gloo on CPU) when WORLD_SIZE > 1 and does nothing otherwise, so
the same code runs under `python` and under `torchrun`.

W processes compute the single-process update on the report's global batch of B images (train.py):
  - every rank draws the same permutation, and the noise, timesteps and class dropout of the WHOLE global batch,
    from the shared seed, and keeps its slice r B/W .. (r+1) B/W (for MNIST the extra draws cost nothing);
  - DistributedDataParallel averages the gradients of the per-rank mean losses over equal slices:
    (1/W) sum_r grad mean_r = grad mean over the global batch;
  - BatchNorm normalizes with the statistics of the global batch, not of the rank's slice (torch's SyncBatchNorm
    on GPUs; `GlobalBatchNorm2d` below on CPUs, where SyncBatchNorm refuses to run).
So the result equals single-process training up to float rounding: sums are taken in another order.
"""
from __future__ import annotations

import atexit
import os

import torch
import torch.distributed as dist
from torch import nn


def world_size() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def is_main() -> bool:
    """True in the process that writes checkpoints, logs and figures (rank 0, or the only process)."""
    return rank() == 0


def setup(device: torch.device) -> torch.device:
    """Join torchrun's process group when WORLD_SIZE > 1 (no-op otherwise or when already joined).
    On GPUs each process takes the device cuda:LOCAL_RANK. Returns the device this process trains on."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or dist.is_initialized():
        return device
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    atexit.register(teardown)
    return device


def teardown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def shard(global_batch: int) -> slice:
    """This rank's slice of a global batch of `global_batch` items (equal shares)."""
    W, r = world_size(), rank()
    if global_batch % W:
        raise ValueError(f"the batch size {global_batch} must be divisible by the number of processes {W}")
    b = global_batch // W
    return slice(r * b, (r + 1) * b)


def mean(x: torch.Tensor) -> torch.Tensor:
    """The mean of x over the ranks (x itself with one process); not differentiable."""
    if world_size() == 1:
        return x
    x = x.detach().clone()
    dist.all_reduce(x)
    return x / world_size()


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def wrap(model: nn.Module, device: torch.device) -> nn.Module:
    """With several processes: global-batch BatchNorm (in place, same parameters) and DistributedDataParallel.
    With one process: the model itself. The wrapper shares the model's parameters: save the model's own
    state_dict(), whose keys are the plain model's."""
    if world_size() == 1:
        return model
    if device.type == "cuda":
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    else:
        _to_global_batchnorm(model)
    return nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)


class GlobalBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d over the global batch of all ranks, for CPUs (torch's SyncBatchNorm is GPU-only).

    With n = the number of values per channel over all ranks (Ioffe & Szegedy 2015, Alg. 1):
        mean = (sum_r sum x) / n,   var = (sum_r sum (x - mean)^2) / n,   y = (x - mean) / sqrt(var + eps) w + b
    The sums go through `_AllReduceSum`, whose backward all-reduces the gradients, so the backward pass is the
    global batch's too (what SyncBatchNorm's backward computes on GPUs). Running statistics are updated as nn.BatchNorm2d does (unbiased var).
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:          # (B, C, H, W) -> (B, C, H, W)
        if not self.training or world_size() == 1:
            return super().forward(x)
        C = x.shape[1]
        n = x.numel() // C * world_size()
        mean = _AllReduceSum.apply(x.sum((0, 2, 3))) / n                            # (C,)
        d = x - mean.view(1, C, 1, 1)
        var = _AllReduceSum.apply((d * d).sum((0, 2, 3))) / n                        # (C,) biased, as BN uses
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                m = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                self.running_mean.lerp_(mean.to(self.running_mean.dtype), m)
                self.running_var.lerp_((var * n / (n - 1)).to(self.running_var.dtype), m)
        y = d * torch.rsqrt(var + self.eps).view(1, C, 1, 1)
        return y * self.weight.view(1, C, 1, 1) + self.bias.view(1, C, 1, 1) if self.affine else y


class _AllReduceSum(torch.autograd.Function):
    """y = sum over ranks of x. Every rank's loss depends on y, so the gradient of the summed loss with respect
    to each rank's x is the sum over ranks of dL_r/dy: all-reduce the gradients too."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        y = x.clone()
        dist.all_reduce(y)
        return y

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.clone()
        dist.all_reduce(grad)
        return grad


def _to_global_batchnorm(module: nn.Module) -> None:
    """Replace every nn.BatchNorm2d below `module` by a GlobalBatchNorm2d sharing its parameters and buffers."""
    for name, child in module.named_children():
        if type(child) is nn.BatchNorm2d:
            new = GlobalBatchNorm2d(child.num_features, child.eps, child.momentum, child.affine,
                                    child.track_running_stats)
            new._parameters, new._buffers = child._parameters, child._buffers
            new.train(child.training)
            setattr(module, name, new)
        else:
            _to_global_batchnorm(child)
