"""Optimisers and learning-rate schedules built from the config.

The schedule is a pure function of the global step, so resuming needs nothing
but the step number, and the loop sets ``param_group["lr"]`` itself.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import nn

from kdistill.config import OptimizerConfig, SchedulerConfig


def build_optimizer(params: Iterable[nn.Parameter], cfg: OptimizerConfig,
                    fused: bool = False) -> torch.optim.Optimizer:
    params = [p for p in params if p.requires_grad]
    extra = {"fused": True} if fused else {}
    if cfg.name == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum,
                               weight_decay=cfg.weight_decay, nesterov=cfg.nesterov and cfg.momentum > 0,
                               **extra)
    if cfg.name == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay, **extra)
    return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay, **extra)


def lr_factor(cfg: SchedulerConfig, step: int, total_steps: int, steps_per_epoch: int) -> float:
    """Multiplier of the base learning rate at ``step`` (0-based) of ``total_steps``."""
    warmup = int(cfg.warmup_epochs * steps_per_epoch)
    if cfg.name == "onecycle":
        warmup = warmup or max(1, int(0.3 * total_steps))
    if step < warmup:
        return (step + 1) / warmup
    if cfg.name == "constant":
        return 1.0
    if cfg.name == "step":
        return cfg.gamma ** (step // (cfg.step_epochs * steps_per_epoch))
    progress = (step - warmup) / max(1, total_steps - warmup)
    floor = cfg.final_lr_fraction
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def set_lr(optimizer: torch.optim.Optimizer, base_lr: float, factor: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = base_lr * factor
