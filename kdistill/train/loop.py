"""The training loop: read it top to bottom.

One loop trains every objective (:class:`~kdistill.train.objective.TrainingObjective`):
a plain model, a distilled student, mutual-learning peers. Batches come from
one of two sources:

* **memory** (the default for sets that fit): the whole data set lives on the
  training device and batches are tensor slices, so there is no DataLoader
  and no per-step host synchronisation: losses are summed on the device and
  read once per epoch;
* **stream**: a map-style ``Dataset`` (an image folder of any size, your own
  set) or your own ``DataLoader``, read by DataLoader workers one batch at a
  time (:mod:`kdistill.data.streaming`); under ``torchrun`` a
  ``DistributedSampler`` gives each process its shard.

What makes distillation cost no more than ordinary training:

* without augmentation the frozen teacher's outputs are computed once
  (:mod:`kdistill.teacher_cache`, in the objective's ``prepare``) and looked
  up by sample index, so the loop never runs the teacher; with augmentation
  it runs live on the same batch;
* augmentation is batched on the device;
* on CUDA: TF32 matmuls, bf16 autocast (or fp16 with a gradient scaler),
  fused optimisers, and optionally ``torch.compile`` (``train.compile``) with
  CUDA graphs (``train.cuda_graphs``).

What else a step may do: ``train.accumulate`` micro-batches per optimiser
step, an exponential moving average of the student (``train.ema``, updated
after every step, validated and saved as ``ema.*``), early stopping after
``train.patience`` epochs without a better validation score.

Checkpoints are written in an order that survives a kill at any point: the
per-epoch copy, then ``best``, then ``last``. ``last`` is the commit point of
an epoch, so a resume from it re-runs (and re-writes) anything after it.
"""

from __future__ import annotations

import contextlib
import logging
import math
import random
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from torch.utils.data import DataLoader, Dataset

from kdistill.config import TrackingConfig, TrainConfig
from kdistill.data import DataSplits, hflip, input_spec, iterate_batches, jitter, num_batches
from kdistill.data.augment import AugmentedDataset
from kdistill.data.streaming import (
    IndexedDataset,
    StreamBatches,
    StreamSplits,
    check_loader_mode,
    comfortable_bytes,
    data_log,
    default_workers,
    eval_loader,
    evaluation_batch_size,
    first_inputs,
    split_positions,
    stream_from_tensors,
    to_device,
)
from kdistill.errors import CheckpointError, ConfigError, TrainingError
from kdistill.models import built_as, rebuild_spec
from kdistill.train import distributed
from kdistill.train.checkpoint import (
    read_checkpoint_metadata,
    refresh_sidecar,
    remove_stale_temp_files,
    restore_training_state,
    save_checkpoint,
)
from kdistill.train.lock import folder_lock
from kdistill.train.objective import FitContext, TrainingObjective, score, score_batches
from kdistill.train.optim import build_optimizer, lr_factor, set_lr
from kdistill.train.precision import autocast_context, enable_tf32, grad_scaler
from kdistill.train.targets import TargetScale, fold, standardise_for_training
from kdistill.train.tracking import Tracker, write_history_csv
from kdistill.workers import worker_errors_in_words

log = logging.getLogger("kdistill")

#: an epoch whose mean loss exceeds this many times the run's first-step loss has diverged
DIVERGENCE_FACTOR = 1000.0

__all__ = ["History", "apply_max_norm", "autocast_context", "fit", "resolve_device", "score", "seed_everything",
           "split_validation"]


@dataclass
class History:
    """Per-epoch records and where the checkpoints went."""

    epochs: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int = -1
    best_score: float = -math.inf
    best_path: Path | None = None
    last_path: Path | None = None
    seconds: float = 0.0
    initial_loss: float | None = None
    target_scale: TargetScale | None = None  # [regression] the standardisation the checkpoints were trained in
    stopped_early: bool = False


def resolve_device(name: str = "auto") -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise ConfigError(f"device '{name}' is not a device name; use auto, cpu, cuda or cuda:N.") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device '{name}' was requested but no CUDA GPU is available; use 'auto' or 'cpu'.")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise ConfigError(f"device '{name}' does not exist: this machine has {torch.cuda.device_count()} "
                          "CUDA device(s), numbered from 0.")
    if device.type == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        raise ConfigError(f"device '{name}' was requested but Apple's MPS backend is not available here; "
                          "use 'auto' or 'cpu'.")
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


def unwrapped_modules(objective: TrainingObjective) -> dict[str, nn.Module]:
    """The objective's trainable modules, held so that DDP wrapping cannot rename their state.

    Wrapping replaces the student attribute and the items of a method list in
    place; a ModuleList copy keeps the original items, so checkpoints always
    hold ``model.*`` / ``methods.0.*`` names, never ``.module.`` ones.
    """
    return {name: nn.ModuleList(list(m)) if isinstance(m, nn.ModuleList) else m
            for name, m in objective.trainable_modules().items()}


TrainData = DataSplits | StreamSplits | Dataset | DataLoader


@dataclass
class _Setup:
    """Everything fixed for the whole run, built once by :func:`_set_up`.

    ``stream`` is ``None`` on the whole-tensor path (batches are slices of
    ``x_train``); on the streaming path it yields the batches and ``x_train``
    holds a few samples only.
    """

    device: torch.device
    dist_ctx: distributed.DistContext
    cfg: TrainConfig
    x_train: Tensor
    y_train: Tensor
    x_val: Tensor
    y_val: Tensor
    modules: dict[str, nn.Module]
    params: list[nn.Parameter]
    optimizer: torch.optim.Optimizer
    steps_per_epoch: int
    total_steps: int
    base_lr: float
    cuda_graphs: bool
    stream: StreamBatches | DataLoader | None = None
    val_loader: DataLoader | None = None
    micro_batches: int = 0          # per epoch, on this process
    samples_per_epoch: int = 0      # per epoch, before sharding (memory) or of this shard (stream)
    scaler: torch.amp.GradScaler | None = None
    ema: AveragedModel | None = None
    mix: Callable[[Tensor, Tensor], tuple[Tensor, Tensor]] | None = None

    @property
    def saved(self) -> dict[str, nn.Module]:
        """What a checkpoint holds: the trained modules, and the student's average as ``ema``."""
        return {**self.modules, "ema": self.ema} if self.ema is not None else self.modules

    @property
    def has_validation(self) -> bool:
        return self.val_loader is not None or len(self.x_val) > 0


def _choose_loader(data: TrainData, mode: str, device: torch.device, per_sample: bool = False) -> str:
    """``memory`` or ``stream`` for ``data`` under ``data.loader: mode``, logged at run start."""
    check_loader_mode(mode)
    if per_sample and (isinstance(data, DataLoader) or mode == "memory"):
        raise ConfigError("Per-sample transforms (data.augment.transforms / timm) run in DataLoader workers on "
                          "the streaming path; set data.loader: stream or auto (and pass a Dataset, not a "
                          "DataLoader, to fit).")
    if per_sample and mode == "auto":
        chosen, why = "stream", "auto: per-sample transforms run in DataLoader workers"
    elif isinstance(data, DataLoader):
        if mode == "memory":
            raise ConfigError("A DataLoader is read batch by batch; it cannot be loaded whole "
                              "(loader: memory). Pass its Dataset instead, or use loader: stream.")
        chosen, why = "stream", "your DataLoader"
    elif mode != "auto":
        chosen, why = mode, f"data.loader: {mode}"
    elif isinstance(data, DataSplits):
        needed = sum(t.element_size() * t.numel() for t in (data.x_train, data.y_train))
        budget = comfortable_bytes(device)
        chosen = "memory" if needed <= budget else "stream"
        why = (f"auto: the training set takes {needed / 2**20:,.0f} MiB, "
               f"{'within' if chosen == 'memory' else 'more than'} the {budget / 2**20:,.0f} MiB that fit "
               f"comfortably on {device.type}")
    else:
        chosen, why = "stream", f"auto: a {type(data.train if isinstance(data, StreamSplits) else data).__name__} " \
                                "is read sample by sample"
    if chosen == "stream" and isinstance(data, DataSplits) and data.task == "detection":
        raise ConfigError("Detection sets train from memory only; set data.loader: memory (or auto).")
    data_log.info("data loader: %s (%s)", chosen, why)
    return chosen


def _materialise(dataset: Dataset) -> tuple[Tensor, Tensor]:
    """Every sample of ``dataset`` stacked into two tensors (``loader: memory`` for a Dataset)."""
    xs, ys = [], []
    for batch in eval_loader(dataset):
        x, y, _ = to_device(batch, torch.device("cpu"))
        xs.append(x)
        ys.append(y)
    if not xs:
        raise ConfigError("The training set is empty.")
    return torch.cat(xs), torch.cat(ys)


def _set_up(objective: TrainingObjective, data: TrainData, cfg: TrainConfig, augment_jitter: int,
            augment_flip: bool, cache: str, out: Path | None, loader: str, workers: int | None,
            transform: Callable[[Tensor], Tensor] | None,
            mix: Callable[[Tensor, Tensor], tuple[Tensor, Tensor]] | None = None) -> _Setup:
    device = resolve_device(cfg.device)
    dist_ctx, device = distributed.init_distributed(device)  # [ddp]
    cfg = distributed.effective_config(cfg, dist_ctx)  # [ddp] batch_scope / lr_scaling
    enable_tf32(device)
    scaler = grad_scaler(device, cfg.amp)
    seed_everything(cfg.seed)
    mode = _choose_loader(data, loader, device, per_sample=transform is not None)
    if mode == "memory" and not isinstance(data, DataSplits):
        base = data.train if isinstance(data, StreamSplits) else data
        x_all, y_all = _materialise(base)
        data = DataSplits(name=getattr(data, "name", type(base).__name__), x_train=x_all, y_train=y_all,
                          x_test=x_all[:0], y_test=y_all[:0], num_classes=0, input_shape=tuple(x_all.shape[1:]))
    context = dict(device=device, amp=cfg.amp, augment_jitter=augment_jitter, augment_flip=augment_flip,
                   augment_transform=transform is not None, augment_mix=mix is not None, cache=cache, out_dir=out,
                   cache_dir=_cache_dir(out, dist_ctx))
    stream: StreamBatches | DataLoader | None = None
    val_loader = None
    if mode == "memory":
        assert isinstance(data, DataSplits)
        if len(data.x_train) == 0:
            raise ConfigError(f"Data set '{data.name}' has no training samples.")
        x_train, y_train, x_val, y_val = split_validation(data.x_train, data.y_train, cfg.val_fraction, cfg.seed)
        x_train, y_train, x_val, y_val = (t.to(device) for t in (x_train, y_train, x_val, y_val))
        objective.to(device)
        # the rows of data.x_train that x_train holds, in order (split_validation's permutation)
        kept = split_positions(len(data.x_train), cfg.val_fraction, cfg.seed)[0]
        objective.prepare(x_train, FitContext(**context, num_train=len(x_train), train_positions=kept,
                                              train_set_size=len(data.x_train)))
        micro = num_batches(len(x_train), cfg.batch_size)
        samples = len(x_train)
    else:
        if isinstance(data, DataLoader):
            stream = data
            num_train = len(data.dataset)  # type: ignore[arg-type]
            sample = first_inputs(data.dataset)
            cache_source = None  # its batches may carry no indices, or augmented inputs
            micro, samples = len(data), num_train
            if dist_ctx.enabled and not isinstance(getattr(data, "sampler", None),
                                                   torch.utils.data.distributed.DistributedSampler):
                log.warning("under torchrun your DataLoader should use a DistributedSampler, or every "
                            "process trains on the whole set")
        else:
            base = data.train if isinstance(data, StreamSplits) else (
                stream_from_tensors(data).train if isinstance(data, DataSplits) else data)
            train_pos, val_pos = split_positions(len(base), cfg.val_fraction, cfg.seed)  # type: ignore[arg-type]
            # only the training view is augmented; validation reads the same samples unchanged
            mean, std = (data.mean, data.std) if isinstance(data, DataSplits | StreamSplits) else (None, None)
            augmented = AugmentedDataset(base, transform, mean, std) if transform is not None else base
            train_set = IndexedDataset(augmented, train_pos)
            workers = default_workers() if workers is None else workers
            stream = StreamBatches(train_set, cfg.batch_size, seed=cfg.seed, rank=dist_ctx.rank,
                                   world_size=dist_ctx.world_size, workers=workers,
                                   pin_memory=device.type == "cuda")
            eval_batch = evaluation_batch_size(cfg.batch_size)
            if val_pos:
                val_loader = eval_loader(IndexedDataset(base, val_pos), eval_batch, workers)
            num_train = len(train_set)
            sample = first_inputs(train_set)
            cache_source = None if transform is not None else eval_loader(train_set, eval_batch, workers)
            micro, samples = len(stream), stream.samples_per_epoch
            data_log.info("streaming %d training samples with %d DataLoader worker(s)%s", num_train, workers,
                          f", {len(stream.sampler)} per process" if dist_ctx.enabled else "")
        x_train = sample.to(device)
        y_train = x_val = y_val = x_train[:0]
        objective.to(device)

        def train_batches():
            for batch in worker_errors_in_words(cache_source or ()):
                x, _, idx = to_device(batch, device)
                yield x, idx

        positions = None if isinstance(data, DataLoader) else (train_pos, len(base))  # type: ignore[arg-type]
        objective.prepare(x_train, FitContext(**context, num_train=num_train, streaming=True,
                                              train_batches=train_batches if cache_source is not None else None,
                                              train_positions=positions[0] if positions else None,
                                              train_set_size=positions[1] if positions else None))
    objective.to(device)
    cuda_graphs = compile_models(objective, device, cfg)
    modules = unwrapped_modules(objective)
    params = [p for m in modules.values() for p in m.parameters()]
    optimizer = build_optimizer(modules, cfg.optimizer, fused=device.type == "cuda")
    steps_per_epoch = max(1, math.ceil(micro / cfg.accumulate))
    ema = None
    if cfg.ema is not None:
        ema = AveragedModel(modules["model"], multi_avg_fn=get_ema_multi_avg_fn(cfg.ema), use_buffers=True)
    return _Setup(device, dist_ctx, cfg, x_train, y_train, x_val, y_val, modules, params, optimizer,
                  steps_per_epoch, steps_per_epoch * cfg.epochs, cfg.scaled_lr(), cuda_graphs, stream, val_loader,
                  micro, samples, scaler, ema, mix)


def _cache_dir(out: Path | None, ctx: distributed.DistContext) -> Path | None:
    """Where a memory-mapped teacher cache goes: one folder per process, so no two write one file."""
    if out is None:
        return None
    return out / ("teacher-cache" if ctx.rank == 0 else f"teacher-cache-rank{ctx.rank}")


def _resume(path: str | Path, s: _Setup, history: History, metadata: dict[str, Any]) -> int:
    """Restore modules, optimiser, RNG and history from ``path``; return the next epoch.

    ``metadata`` is what this run will record (its configured ``train`` section, the world
    size and the caller's sections such as ``distill`` and ``data``); every difference from
    what the checkpoint recorded is reported.
    """
    meta = read_checkpoint_metadata(path)
    expected, found = metadata.get("role"), meta.get("role")
    if expected and found and expected != found:
        raise CheckpointError(f"Checkpoint '{path}' was written while training the {found}, but this run "
                              f"trains the {expected}; resume it with the command that wrote it.")
    saved_optimizer = (meta.get("train") or {}).get("optimizer", {}).get("name")
    if saved_optimizer and saved_optimizer != s.cfg.optimizer.name:
        raise CheckpointError(f"Checkpoint '{path}' holds {saved_optimizer} optimiser state but this run "
                              f"uses {s.cfg.optimizer.name}; resume with train.optimizer.name: "
                              f"{saved_optimizer}, or start a fresh run without --resume.")
    meta = restore_training_state(path, s.saved, s.optimizer, s.scaler)
    _report_changed_settings(path, meta, metadata)
    history.epochs = list(meta.get("history", []))
    history.best_epoch = int(meta.get("best_epoch", -1))
    history.best_score = float(meta.get("best_score", -math.inf))
    history.initial_loss = meta.get("initial_loss")
    history.last_path = Path(path)
    next_epoch = int(meta["epoch"]) + 1
    log.info("resumed from %s after epoch %d", path, next_epoch - 1)
    return next_epoch


# recorded per checkpoint, not settings: the epoch's own state, and what says how to rebuild the model
_NOT_SETTINGS = {"role", "epoch", "step", "history", "best_epoch", "best_score", "initial_loss", "model_spec",
                 "grad_scaler"}
# how a run is shown, not what it computes
_DISPLAY_ONLY = {"train.progress"}


def _flatten(record: Any, prefix: str) -> dict[str, Any]:
    if not isinstance(record, dict):
        return {prefix: record}
    flat: dict[str, Any] = {}
    for key, value in record.items():
        if key == "files" and prefix == "data":
            continue  # which options name local files: follows from the options themselves
        flat.update(_flatten(value, f"{prefix}.{key}"))
    return flat


def _report_changed_settings(path: str | Path, saved: dict[str, Any], now: dict[str, Any]) -> list[str]:
    """Warn about every recorded setting that differs between checkpoint ``saved`` and this run (``now``).

    Covers the schedule (``train.*``), the loss (``distill.*``: temperature, alpha, methods), the
    data record, the model's options, and the number of processes. Returns the changes.
    """
    keys = sorted((set(saved) | set(now)) - _NOT_SETTINGS)
    flat_saved = {k: v for key in keys if key in saved for k, v in _flatten(saved[key], key).items()}
    flat_now = {k: v for key in keys if key in now for k, v in _flatten(now[key], key).items()}
    changed = [f"{key}: {flat_saved.get(key)!r} -> {flat_now.get(key)!r}"
               for key in sorted(set(flat_saved) | set(flat_now))
               if key not in _DISPLAY_ONLY and key in flat_saved and flat_saved.get(key) != flat_now.get(key)]
    if changed:
        log.warning("resuming %s with changed settings: %s", path, "; ".join(changed))
    old_world, new_world = saved.get("world_size"), now.get("world_size")
    if isinstance(old_world, int) and isinstance(new_world, int) and old_world != new_world:
        log.warning("resuming a %d-process run as %d process%s: the data each step sees is split "
                    "differently from here on (see docs/SCALING.md)", old_world, new_world,
                    "" if new_world == 1 else "es")
    return changed


def _group_share(micro: int, size: int, s: _Setup) -> float:
    """The weight of micro-batch ``micro`` (``size`` samples) in the mean over its accumulation group.

    A group is ``train.accumulate`` consecutive micro-batches of ``batch_size``
    samples; the last group of an epoch may hold fewer. Weighting each
    micro-batch's mean loss by its share of the group's samples makes the
    summed gradient that of the group's mean, as one large batch would give.
    """
    k = s.cfg.accumulate
    if k == 1:
        return 1.0
    per_micro = s.stream.batch_size if isinstance(s.stream, StreamBatches) else s.cfg.batch_size
    if isinstance(s.stream, DataLoader):
        per_micro = s.stream.batch_size or size
    group = micro // k
    group_size = min(k * per_micro, s.samples_per_epoch - group * k * per_micro)
    return size / max(group_size, size)


def _train_epoch(objective: TrainingObjective, s: _Setup, epoch: int, augment_jitter: int, augment_flip: bool,
                 fill: float | tuple[float, ...], progress: Any, task: Any) -> tuple[dict[str, Tensor], Tensor,
                                                                                     Tensor | None]:
    """One pass over the shuffled training set; returns loss sums, first bad step, first loss."""
    cfg, device = s.cfg, s.device
    objective.set_epoch(epoch)
    objective.train()
    # a fresh generator per epoch makes shuffles reproducible after a resume
    gen_device = device if device.type == "cuda" else torch.device("cpu")
    generator = torch.Generator(gen_device).manual_seed(cfg.seed * 100_003 + epoch)
    sums: dict[str, Tensor] = {}
    first_bad_step = torch.full((), -1, device=device, dtype=torch.long)
    first_loss = None
    step = epoch * s.steps_per_epoch
    if s.stream is None:
        batches = iterate_batches(s.x_train, s.y_train, cfg.batch_size, shuffle=True, generator=generator)
    elif isinstance(s.stream, StreamBatches):
        batches = s.stream.epoch(epoch, device)
    else:  # the user's DataLoader
        sampler = getattr(s.stream, "sampler", None)
        if hasattr(sampler, "set_epoch"):
            sampler.set_epoch(epoch)
        batches = (to_device(batch, device) for batch in worker_errors_in_words(s.stream))
    k = cfg.accumulate
    group_loss: Tensor | None = None
    for micro, (xb, yb, idx) in enumerate(batches):
        if micro % k == 0:
            set_lr(s.optimizer, s.base_lr, lr_factor(cfg.scheduler, step, s.total_steps, s.steps_per_epoch))
            if s.cuda_graphs:
                torch.compiler.cudagraph_mark_step_begin()  # the last step's graph outputs may be reused
            group_loss = None
        if augment_jitter:
            xb = jitter(xb, augment_jitter, generator=generator, fill=fill)
        if augment_flip:
            xb = hflip(xb, generator=generator)
        if s.mix is not None:  # the teacher runs live on the mixed batch; labels become class probabilities
            xb, yb = s.mix(xb, yb)
        share = _group_share(micro, len(xb), s)
        if s.stream is None:
            xb, yb, idx, weight = distributed.shard_batch(xb, yb, idx, s.dist_ctx)  # [ddp]
        else:
            weight = 1.0  # [ddp] the sampler gave every process a shard of the same size
        with autocast_context(device, cfg.amp):
            losses = distributed.scale_losses(objective(xb, yb, idx), weight)  # [ddp]
        if share != 1.0:
            losses = {name: value * share for name, value in losses.items()}
        loss = losses["loss"]
        if micro % k == 0:
            s.optimizer.zero_grad(set_to_none=True)
        (s.scaler.scale(loss) if s.scaler is not None else loss).backward()
        group_loss = loss.detach() if group_loss is None else group_loss + loss.detach()
        for name, value in losses.items():
            sums[name] = sums.get(name, 0) + value.detach().float()
        if micro % k != k - 1 and micro != s.micro_batches - 1:
            continue  # more micro-batches to accumulate before the optimiser steps
        if s.scaler is not None:
            if cfg.grad_clip:
                s.scaler.unscale_(s.optimizer)
                nn.utils.clip_grad_norm_(s.params, cfg.grad_clip)
            s.scaler.step(s.optimizer)
            s.scaler.update()
        else:
            if cfg.grad_clip:
                nn.utils.clip_grad_norm_(s.params, cfg.grad_clip)
            s.optimizer.step()
        if cfg.max_norm:
            apply_max_norm(s.modules.values(), cfg.max_norm)
        if s.ema is not None:
            s.ema.update_parameters(s.modules["model"])
        # record the first non-finite step without a host sync
        bad = ~torch.isfinite(group_loss)
        first_bad_step = torch.where(bad & (first_bad_step < 0), step, first_bad_step)
        if first_loss is None:
            first_loss = group_loss.float()
        step += 1
        if progress:
            progress.advance(task)
    return sums, first_bad_step, first_loss


_MAX_NORM_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


@torch.no_grad()
def apply_max_norm(modules: Any, max_norm: float) -> None:
    """Max-norm constraint (Hinton et al. 2012, "Improving neural networks by preventing co-adaptation of
    feature detectors"): every unit's incoming weight vector ``w`` whose L2 norm exceeds ``max_norm`` is
    rescaled to ``w * max_norm / ||w||``; shorter vectors are left alone.

    A unit is an output row of an ``nn.Linear`` weight or one output filter of a convolution. Biases
    are not constrained. Called after every optimiser step, so the constraint holds at every step.
    """
    for module in modules:
        for layer in module.modules():
            if isinstance(layer, _MAX_NORM_LAYERS) and layer.weight.requires_grad:
                weight = layer.weight
                norms = weight.flatten(1).norm(dim=1).clamp_min(1e-12)
                scale = (max_norm / norms).clamp(max=1.0)
                weight.mul_(scale.view(-1, *([1] * (weight.dim() - 1))))


def _check_loss(history: History, record: dict[str, float], bad_step: int, epoch: int) -> None:
    """Stop on a non-finite step or a finite loss that exploded, naming a checkpoint of this run."""
    last_good = history.last_path
    where = (f"the last good checkpoint of this run is '{last_good}' (epoch {history.epochs[-1]['epoch']})"
             if last_good is not None and history.epochs else "no checkpoint of this run was written yet")
    if bad_step >= 0:
        raise TrainingError(
            f"The training loss became NaN or infinite at step {bad_step} (epoch {epoch}); training "
            f"stopped and no model was saved for this epoch; {where}. Lower the learning rate, set "
            "train.grad_clip, or check the inputs for NaN values."
        )
    initial = history.initial_loss
    if initial is not None and math.isfinite(initial) and record["loss"] > DIVERGENCE_FACTOR * max(abs(initial), 1.0):
        raise TrainingError(
            f"Training diverged: the mean loss of epoch {epoch} is {record['loss']:.4g}, more than "
            f"{DIVERGENCE_FACTOR:g} times the first step's {initial:.4g}; training stopped and no model "
            f"was saved for this epoch; {where}. Lower the learning rate (train.optimizer.lr) or set "
            "train.grad_clip."
        )


def _self_description(objective: TrainingObjective, data: TrainData) -> dict[str, Any]:
    """What a checkpoint needs to be evaluated, exported and deployed on its own, as far as fit knows it.

    The input spec comes from ``data``; a student that :func:`~kdistill.models.create_model`
    built also records its name and options, so that ``kdistill evaluate`` and
    ``export`` can rebuild it. Callers' metadata (from a config) takes precedence.
    """
    if not isinstance(data, DataSplits | StreamSplits):  # a bare Dataset or DataLoader describes nothing
        return {}
    described: dict[str, Any] = {"input_spec": input_spec(data).to_dict()}
    student = getattr(objective, "student", None)
    origin = built_as(student) if isinstance(student, nn.Module) else None
    if origin is not None:
        described["model_spec"] = rebuild_spec(origin["model"], origin["options"], student, data.input_shape,
                                               data.num_classes, data.name)
    return described


def _save_epoch(out: Path, s: _Setup, history: History, meta: dict[str, Any], epoch: int, improved: bool) -> None:
    """Write this epoch's checkpoints; ``last`` goes last, so it only ever points at a complete epoch."""
    if s.cfg.keep_epochs:  # e.g. to distil from an early-stopped teacher later
        save_checkpoint(out / f"epoch-{epoch:03d}.safetensors", s.saved, meta)
    if improved:
        history.best_path = save_checkpoint(out / "best.safetensors", s.saved, meta)
    history.last_path = save_checkpoint(out / "last.safetensors", s.saved, meta, s.optimizer, s.scaler)


def _validate(objective: TrainingObjective, s: _Setup, record: dict[str, float]) -> float:
    """The epoch's validation score (higher is better); with an EMA, the average's, which is what is kept."""
    if s.val_loader is not None:
        val_score = score_batches(objective.student, worker_errors_in_words(s.val_loader), s.device)
    elif len(s.x_val):
        val_score = objective.validation_score(s.x_val, s.y_val)
    else:
        return -record["loss"]
    if s.ema is None:
        return val_score
    record["val_score_student"] = val_score
    if s.val_loader is not None:
        return score_batches(s.ema.module, worker_errors_in_words(s.val_loader), s.device)
    return score(s.ema.module, s.x_val, s.y_val)


def _fill_value(data: TrainData) -> float | tuple[float, ...]:
    return data.fill_value if isinstance(data, DataSplits | StreamSplits) else 0.0


def fit(
    objective: TrainingObjective,
    data: TrainData,
    cfg: TrainConfig,
    *,
    out_dir: str | Path | None = None,
    resume: str | Path | None = None,
    augment_jitter: int = 0,
    augment_flip: bool = False,
    cache_teacher: bool | str = True,
    metadata: dict[str, Any] | None = None,
    description: str = "train",
    on_epoch_end: Callable[[int, dict[str, float]], None] | None = None,
    tracker: Tracker | TrackingConfig | None = None,
    loader: str = "auto",
    workers: int | None = None,
    transform: Callable[[Tensor], Tensor] | None = None,
    mix: Callable[[Tensor, Tensor], tuple[Tensor, Tensor]] | None = None,
) -> History:
    """Train ``objective.student`` (and any other trainable modules of the objective) on ``data``.

    ``data`` is a :class:`~kdistill.data.DataSplits` (whole tensors), a
    :class:`~kdistill.data.streaming.StreamSplits`, any map-style
    ``torch.utils.data.Dataset`` whose items are ``(x, y)``, or your own
    ``DataLoader`` yielding ``(x, y)`` or ``(x, y, index)`` batches (used as
    it is: no validation split, and the teacher runs live). ``loader``
    (``auto``/``memory``/``stream``, the config's ``data.loader``) picks the
    batch source; ``workers`` is the DataLoader's worker count when streaming
    (``None``: up to 4). Only the training part of a split is used; a
    ``val_fraction`` of it is held out to pick the best epoch. ``transform``
    (see :func:`kdistill.data.augment.build_transform`) augments each training
    image in the DataLoader workers, on the streaming path; the teacher then
    runs live on the student's augmented batch. ``mix`` (e.g. a
    :class:`kdistill.data.augment.BatchMix`, Mixup/CutMix) turns every training
    batch ``(x, y)`` into mixed inputs and class-probability targets on the
    device, on either path; the teacher runs live on the mixed batch and the
    label term takes the mixed targets.

    ``objective`` is a :class:`~kdistill.train.objective.TrainingObjective`:
    :class:`~kdistill.distiller.Supervised`, :class:`~kdistill.distiller.Distiller`,
    :class:`~kdistill.schemes.dml.MutualLearning`, or your own. With
    ``out_dir``, ``last.safetensors`` is written every epoch and
    ``best.safetensors`` whenever the validation score improves. ``resume``
    continues from such a checkpoint with its optimiser and RNG state.
    ``augment_jitter`` (pixels) and ``augment_flip`` augment every batch on the
    device. ``cache_teacher`` is ``True``/``"auto"``/``"device"``, ``"memmap"``,
    or ``False``/``"off"``; the cache is only used without augmentation.
    ``on_epoch_end(epoch, record)`` is called after each epoch (it may raise,
    e.g. ``optuna.TrialPruned``). ``tracker`` (a :class:`~kdistill.train.tracking.Tracker`
    or the config's ``tracking`` section) gets every epoch record and is closed on the way
    out; with ``out_dir``, ``history.csv`` is rewritten each epoch, and the folder is locked while training (a
    second process training into it is refused, as for CLI runs). Under ``torchrun`` training is data-parallel
    (see :mod:`kdistill.train.distributed`).
    """
    # one writer per folder, as for CLI runs (re-entrant: a run that already holds it goes on); rank 0 writes
    locked = out_dir is not None and distributed.is_main_process()
    with folder_lock(out_dir, "training") if locked else contextlib.nullcontext():  # type: ignore[arg-type]
        data, target_scale, restore_teacher = standardise_for_training(objective, data)  # [regression]
        if target_scale is not None:  # load_model folds it back: a checkpoint always predicts in the data's units
            metadata = dict(metadata or {}, target_scale=target_scale.to_dict())
        try:
            history = _fit(objective, data, cfg, out_dir=out_dir, resume=resume, augment_jitter=augment_jitter,
                           augment_flip=augment_flip, cache_teacher=cache_teacher, metadata=metadata,
                           description=description, on_epoch_end=on_epoch_end, tracker=tracker, loader=loader,
                           workers=workers, transform=transform, mix=mix)
        finally:
            restore_teacher()
    if target_scale is not None:
        fold(objective.student, target_scale)
        history.target_scale = target_scale
    return history


def _fit(
    objective: TrainingObjective,
    data: TrainData,
    cfg: TrainConfig,
    *,
    out_dir: str | Path | None = None,
    resume: str | Path | None = None,
    augment_jitter: int = 0,
    augment_flip: bool = False,
    cache_teacher: bool | str = True,
    metadata: dict[str, Any] | None = None,
    description: str = "train",
    on_epoch_end: Callable[[int, dict[str, float]], None] | None = None,
    tracker: Tracker | TrackingConfig | None = None,
    loader: str = "auto",
    workers: int | None = None,
    transform: Callable[[Tensor], Tensor] | None = None,
    mix: Callable[[Tensor, Tensor], tuple[Tensor, Tensor]] | None = None,
) -> History:
    """The loop itself; :func:`fit` with the targets as they are."""
    cache = ("auto" if cache_teacher else "off") if isinstance(cache_teacher, bool) else cache_teacher
    out = Path(out_dir) if out_dir is not None else None
    s = _set_up(objective, data, cfg, augment_jitter, augment_flip, cache, out, loader, workers, transform, mix)
    history = History()
    metadata = {**_self_description(objective, data), **(metadata or {})}
    # the configured schedule, not the one scaled for this world size (batch_scope / lr_scaling), so
    # that runs with the same config record the same settings whatever the number of processes
    meta_base = dict(metadata, train=cfg.model_dump(mode="json"), world_size=s.dist_ctx.world_size)  # [ddp]
    start_epoch = _resume(resume, s, history, meta_base) if resume is not None else 0
    if out is not None and s.dist_ctx.is_main:
        for name in ("best.safetensors", "last.safetensors", "history.csv"):
            remove_stale_temp_files(out / name)  # orphans of a killed earlier writer
        if resume is not None:  # a kill between a checkpoint and the files derived from it
            for name in ("best.safetensors", "last.safetensors"):
                refresh_sidecar(out / name)
            write_history_csv(out / "history.csv", history.epochs)

    progress = _progress(cfg.progress and s.dist_ctx.is_main)  # [ddp]
    task = progress.add_task(description, total=s.total_steps, completed=start_epoch * s.steps_per_epoch,
                             status="") if progress else None
    if not isinstance(tracker, Tracker) and s.dist_ctx.is_main:  # [ddp] rank 0 reports
        # named after the model's role when a run records it, so a teacher's numbers read as the teacher's
        tracker = Tracker.open(tracker, out, run_name=str(metadata.get("role") or description), params=meta_base)
    unwrap_ddp = distributed.wrap_trainable(objective, s.dist_ctx, s.device,  # [ddp] never the teacher
                                            sync_batchnorm=s.cfg.sync_batchnorm)
    started = time.perf_counter()
    try:
        with progress or contextlib.nullcontext():
            for epoch in range(start_epoch, cfg.epochs):
                epoch_start = time.perf_counter()
                sums, first_bad, first_loss = _train_epoch(objective, s, epoch, augment_jitter, augment_flip,
                                                           _fill_value(data), progress, task)
                bad_step = int(distributed.first_bad_step(first_bad, s.dist_ctx).item())  # [ddp]
                sums = distributed.average_sums(sums, s.dist_ctx)  # [ddp]
                if history.initial_loss is None and first_loss is not None:
                    history.initial_loss = float(first_loss.item())
                record: dict[str, float] = {"epoch": epoch,
                                            **{k: (v / s.steps_per_epoch).item() for k, v in sums.items()}}
                _check_loss(history, record, bad_step, epoch)
                record["lr"] = s.optimizer.param_groups[0]["lr"]
                val_score = _validate(objective, s, record)
                record["val_score"] = val_score
                record["seconds"] = time.perf_counter() - epoch_start
                history.epochs.append(record)
                improved = val_score > history.best_score
                if improved:
                    history.best_score, history.best_epoch = val_score, epoch
                history.stopped_early = (cfg.patience is not None and epoch + 1 < cfg.epochs
                                         and epoch - history.best_epoch >= cfg.patience)
                if out is not None and s.dist_ctx.is_main:  # [ddp] rank 0 writes
                    meta = dict(meta_base, epoch=epoch, step=(epoch + 1) * s.steps_per_epoch,
                                history=history.epochs, best_epoch=history.best_epoch,
                                best_score=history.best_score, initial_loss=history.initial_loss,
                                **({"stopped_early": True} if history.stopped_early else {}))
                    _save_epoch(out, s, history, meta, epoch, improved)
                    write_history_csv(out / "history.csv", history.epochs)
                if isinstance(tracker, Tracker):
                    tracker.log_epoch(epoch, record)
                if progress:
                    progress.update(task, status=f"epoch {epoch + 1}/{cfg.epochs} loss {record['loss']:.4f} "
                                                 f"val {val_score:.4f}")
                log.info("epoch %d loss %.4f val %.4f (%.1fs)", epoch, record["loss"], val_score,
                         record["seconds"])
                if on_epoch_end is not None:
                    on_epoch_end(epoch, record)
                if history.stopped_early:
                    log.warning("early stop after epoch %d: no better validation score for %d epochs "
                                "(train.patience); the best epoch was %d", epoch, cfg.patience,
                                history.best_epoch)
                    break
    finally:
        unwrap_ddp()  # [ddp] the objective leaves fit() as it came, also after an error
        if isinstance(tracker, Tracker):
            tracker.close("FINISHED" if sys.exc_info()[0] is None else "FAILED")
    distributed.barrier(s.dist_ctx)  # [ddp] checkpoints are on disk before any rank reads them
    history.seconds = time.perf_counter() - started
    if out is not None:
        best = out / "best.safetensors"
        history.best_path = best if history.best_epoch >= 0 and best.exists() else None
        history.last_path = out / "last.safetensors"
    return history
