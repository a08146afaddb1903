"""The training loop: read it top to bottom.

One loop trains a plain model (:class:`~kdistill.distiller.Supervised`) and a
distilled student (:class:`~kdistill.distiller.Distiller`) alike. The whole
data set lives on the training device and batches are tensor slices, so there
is no DataLoader and no per-step host synchronisation: losses are summed on
the device and read once per epoch.

What makes distillation cost no more than ordinary training:

* without augmentation the frozen teacher's outputs are computed once
  (:mod:`kdistill.teacher_cache`) and looked up by sample index, so the loop
  never runs the teacher; with augmentation it runs live on the same batch;
* augmentation is batched on the device;
* on CUDA: TF32 matmuls, bf16 autocast, fused optimisers, and optionally
  ``torch.compile`` (``train.compile``) with CUDA graphs (``train.cuda_graphs``).
"""

from __future__ import annotations

import contextlib
import logging
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from kdistill.config import TrainConfig
from kdistill.data import DataSplits, iterate_batches, jitter
from kdistill.distiller import Distiller
from kdistill.errors import ConfigError, TrainingError
from kdistill.train import distributed
from kdistill.train.checkpoint import restore_training_state, save_checkpoint
from kdistill.train.optim import build_optimizer, lr_factor, set_lr

log = logging.getLogger("kdistill")


@dataclass
class History:
    """Per-epoch records and where the checkpoints went."""

    epochs: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int = -1
    best_score: float = -math.inf
    best_path: Path | None = None
    last_path: Path | None = None
    seconds: float = 0.0


def resolve_device(name: str = "auto") -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device '{name}' was requested but no CUDA GPU is available; use 'auto' or 'cpu'.")
    return device


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def split_validation(x: Tensor, y: Tensor, fraction: float, seed: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Hold out ``fraction`` of the training set (a fixed permutation per seed)."""
    n_val = int(round(len(x) * fraction))
    if fraction <= 0 or n_val == 0:
        return x, y, x[:0], y[:0]
    if n_val >= len(x):
        raise ConfigError(f"val_fraction {fraction} leaves no training samples out of {len(x)}.")
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed)).to(x.device)
    return x[order[n_val:]], y[order[n_val:]], x[order[:n_val]], y[order[:n_val]]


@torch.no_grad()
def score(model: nn.Module, x: Tensor, y: Tensor, batch_size: int = 1024) -> float:
    """Accuracy for classifiers, negative mean squared error for regressors (higher is better)."""
    was_training = model.training
    model.eval()
    try:
        outputs = torch.cat([model(x[i:i + batch_size]).float() for i in range(0, len(x), batch_size)])
    finally:
        model.train(was_training)
    if y.dtype.is_floating_point:
        return -torch.mean((outputs.squeeze(-1) - y) ** 2).item()
    return (outputs.argmax(-1) == y).float().mean().item()


def autocast_context(device: torch.device, amp: str):
    if amp == "off":
        return contextlib.nullcontext()
    if device.type == "cuda" and amp in {"auto", "bf16"}:
        return torch.autocast("cuda", dtype=torch.bfloat16)
    if amp == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def enable_tf32(device: torch.device) -> None:
    """TF32 tensor-core matmuls and convolutions on CUDA (10-bit mantissa inputs, fp32 accumulate)."""
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True


def compile_models(objective: nn.Module, device: torch.device, cfg: TrainConfig) -> bool:
    """``torch.compile`` the student and teacher in place (state-dict names stay unchanged).

    ``cuda_graphs`` uses the ``reduce-overhead`` mode, which replays whole
    steps as CUDA graphs; it only exists on CUDA and is ignored elsewhere.
    Returns whether CUDA graphs are in use.
    """
    cuda_graphs = cfg.cuda_graphs and device.type == "cuda"
    if cfg.cuda_graphs and not cuda_graphs:
        log.info("train.cuda_graphs needs a CUDA device; ignored on %s", device.type)
    if not (cfg.compile or cuda_graphs):
        return False
    mode = "reduce-overhead" if cuda_graphs else None
    for name in ("student", "teacher"):
        model = getattr(objective, name, None)
        if model is not None:
            model.compile(mode=mode)
    log.info("models compiled with torch.compile (mode=%s)", mode or "default")
    return cuda_graphs


def prepare_teacher(objective: Distiller, x_train: Tensor, augment_jitter: int, cache: bool | str,
                    out: Path | None) -> None:
    """Cache the teacher's outputs when the transfer set is fixed; otherwise say why it runs live."""
    mode = ("auto" if cache else "off") if isinstance(cache, bool) else cache
    if mode not in {"auto", "device", "memmap", "off"}:
        raise ConfigError(f"teacher cache must be auto, device, memmap or off; got {cache!r}.")
    objective.teacher_cache = None
    if augment_jitter:
        log.info("augmentation is on: the teacher runs live on every augmented batch (no cache)")
    elif mode == "off":
        log.info("teacher cache is off: the teacher runs live on every batch")
    elif objective.needs_live_teacher:
        log.info("a distillation method needs the live teacher: the teacher runs on every batch")
    else:
        storage = "memmap" if mode == "memmap" else "device"
        directory = str(out / "teacher-cache") if storage == "memmap" and out is not None else None
        objective.cache_teacher(x_train, storage=storage, directory=directory)
        log.info("teacher outputs cached for %d training samples (%s); the loop skips the teacher",
                 len(x_train), storage)


def _progress(enabled: bool):
    if not enabled:
        return None
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeRemainingColumn(), TextColumn("{task.fields[status]}"), transient=False)


def fit(
    objective: nn.Module,
    data: DataSplits,
    cfg: TrainConfig,
    *,
    out_dir: str | Path | None = None,
    resume: str | Path | None = None,
    augment_jitter: int = 0,
    cache_teacher: bool | str = True,
    metadata: dict[str, Any] | None = None,
    description: str = "train",
    on_epoch_end: Callable[[int, dict[str, float]], None] | None = None,
) -> History:
    """Train ``objective.student`` (and any method adapters) on ``data``.

    ``objective`` returns a dict of losses with ``"loss"``; see
    :class:`~kdistill.distiller.Supervised` and :class:`~kdistill.distiller.Distiller`.
    With ``out_dir``, ``last.safetensors`` is written every epoch and
    ``best.safetensors`` whenever the validation score improves. ``resume``
    continues from such a checkpoint with its optimiser and RNG state.
    ``cache_teacher`` is ``True``/``"auto"``/``"device"``, ``"memmap"``, or
    ``False``/``"off"``; the cache is only used without augmentation.
    ``on_epoch_end(epoch, record)`` is called after each epoch (it may raise,
    e.g. ``optuna.TrialPruned``). Under ``torchrun`` training is data-parallel
    (see :mod:`kdistill.train.distributed`).
    """
    device = resolve_device(cfg.device)
    dist_ctx, device = distributed.init_distributed(device)  # [ddp]
    cfg = distributed.effective_config(cfg, dist_ctx)  # [ddp] batch_scope / lr_scaling
    enable_tf32(device)
    seed_everything(cfg.seed)
    x_train, y_train, x_val, y_val = split_validation(data.x_train, data.y_train, cfg.val_fraction, cfg.seed)
    x_train, y_train, x_val, y_val = (t.to(device) for t in (x_train, y_train, x_val, y_val))
    objective.to(device)
    student = objective.student
    modules = objective.trainable_modules()

    if isinstance(objective, Distiller):
        objective.check_compatible(x_train[:2])
        objective.setup_methods(x_train[:2], len(x_train))
        objective.to(device)  # adapters built by setup_methods
        with autocast_context(device, cfg.amp):  # cached logits match the live teacher's precision
            prepare_teacher(objective, x_train, augment_jitter, cache_teacher,
                            Path(out_dir) if out_dir is not None else None)
    cuda_graphs = compile_models(objective, device, cfg)

    params = [p for m in modules.values() for p in m.parameters()]
    optimizer = build_optimizer(params, cfg.optimizer, fused=device.type == "cuda")
    steps_per_epoch = max(1, math.ceil(len(x_train) / cfg.batch_size))
    total_steps = steps_per_epoch * cfg.epochs
    base_lr = cfg.scaled_lr()  # linear scaling rule for large batches, if configured
    history = History()
    start_epoch = 0
    meta_base = dict(metadata or {}, train=cfg.model_dump(mode="json"), world_size=dist_ctx.world_size)  # [ddp]

    if resume is not None:
        meta = restore_training_state(resume, modules, optimizer)
        start_epoch = int(meta["epoch"]) + 1
        history.epochs = list(meta.get("history", []))
        history.best_epoch = int(meta.get("best_epoch", -1))
        history.best_score = float(meta.get("best_score", -math.inf))
        log.info("resumed from %s after epoch %d", resume, start_epoch)

    out = Path(out_dir) if out_dir is not None else None
    progress = _progress(cfg.progress and dist_ctx.is_main)  # [ddp]
    unwrap_ddp = distributed.wrap_trainable(objective, dist_ctx, device)  # [ddp] never the teacher
    task = progress.add_task(description, total=total_steps, completed=start_epoch * steps_per_epoch,
                             status="") if progress else None
    started = time.perf_counter()
    with progress or contextlib.nullcontext():
        for epoch in range(start_epoch, cfg.epochs):
            epoch_start = time.perf_counter()
            objective.train()
            if isinstance(objective, Distiller):
                objective.epoch = epoch
            # a fresh generator per epoch makes shuffles reproducible after a resume
            gen_device = device if device.type == "cuda" else torch.device("cpu")
            generator = torch.Generator(gen_device).manual_seed(cfg.seed * 100_003 + epoch)
            sums: dict[str, Tensor] = {}
            first_bad_step = torch.full((), -1, device=device, dtype=torch.long)
            step = epoch * steps_per_epoch
            for xb, yb, idx in iterate_batches(x_train, y_train, cfg.batch_size, shuffle=True,
                                               generator=generator):
                set_lr(optimizer, base_lr, lr_factor(cfg.scheduler, step, total_steps, steps_per_epoch))
                if cuda_graphs:
                    torch.compiler.cudagraph_mark_step_begin()  # the last step's graph outputs may be reused
                if augment_jitter:
                    xb = jitter(xb, augment_jitter, generator=generator, fill=data.fill_value)
                xb, yb, idx, weight = distributed.shard_batch(xb, yb, idx, dist_ctx)  # [ddp]
                with autocast_context(device, cfg.amp):
                    losses = distributed.scale_losses(objective(xb, yb, idx), weight)  # [ddp]
                loss = losses["loss"]
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if cfg.grad_clip:
                    nn.utils.clip_grad_norm_(params, cfg.grad_clip)
                optimizer.step()
                # record the first non-finite step without a host sync
                bad = ~torch.isfinite(loss.detach())
                first_bad_step = torch.where(bad & (first_bad_step < 0), step, first_bad_step)
                for name, value in losses.items():
                    sums[name] = sums.get(name, 0) + value.detach().float()
                step += 1
                if progress:
                    progress.advance(task)

            bad_step = int(distributed.first_bad_step(first_bad_step, dist_ctx).item())  # [ddp]
            sums = distributed.average_sums(sums, dist_ctx)  # [ddp]
            if bad_step >= 0:
                last_good = history.last_path or (out / "last.safetensors" if out else None)
                where = f"the last good checkpoint is '{last_good}'" if last_good and Path(last_good).exists() \
                    else "no checkpoint was written yet"
                raise TrainingError(
                    f"The training loss became NaN or infinite at step {bad_step} (epoch {epoch}); "
                    f"training stopped and no model was saved for this epoch; {where}. Lower the "
                    "learning rate, set train.grad_clip, or check the inputs for NaN values."
                )
            n = steps_per_epoch
            record: dict[str, float] = {"epoch": epoch, **{k: (v / n).item() for k, v in sums.items()}}
            record["lr"] = optimizer.param_groups[0]["lr"]
            val_score = score(student, x_val, y_val) if len(x_val) else -record["loss"]
            record["val_score"] = val_score
            record["seconds"] = time.perf_counter() - epoch_start
            history.epochs.append(record)
            improved = val_score > history.best_score
            if improved:
                history.best_score, history.best_epoch = val_score, epoch
            if out is not None and dist_ctx.is_main:  # [ddp] rank 0 writes
                meta = dict(meta_base, epoch=epoch, step=step, history=history.epochs,
                            best_epoch=history.best_epoch, best_score=history.best_score)
                history.last_path = save_checkpoint(out / "last.safetensors", modules, meta, optimizer)
                if improved:
                    history.best_path = save_checkpoint(out / "best.safetensors", modules, meta)
                if cfg.keep_epochs:  # e.g. to distil from an early-stopped teacher later
                    save_checkpoint(out / f"epoch-{epoch:03d}.safetensors", modules, meta)
            if progress:
                progress.update(task, status=f"epoch {epoch + 1}/{cfg.epochs} loss {record['loss']:.4f} "
                                             f"val {val_score:.4f}")
            log.info("epoch %d loss %.4f val %.4f (%.1fs)", epoch, record["loss"], val_score, record["seconds"])
            if on_epoch_end is not None:
                on_epoch_end(epoch, record)
    unwrap_ddp()  # [ddp]
    distributed.barrier(dist_ctx)  # [ddp] checkpoints are on disk before any rank reads them
    history.seconds = time.perf_counter() - started
    if out is not None:
        history.best_path = out / "best.safetensors" if (out / "best.safetensors").exists() else None
        history.last_path = out / "last.safetensors"
    return history
