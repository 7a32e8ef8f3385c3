"""Data parallelism inside a run: ``torchrun --nproc_per_node N main.py ...`` (see README, "Multiple GPUs").

Everything the harness does differently with more than one process lives here; with one process (no
``WORLD_SIZE`` above 1 in the environment) every function is a no-op or the identity, so a 1-process run is
unchanged. The pieces, and where they are called:

- the task loop (``utils/training.py``) draws each global batch from the one seeded order on every rank and keeps
  its rank's contiguous shard (:func:`shard`, ``tensor_split``: sizes differ by at most one item);
- ``ContinualModel.step`` scales the rank's loss by ``N * local / global`` items (:class:`StepShard`) and averages
  the gradients of the optimizer's parameters over the ranks (:func:`average_gradients`), which is what
  ``DistributedDataParallel`` computes: the average of the scaled shard losses is the global batch's mean loss;
- a replay batch is drawn (and augmented) whole on every rank from the identical memory and sharded like the
  stream batch; stream items a memory stores are all-gathered first (:func:`gather_cat`), so memories stay
  identical on every rank;
- BatchNorm layers use the global batch's statistics (:func:`sync_batchnorm`: torch's ``SyncBatchNorm`` on CUDA,
  :class:`_GlobalBatchNorm` elsewhere);
- evaluation batches and feature-cache encoding are divided between the ranks and the results gathered;
- rank 0 alone writes the run directory and the checkpoints; ``--resume`` reads the checkpoint on every rank.
"""
from __future__ import annotations

import atexit
import os
from contextlib import contextmanager
from typing import Any, Iterator

import torch
import torch.distributed as dist
from torch import Tensor, nn

from utils.errors import UserError


def env_world_size() -> int:
    """The world size torchrun (or any launcher with its environment contract) asked for; 1 without one."""
    try:
        return int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        return 1


def env_rank() -> int:
    """This process's rank as the launcher's environment says (before the process group exists); 0 without one."""
    try:
        return int(os.environ.get("RANK", "0")) if env_world_size() > 1 else 0
    except ValueError:
        return 0


def active() -> bool:
    """Whether this process is one of several ranks of one run."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def world_size() -> int:
    return dist.get_world_size() if active() else 1


def rank() -> int:
    return dist.get_rank() if active() else 0


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0")) if active() else 0


def is_main() -> bool:
    """Rank 0: the one process that writes the run directory and prints the summary."""
    return rank() == 0


def is_local_main() -> bool:
    """Local rank 0: the one process per machine that writes shared caches (the feature cache)."""
    return local_rank() == 0


def setup(device_name: str) -> str:
    """Join the process group torchrun describes (``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``, ``MASTER_PORT``,
    ``LOCAL_RANK``) and return the device name this rank uses (``cuda:LOCAL_RANK`` for CUDA). Without a
    launcher, ``device_name`` unchanged. Idempotent: a process that runs several runs joins once."""
    if env_world_size() <= 1:
        return device_name
    local = int(os.environ.get("LOCAL_RANK", "0"))
    cuda = device_name.startswith("cuda") or (device_name == "auto" and torch.cuda.is_available())
    if cuda:
        if not torch.cuda.is_available():
            raise UserError(f"--device {device_name}: CUDA is not available on this machine (use --device cpu)")
        if torch.cuda.device_count() <= local:
            raise UserError(f"torchrun started local rank {local} but this machine has "
                            f"{torch.cuda.device_count()} GPU(s): use --nproc_per_node {torch.cuda.device_count()}")
        torch.cuda.set_device(local)
        device_name = f"cuda:{local}"
    elif device_name == "auto":
        device_name = "cpu"
    if not dist.is_initialized():
        backend = os.environ.get("TUSK_DIST_BACKEND") or ("nccl" if cuda else "gloo")
        dist.init_process_group(backend=backend)
        atexit.register(_teardown)
    return device_name


def _teardown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def _device() -> torch.device:
    """Where collective tensors live: the rank's GPU for NCCL, else the CPU."""
    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")


# ---- sharding ---------------------------------------------------------------------------------------
def shard(t: Tensor) -> Tensor:
    """This rank's contiguous part of ``t`` along dim 0 (``tensor_split``: the first ``len % N`` parts have one
    more item); ``t`` itself with one process."""
    return t.tensor_split(world_size())[rank()] if active() else t


def shard_range(n: int) -> range:
    """This rank's contiguous part of ``range(n)``, split as :func:`shard` splits a tensor."""
    size, extra = divmod(n, world_size())
    r = rank()
    start = r * size + min(r, extra)
    return range(start, start + size + (1 if r < extra else 0))


class StepShard:
    """The items of one training step: how many this rank's loss averages over (``local``) and how many the
    global step has (``total``). ``ContinualModel.step`` scales the loss by ``N * local / total``."""

    def __init__(self, local: int, total: int):
        self.local, self.total = int(local), int(total)
        self.stepped = False

    def take(self, *tensors: Tensor) -> tuple[Tensor, ...]:
        """This rank's shard of tensors of one more global part of the step (a replay batch), counted."""
        n = int(tensors[0].shape[0])
        out = tuple(shard(t) for t in tensors)
        self.local += int(out[0].shape[0])
        self.total += n
        return out

    def loss_weight(self) -> float:
        return world_size() * self.local / max(self.total, 1)


# ---- collectives --------------------------------------------------------------------------------------
def all_sum(values: list[float]) -> list[float]:
    """Element-wise sums over the ranks (float64)."""
    if not active():
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=_device())
    dist.all_reduce(t)
    return t.tolist()


def all_true(flag: bool) -> bool:
    """Whether ``flag`` holds on every rank (a decision every rank must take the same way)."""
    return all_sum([0.0 if flag else 1.0])[0] == 0.0 if active() else flag


def gather_cat(t: Tensor) -> Tensor:
    """The ranks' tensors concatenated along dim 0 in rank order (their first dimensions may differ): the global
    batch again when each rank holds its :func:`shard`."""
    if not active():
        return t
    n = torch.tensor([t.shape[0]], dtype=torch.int64, device=_device())
    counts = [torch.zeros_like(n) for _ in range(world_size())]
    dist.all_gather(counts, n)
    counts = [int(c) for c in counts]
    longest = max(counts)
    dev = _device()
    padded = torch.zeros((longest, *t.shape[1:]), dtype=t.dtype, device=dev)
    padded[:t.shape[0]] = t.to(dev)
    parts = [torch.empty_like(padded) for _ in counts]
    dist.all_gather(parts, padded)
    return torch.cat([p[:c] for p, c in zip(parts, counts)]).to(t.device)


def gather_objects(obj: Any) -> list[Any]:
    """Every rank's ``obj``, in rank order (``[obj]`` with one process)."""
    if not active():
        return [obj]
    out: list[Any] = [None] * world_size()
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj: Any) -> Any:
    """Rank 0's ``obj`` on every rank."""
    if not active():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier() -> None:
    if active():
        dist.barrier()


@contextmanager
def local_main_first() -> Iterator[None]:
    """Local rank 0 runs the body first (downloads, extraction), the other ranks of its machine after it."""
    if not active():
        yield
        return
    if not is_local_main():
        dist.barrier()
    try:
        yield
    finally:
        if is_local_main():
            dist.barrier()


def average_gradients(params) -> None:
    """Replace each gradient by its mean over the ranks: one all-reduce of the flattened gradients (what
    ``DistributedDataParallel``'s buckets compute). Parameters without a gradient on every rank are left alone."""
    if not active():
        return
    grads = [p.grad for p in params if p.grad is not None]       # the same parameters on every rank
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads]).to(_device())
    dist.all_reduce(flat)
    flat /= world_size()
    offset = 0
    for g in grads:
        n = g.numel()
        g.copy_(flat[offset:offset + n].view_as(g))
        offset += n


@torch.no_grad()
def broadcast_module(module: nn.Module) -> None:
    """Rank 0's floating-point parameters and buffers on every rank (as DDP does at construction)."""
    if not active():
        return
    dev = _device()
    for t in [*module.parameters(), *module.buffers()]:
        if t is None or not t.is_floating_point():
            continue
        tmp = t.detach().to(dev).contiguous()
        dist.broadcast(tmp, src=0)
        if tmp.data_ptr() != t.data_ptr():
            t.copy_(tmp)


# ---- BatchNorm over the global batch ------------------------------------------------------------------
class _AllReduceSum(torch.autograd.Function):
    """The sum over the ranks, differentiable: the gradient of a sum is the sum of the ranks' gradients."""

    @staticmethod
    def forward(ctx, t: Tensor) -> Tensor:
        out = t.clone()
        dist.all_reduce(out)
        return out

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        out = grad.contiguous().clone()
        dist.all_reduce(out)
        return out


class _GlobalBatchNorm(nn.modules.batchnorm._BatchNorm):
    """BatchNorm whose training statistics are those of the global batch, all-reduced (differentiably) over the
    ranks: torch's ``SyncBatchNorm`` for backends it does not run on (gloo, CPU). Two passes (mean, then the
    squared deviations), as a one-process BatchNorm computes them; the same parameters and buffers."""

    def forward(self, x: Tensor) -> Tensor:
        if not (self.training and active()):
            return super().forward(x)
        all_reduce = _AllReduceSum.apply
        dims = [0, *range(2, x.dim())]
        shape = [1, x.shape[1], *([1] * (x.dim() - 2))]
        count = x.new_tensor([x.numel() / x.shape[1]])
        first = all_reduce(torch.cat([x.sum(dims), count]))
        n = first[-1]
        mean = first[:-1] / n
        centred = x - mean.view(shape)
        var = all_reduce((centred * centred).sum(dims)) / n
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked += 1
                factor = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
                self.running_mean.mul_(1 - factor).add_(mean.detach(), alpha=factor)
                self.running_var.mul_(1 - factor).add_(var.detach() * n / (n - 1).clamp(min=1), alpha=factor)
        y = centred * torch.rsqrt(var.view(shape) + self.eps)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        return y


_GLOBAL_CLASSES: dict[type, type] = {}


def _global_class(cls: type) -> type:
    if cls not in _GLOBAL_CLASSES:
        _GLOBAL_CLASSES[cls] = type(f"Global{cls.__name__}", (_GlobalBatchNorm, cls), {})
    return _GLOBAL_CLASSES[cls]


def sync_batchnorm(module: nn.Module) -> nn.Module:
    """With several ranks, make every BatchNorm of ``module`` normalise by the global batch's statistics (its
    parameters, buffers and their names unchanged); ``module`` as it is with one process."""
    if not active():
        return module
    for sub in module.modules():
        if isinstance(sub, nn.modules.batchnorm._BatchNorm) and not isinstance(sub, _GlobalBatchNorm):
            if sub.weight is not None and sub.weight.is_cuda and dist.get_backend() == "nccl":
                continue                      # replaced below by torch's own SyncBatchNorm
            sub.__class__ = _global_class(type(sub))
    if dist.get_backend() == "nccl":
        module = nn.SyncBatchNorm.convert_sync_batchnorm(module)
    return module
