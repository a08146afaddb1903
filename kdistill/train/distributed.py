"""Data-parallel training with ``torch.distributed``, launched by ``torchrun``.

``torchrun --nproc_per_node N -m kdistill distill CONFIG`` starts N copies of
the same command; each reads ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK`` from
its environment. :func:`fit` then

* initialises one process group (NCCL on CUDA, gloo on CPU);
* wraps only the *trainable* modules (the student, method adapters with
  parameters) in :class:`~torch.nn.parallel.DistributedDataParallel`; the
  frozen teacher is never wrapped, it only runs forward;
* draws the same per-epoch permutation on every rank (the shuffle generator is
  seeded by ``(seed, epoch)``) and gives rank ``r`` the ``r``-th contiguous
  chunk of every global batch of ``train.batch_size`` samples;
* weights each rank's loss by ``world_size * n_local / n_global`` so that
  DDP's gradient average equals the gradient of the mean over the whole global
  batch, even when the last batch does not split evenly (every loss term of the
  Distiller is a per-sample mean, so this is exact);
* all-reduces the epoch's loss sums and the first non-finite step, so every
  rank takes the same decisions;
* lets rank 0 alone write checkpoints and results, and evaluate the test split
  (:func:`on_main_process`: the other ranks receive its metrics);
* with ``train.sync_batchnorm``, makes the trained modules' BatchNorm layers
  normalise with the mean and variance of the whole global batch
  (:func:`sync_batchnorm`), which is what one process computes. Without it
  each rank normalises its own chunk, and a BatchNorm model no longer
  follows the single-process run; :func:`wrap_trainable` says so.

With one process nothing of this is active and training runs as before.
"""

from __future__ import annotations

import atexit
import datetime
import inspect
import json
import logging
import math
import os
import types
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

from kdistill.config import TrainConfig
from kdistill.errors import ConfigError, KDistillError

log = logging.getLogger("kdistill")


def _release_frozen_world_group() -> None:
    """Stop ``torch.distributed.nn.functional`` from holding the default process group.

    Its functions take ``group=group.WORLD`` as a default argument, evaluated once when the
    module is first imported. DDP imports it lazily, i.e. while a group exists, so those
    defaults kept a reference to that ``ProcessGroup``: ``destroy_process_group()`` then
    freed nothing, gloo's threads ran on, and the group was destroyed at some random point
    of interpreter shutdown, which aborted the process now and then ("terminate called
    without an active exception", SIGABRT) after a successful run. The module is imported
    here, before any group exists, and a default that already holds a group is replaced by
    ``None``, which these functions read as "the default group" at call time.
    """
    if not dist.is_available():
        return
    import torch.distributed.nn.functional as collectives

    for function in vars(collectives).values():
        if not isinstance(function, types.FunctionType) or function.__module__ != collectives.__name__:
            continue
        if function.__defaults__ and any(isinstance(d, dist.ProcessGroup) for d in function.__defaults__):
            function.__defaults__ = tuple(None if isinstance(d, dist.ProcessGroup) else d
                                          for d in function.__defaults__)
        if function.__kwdefaults__:
            for name, value in function.__kwdefaults__.items():
                if isinstance(value, dist.ProcessGroup):
                    function.__kwdefaults__[name] = None


_release_frozen_world_group()


@dataclass(frozen=True)
class DistContext:
    """Where this process stands in the job (``world_size == 1``: not distributed)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value in (None, ""):
        return default
    try:
        return int(value)
    except ValueError:
        raise ConfigError(f"Environment variable {name}={value!r} is not an integer; it is set by "
                          "torchrun and should not be edited by hand.") from None


def context_from_env() -> DistContext:
    """Read torchrun's ``RANK`` / ``WORLD_SIZE`` / ``LOCAL_RANK`` (defaults: one process)."""
    if dist.is_available() and dist.is_initialized():
        return DistContext(dist.get_rank(), dist.get_world_size(), _env_int("LOCAL_RANK", 0))
    world = _env_int("WORLD_SIZE", 1)
    rank = _env_int("RANK", 0)
    if world < 1 or not 0 <= rank < world:
        raise ConfigError(f"RANK={rank} and WORLD_SIZE={world} do not describe a valid job.")
    return DistContext(rank, world, _env_int("LOCAL_RANK", 0))


def init_distributed(device: torch.device) -> tuple[DistContext, torch.device]:
    """Join the process group once per process; return the context and this rank's device.

    On CUDA each rank uses ``cuda:LOCAL_RANK``; on CPU every rank uses the CPU.
    """
    ctx = context_from_env()
    if not ctx.enabled:
        return ctx, device
    if device.type == "cuda":
        device = torch.device("cuda", ctx.local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        if "MASTER_ADDR" not in os.environ or "MASTER_PORT" not in os.environ:
            raise ConfigError(
                f"WORLD_SIZE={ctx.world_size} asks for distributed training but MASTER_ADDR / "
                "MASTER_PORT are not set; launch with torchrun --nproc_per_node N.")
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend, rank=ctx.rank, world_size=ctx.world_size)
        atexit.register(_shutdown)
    return ctx, device


def _shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def is_main_process() -> bool:
    """True on rank 0, and always in a single-process run."""
    return context_from_env().is_main


def barrier(ctx: DistContext) -> None:
    if ctx.enabled:
        dist.barrier()


def effective_config(cfg: TrainConfig, ctx: DistContext) -> TrainConfig:
    """Apply ``train.batch_scope`` and ``train.lr_scaling`` for this world size.

    ``batch_scope: global`` (default) keeps ``batch_size`` as the global batch,
    so N processes follow the single-process trajectory. ``per_rank`` makes
    the global batch ``batch_size * N``, and ``lr_scaling`` (``linear``:
    ``lr * N``, Goyal et al. 2017; ``sqrt``: ``lr * sqrt(N)``, Krizhevsky 2014)
    adapts the learning rate to that larger batch.
    """
    if ctx.world_size == 1 or (cfg.batch_scope == "global" and cfg.lr_scaling == "none"):
        return cfg
    new = cfg.model_copy(deep=True)
    if cfg.batch_scope == "per_rank":
        new.batch_size = cfg.batch_size * ctx.world_size
    factor = {"none": 1.0, "linear": float(ctx.world_size), "sqrt": math.sqrt(ctx.world_size)}
    new.optimizer.lr = cfg.optimizer.lr * factor[cfg.lr_scaling]
    return new


def wrap_trainable(objective: nn.Module, ctx: DistContext, device: torch.device,
                   sync_batchnorm: bool = False) -> Callable[[], None]:
    """Wrap the student and trainable method adapters in DDP; return a function that unwraps.

    The teacher stays a plain module: it has no gradients to synchronise and
    wrapping it would only add buffer broadcasts. With ``sync_batchnorm`` the
    wrapped modules' BatchNorm layers use global-batch statistics until unwrapped.
    """
    if not ctx.enabled:
        return lambda: None
    from torch.nn.parallel import DistributedDataParallel as DDP

    device_ids = [device.index] if device.type == "cuda" else None
    student = objective.student
    methods = getattr(objective, "methods", None)
    trainable = [m for m in (methods or []) if any(p.requires_grad for p in m.parameters())]
    norms = [layer for module in (student, *trainable) for layer in module.modules()
             if type(layer) in _SYNCED]
    if norms and sync_batchnorm and ctx.is_main:  # rank 0 reports
        log.warning("train.sync_batchnorm: %d BatchNorm layer(s) normalise with the statistics of the whole "
                    "global batch across the %d processes", len(norms), ctx.world_size)
    elif norms and ctx.is_main:
        log.warning("the trained model has %d BatchNorm layer(s): each of the %d processes normalises its own "
                    "part of the batch, so this run does not follow a single-process run; set "
                    "train.sync_batchnorm: true to use the global batch's statistics (docs/SCALING.md)",
                    len(norms), ctx.world_size)
    restore = sync_batchnorm_layers(norms) if sync_batchnorm else (lambda: None)
    objective.student = DDP(student, device_ids=device_ids)
    originals: dict[int, nn.Module] = {}
    if methods is not None:
        for i, method in enumerate(methods):
            if any(p.requires_grad for p in method.parameters()):
                originals[i] = method
                # per-sample memory banks are kept in step by the method (CRD all-gathers its
                # row updates); broadcasting whole banks every step would be wasted traffic
                methods[i] = DDP(method, device_ids=device_ids, **_no_forward_buffer_sync(DDP))

    def unwrap() -> None:
        objective.student = student
        for i, method in originals.items():
            methods[i] = method
        restore()

    return unwrap


def _no_forward_buffer_sync(ddp: type) -> dict[str, bool]:
    """DDP's option that skips broadcasting buffers before every forward pass.

    Newer PyTorch names it ``forward_sync_buffers`` and deprecates ``broadcast_buffers`` (which also
    skipped the one broadcast at wrapping; a method's banks are already rank 0's on every rank, as CRD
    broadcasts them when it builds them, so that broadcast changes nothing).
    """
    if "forward_sync_buffers" in inspect.signature(ddp.__init__).parameters:
        return {"forward_sync_buffers": False}
    return {"broadcast_buffers": False}


class _SumOverRanks(torch.autograd.Function):
    """``all_reduce(SUM)`` that autograd sees through: the gradient of a sum over ranks is
    the sum over ranks of the gradients."""

    @staticmethod
    def forward(ctx, tensor: Tensor) -> Tensor:  # type: ignore[override]
        total = tensor.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(total, op=dist.ReduceOp.SUM)
        return total

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:  # type: ignore[override]
        total = grad.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(total, op=dist.ReduceOp.SUM)
        return total


def _global_batch_norm(layer: nn.modules.batchnorm._BatchNorm, x: Tensor) -> Tensor:
    """BatchNorm in training mode with the mean and (biased) variance of every rank's samples.

    Two exact passes (mean, then the centred sum of squares), so the result is what one process
    computes on the whole batch up to round-off; the running statistics are updated with the
    global unbiased variance, as ``nn.BatchNorm`` does. Works on CPU (gloo) and CUDA alike,
    where ``nn.SyncBatchNorm`` is CUDA-only.
    """
    layer._check_input_dim(x)
    dims = [0, *range(2, x.dim())]
    shape = (1, -1, *([1] * (x.dim() - 2)))
    count = torch.full((1,), x.numel() / x.shape[1], dtype=torch.float32, device=x.device)
    local = torch.cat([x.float().sum(dims), count])
    total = _SumOverRanks.apply(local)
    n = total[-1]
    mean = total[:-1] / n
    centred = x.float() - mean.view(shape)
    var = _SumOverRanks.apply((centred * centred).sum(dims)) / n
    if layer.track_running_stats and layer.running_mean is not None and layer.running_var is not None:
        with torch.no_grad():
            layer.num_batches_tracked.add_(1)
            momentum = (1.0 / float(layer.num_batches_tracked) if layer.momentum is None
                        else layer.momentum)
            unbiased = var * (n / (n - 1).clamp_min(1))
            layer.running_mean.lerp_(mean.to(layer.running_mean.dtype), momentum)
            layer.running_var.lerp_(unbiased.to(layer.running_var.dtype), momentum)
    out = centred * torch.rsqrt(var + layer.eps).view(shape)
    if layer.affine:
        out = out * layer.weight.view(shape) + layer.bias.view(shape)
    return out.to(x.dtype)


def _synced_forward(self: nn.modules.batchnorm._BatchNorm, x: Tensor) -> Tensor:
    if self.training and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        return _global_batch_norm(self, x)
    return super(type(self), self).forward(x)


_SYNCED: dict[type, type] = {
    base: type(f"GlobalBatch{base.__name__}", (base,), {"forward": _synced_forward, "__module__": __name__})
    for base in (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
}


def sync_batchnorm_layers(layers: list[nn.Module]) -> Callable[[], None]:
    """Make ``layers`` (plain ``BatchNorm1d/2d/3d``) normalise with global-batch statistics under
    ``torch.distributed``; return a function that makes them plain again.

    Only the class changes: parameters, buffers and state-dict names stay the same objects, so the
    optimiser and checkpoints are unaffected, and a model saved from a synced run loads anywhere.
    """
    originals = [(layer, type(layer)) for layer in layers if type(layer) in _SYNCED]
    for layer, base in originals:
        layer.__class__ = _SYNCED[base]

    def restore() -> None:
        for layer, base in originals:
            layer.__class__ = base

    return restore


def shard_batch(xb: Tensor, yb: Tensor, idx: Tensor, ctx: DistContext) -> tuple[Tensor, Tensor, Tensor, float]:
    """This rank's contiguous chunk of a global batch, and the weight for its loss.

    The weight ``world_size * n_local / n_global`` turns DDP's plain average of
    per-rank gradients into the gradient of the global-batch mean. A rank whose
    chunk is empty (a last batch smaller than the world) runs one sample with
    weight 0, so every rank still takes part in the gradient all-reduce.
    """
    if not ctx.enabled:
        return xb, yb, idx, 1.0
    n_global = len(xb)
    bounds = [n_global * r // ctx.world_size for r in range(ctx.world_size + 1)]
    lo, hi = bounds[ctx.rank], bounds[ctx.rank + 1]
    if hi == lo:
        return xb[:1], yb[:1], idx[:1], 0.0
    return xb[lo:hi], yb[lo:hi], idx[lo:hi], ctx.world_size * (hi - lo) / n_global


def scale_losses(losses: dict[str, Tensor], weight: float) -> dict[str, Tensor]:
    if weight == 1.0:
        return losses
    return {name: value * weight for name, value in losses.items()}


def average_sums(sums: dict[str, Tensor], ctx: DistContext) -> dict[str, Tensor]:
    """Mean over ranks of the per-epoch loss sums (each already weighted by :func:`shard_batch`)."""
    if not ctx.enabled or not sums:
        return sums
    names = sorted(sums)
    stacked = torch.stack([torch.as_tensor(sums[n], dtype=torch.float32) for n in names])
    dist.all_reduce(stacked, op=dist.ReduceOp.SUM)
    stacked /= ctx.world_size
    return dict(zip(names, stacked.unbind()))


def first_bad_step(step: Tensor, ctx: DistContext) -> Tensor:
    """The earliest non-finite step over all ranks (``-1``: none)."""
    if not ctx.enabled:
        return step
    big = torch.iinfo(torch.long).max
    value = torch.where(step < 0, torch.full_like(step, big), step).reshape(1)
    dist.all_reduce(value, op=dist.ReduceOp.MIN)
    return torch.where(value == big, torch.full_like(value, -1), value).reshape(())


WAIT_FOR_MAIN_PROCESS = datetime.timedelta(days=1)


def on_main_process(compute: Callable[[], Any]) -> Any:
    """``compute()`` run by rank 0 alone; every rank returns its result (a JSON value, e.g. metrics).

    Under torchrun the test evaluation after training is the same on every rank,
    so only rank 0 makes it while the others wait; they receive the result as
    JSON (no pickle crosses between processes). When ``compute`` raises on rank
    0, the others raise too instead of waiting for a result that never comes:
    the same :class:`~kdistill.errors.KDistillError` message for a user's
    mistake, else a ``RuntimeError`` naming rank 0's error. With one process,
    or no process group, ``compute()`` simply runs.
    """
    ctx = context_from_env()
    if not (ctx.enabled and dist.is_available() and dist.is_initialized()):
        return compute()
    # The others wait as long as rank 0 computes: on a group of their own, on the CPU, whose timeout is a
    # day rather than the default group's (10 minutes under NCCL, shorter than evaluating a large test split).
    # A rank that dies is torchrun's to handle: it stops the job.
    group = dist.new_group(backend="gloo", timeout=WAIT_FOR_MAIN_PROCESS)
    failure: BaseException | None = None
    try:
        if ctx.is_main:
            try:
                payload = json.dumps({"value": compute()}, default=float)
            except BaseException as error:  # the others must hear of it, then rank 0 raises it itself
                failure = error
                payload = json.dumps({"error": str(error), "user": isinstance(error, KDistillError),
                                      "type": type(error).__name__})
            data = torch.frombuffer(bytearray(payload.encode()), dtype=torch.uint8)
            size = torch.tensor([data.numel()], dtype=torch.long)
        else:
            size = torch.zeros(1, dtype=torch.long)
        dist.broadcast(size, src=0, group=group)
        if not ctx.is_main:
            data = torch.empty(int(size.item()), dtype=torch.uint8)
        dist.broadcast(data, src=0, group=group)
    finally:
        dist.destroy_process_group(group)
    if failure is not None:
        raise failure
    message = json.loads(bytes(data.tolist()).decode())
    if "error" in message:
        if message["user"]:
            raise KDistillError(message["error"])
        raise RuntimeError(f"rank 0 failed ({message['type']}): {message['error']}")
    return message["value"]
