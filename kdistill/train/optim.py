"""Optimisers and learning-rate schedules built from the config.

The schedule is a pure function of the global step, so resuming needs nothing
but the step number, and the loop sets ``param_group["lr"]`` itself.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

import torch
from torch import nn

from kdistill.config import OptimizerConfig, SchedulerConfig


def parameter_groups(modules: Mapping[str, nn.Module] | Iterable[nn.Parameter], weight_decay: float,
                     decay_bias_and_norm: bool = False) -> list[dict]:
    """The optimiser's parameter groups: weight decay on weight matrices and kernels only.

    Biases and the scales and shifts of normalisation layers (every parameter
    with fewer than two dimensions) get no weight decay unless
    ``decay_bias_and_norm``: shrinking them towards zero does not regularise
    the function, it only shifts activations (the convention of timm and of
    most ImageNet recipes). Frozen parameters are left out.
    """
    if isinstance(modules, Mapping):
        params = [p for m in modules.values() for p in m.parameters()]
    else:
        params = list(modules)
    params = list({id(p): p for p in params if p.requires_grad}.values())  # a shared weight is stepped once
    if weight_decay == 0 or decay_bias_and_norm:
        return [{"params": params, "weight_decay": weight_decay}]
    decay = [p for p in params if p.ndim >= 2]
    no_decay = [p for p in params if p.ndim < 2]
    return [group for group in ({"params": decay, "weight_decay": weight_decay},
                                {"params": no_decay, "weight_decay": 0.0}) if group["params"]]


def build_optimizer(modules: Mapping[str, nn.Module] | Iterable[nn.Parameter], cfg: OptimizerConfig,
                    fused: bool = False) -> torch.optim.Optimizer:
    """The configured optimiser over the trainable parameters of ``modules`` (see :func:`parameter_groups`)."""
    groups = parameter_groups(modules, cfg.weight_decay, cfg.decay_bias_and_norm)
    extra = {"fused": True} if fused else {}
    if cfg.name == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum,
                               nesterov=cfg.nesterov and cfg.momentum > 0, **extra)
    if cfg.name == "adam":
        return torch.optim.Adam(groups, lr=cfg.lr, **extra)
    return torch.optim.AdamW(groups, lr=cfg.lr, **extra)


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
