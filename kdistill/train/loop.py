"""The training loop: read it top to bottom.

One loop trains every objective (:class:`~kdistill.train.objective.TrainingObjective`):
a plain model, a distilled student, mutual-learning peers. The whole data set
lives on the training device and batches are tensor slices, so there is no
DataLoader and no per-step host synchronisation: losses are summed on the
device and read once per epoch.

What makes distillation cost no more than ordinary training:

* without augmentation the frozen teacher's outputs are computed once
  (:mod:`kdistill.teacher_cache`, in the objective's ``prepare``) and looked
  up by sample index, so the loop never runs the teacher; with augmentation
  it runs live on the same batch;
* augmentation is batched on the device;
* on CUDA: TF32 matmuls, bf16 autocast, fused optimisers, and optionally
  ``torch.compile`` (``train.compile``) with CUDA graphs (``train.cuda_graphs``).

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

from kdistill.config import TrackingConfig, TrainConfig
from kdistill.data import DataSplits, hflip, input_spec, iterate_batches, jitter
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
from kdistill.train.objective import FitContext, TrainingObjective, score
from kdistill.train.optim import build_optimizer, lr_factor, set_lr
from kdistill.train.precision import autocast_context, enable_tf32
from kdistill.train.targets import TargetScale, fold, standardise_for_training
from kdistill.train.tracking import Tracker, write_history_csv

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


@dataclass
class _Setup:
    """Everything fixed for the whole run, built once by :func:`_set_up`."""

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


def _set_up(objective: TrainingObjective, data: DataSplits, cfg: TrainConfig, augment_jitter: int,
            augment_flip: bool, cache: str, out: Path | None) -> _Setup:
    device = resolve_device(cfg.device)
    dist_ctx, device = distributed.init_distributed(device)  # [ddp]
    cfg = distributed.effective_config(cfg, dist_ctx)  # [ddp] batch_scope / lr_scaling
    enable_tf32(device)
    seed_everything(cfg.seed)
    if len(data.x_train) == 0:
        raise ConfigError(f"Data set '{data.name}' has no training samples.")
    x_train, y_train, x_val, y_val = split_validation(data.x_train, data.y_train, cfg.val_fraction, cfg.seed)
    x_train, y_train, x_val, y_val = (t.to(device) for t in (x_train, y_train, x_val, y_val))
    objective.to(device)
    objective.prepare(x_train, FitContext(device=device, amp=cfg.amp, augment_jitter=augment_jitter,
                                          augment_flip=augment_flip, cache=cache, out_dir=out,
                                          num_train=len(x_train)))
    objective.to(device)
    cuda_graphs = compile_models(objective, device, cfg)
    modules = unwrapped_modules(objective)
    params = [p for m in modules.values() for p in m.parameters()]
    optimizer = build_optimizer(params, cfg.optimizer, fused=device.type == "cuda")
    steps_per_epoch = max(1, math.ceil(len(x_train) / cfg.batch_size))
    return _Setup(device, dist_ctx, cfg, x_train, y_train, x_val, y_val, modules, params, optimizer,
                  steps_per_epoch, steps_per_epoch * cfg.epochs, cfg.scaled_lr(), cuda_graphs)


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
    meta = restore_training_state(path, s.modules, s.optimizer)
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
_NOT_SETTINGS = {"role", "epoch", "step", "history", "best_epoch", "best_score", "initial_loss", "model_spec"}
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
    for xb, yb, idx in iterate_batches(s.x_train, s.y_train, cfg.batch_size, shuffle=True, generator=generator):
        set_lr(s.optimizer, s.base_lr, lr_factor(cfg.scheduler, step, s.total_steps, s.steps_per_epoch))
        if s.cuda_graphs:
            torch.compiler.cudagraph_mark_step_begin()  # the last step's graph outputs may be reused
        if augment_jitter:
            xb = jitter(xb, augment_jitter, generator=generator, fill=fill)
        if augment_flip:
            xb = hflip(xb, generator=generator)
        xb, yb, idx, weight = distributed.shard_batch(xb, yb, idx, s.dist_ctx)  # [ddp]
        with autocast_context(device, cfg.amp):
            losses = distributed.scale_losses(objective(xb, yb, idx), weight)  # [ddp]
        loss = losses["loss"]
        s.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip:
            nn.utils.clip_grad_norm_(s.params, cfg.grad_clip)
        s.optimizer.step()
        if cfg.max_norm:
            apply_max_norm(s.modules.values(), cfg.max_norm)
        # record the first non-finite step without a host sync
        bad = ~torch.isfinite(loss.detach())
        first_bad_step = torch.where(bad & (first_bad_step < 0), step, first_bad_step)
        if first_loss is None:
            first_loss = loss.detach().float()
        for name, value in losses.items():
            sums[name] = sums.get(name, 0) + value.detach().float()
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


def _self_description(objective: TrainingObjective, data: DataSplits) -> dict[str, Any]:
    """What a checkpoint needs to be evaluated, exported and deployed on its own, as far as fit knows it.

    The input spec comes from ``data``; a student that :func:`~kdistill.models.create_model`
    built also records its name and options, so that ``kdistill evaluate`` and
    ``export`` can rebuild it. Callers' metadata (from a config) takes precedence.
    """
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
        save_checkpoint(out / f"epoch-{epoch:03d}.safetensors", s.modules, meta)
    if improved:
        history.best_path = save_checkpoint(out / "best.safetensors", s.modules, meta)
    history.last_path = save_checkpoint(out / "last.safetensors", s.modules, meta, s.optimizer)


def fit(
    objective: TrainingObjective,
    data: DataSplits,
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
) -> History:
    """Train ``objective.student`` (and any other trainable modules of the objective) on ``data``.

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
    out; with ``out_dir``, ``history.csv`` is rewritten each epoch. Under ``torchrun`` training is data-parallel
    (see :mod:`kdistill.train.distributed`).
    """
    data, target_scale, restore_teacher = standardise_for_training(objective, data)  # [regression]
    if target_scale is not None:  # load_model folds it back: a checkpoint always predicts in the data's units
        metadata = dict(metadata or {}, target_scale=target_scale.to_dict())
    try:
        history = _fit(objective, data, cfg, out_dir=out_dir, resume=resume, augment_jitter=augment_jitter,
                       augment_flip=augment_flip, cache_teacher=cache_teacher, metadata=metadata,
                       description=description, on_epoch_end=on_epoch_end, tracker=tracker)
    finally:
        restore_teacher()
    if target_scale is not None:
        fold(objective.student, target_scale)
        history.target_scale = target_scale
    return history


def _fit(
    objective: TrainingObjective,
    data: DataSplits,
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
) -> History:
    """The loop itself; :func:`fit` with the targets as they are."""
    cache = ("auto" if cache_teacher else "off") if isinstance(cache_teacher, bool) else cache_teacher
    out = Path(out_dir) if out_dir is not None else None
    s = _set_up(objective, data, cfg, augment_jitter, augment_flip, cache, out)
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
                                                           data.fill_value, progress, task)
                bad_step = int(distributed.first_bad_step(first_bad, s.dist_ctx).item())  # [ddp]
                sums = distributed.average_sums(sums, s.dist_ctx)  # [ddp]
                if history.initial_loss is None and first_loss is not None:
                    history.initial_loss = float(first_loss.item())
                record: dict[str, float] = {"epoch": epoch,
                                            **{k: (v / s.steps_per_epoch).item() for k, v in sums.items()}}
                _check_loss(history, record, bad_step, epoch)
                record["lr"] = s.optimizer.param_groups[0]["lr"]
                val_score = objective.validation_score(s.x_val, s.y_val) if len(s.x_val) else -record["loss"]
                record["val_score"] = val_score
                record["seconds"] = time.perf_counter() - epoch_start
                history.epochs.append(record)
                improved = val_score > history.best_score
                if improved:
                    history.best_score, history.best_epoch = val_score, epoch
                if out is not None and s.dist_ctx.is_main:  # [ddp] rank 0 writes
                    meta = dict(meta_base, epoch=epoch, step=(epoch + 1) * s.steps_per_epoch,
                                history=history.epochs, best_epoch=history.best_epoch,
                                best_score=history.best_score, initial_loss=history.initial_loss)
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
