"""What the training loop trains: a small protocol between :func:`~kdistill.train.fit` and an objective.

An objective is an ``nn.Module`` that owns the model being trained
(``self.student``) and whatever else the loss needs (a frozen teacher, method
adapters, mutual-learning peers). The loop only ever calls these five things,
in this order::

    objective.prepare(x_train, context)        # once, data and modules on the device
    for epoch ...:
        objective.set_epoch(epoch)
        objective.train()
        losses = objective(x, y, indices)      # dict of named losses with "loss"
        ...
        objective.validation_score(x_val, y_val)
    objective.trainable_modules()              # what the optimiser steps and checkpoints hold

so a new kind of training (detection heads, a variational student, peers
teaching each other) plugs in by subclassing :class:`TrainingObjective`,
without the loop knowing its type.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn


@dataclass(frozen=True)
class FitContext:
    """What :meth:`TrainingObjective.prepare` may need to know about the run.

    ``amp`` is the loop's autocast mode (``train.amp``), ``augment_jitter`` the
    pixel shift and ``augment_flip`` the random mirroring applied to every batch,
    ``augment_transform`` whether a per-sample transform augments every image,
    ``augment_mix`` whether Mixup/CutMix mixes every batch (the labels are then
    class probabilities of shape ``(N, C)``)
    (none of them: inputs never change between epochs), ``cache`` the teacher-cache
    mode (``distill.cache``) and ``out_dir`` the run folder (``None``: nothing
    is written); ``cache_dir`` is where this process may keep a memory-mapped
    cache.

    On the streaming path (``streaming``) the ``x_train`` given to ``prepare``
    holds the first few samples only; ``train_batches()``, when set, yields
    ``(inputs, indices)`` for every training sample in order, un-augmented and
    on the device (what a teacher cache is built from); ``None`` means the
    batches cannot be cached (your own DataLoader).

    ``train_positions`` maps the training indices the loop hands the objective
    (``0..num_train - 1``, what remains after the validation hold-out) to rows
    of the training set given to ``fit``, whose size is ``train_set_size``;
    ``None`` when fit reads your own DataLoader. Precomputed teacher outputs,
    indexed like that training set, are looked up through it.
    """

    device: torch.device
    amp: str = "auto"
    augment_jitter: int = 0
    augment_flip: bool = False
    augment_transform: bool = False
    augment_mix: bool = False
    cache: str = "auto"
    out_dir: Path | None = None
    num_train: int = 0
    cache_dir: Path | None = None
    streaming: bool = False
    train_batches: Callable[[], Iterable[tuple[Tensor, Tensor]]] | None = None
    train_positions: Sequence[int] | None = None
    train_set_size: int | None = None

    @property
    def augmenting(self) -> bool:
        return bool(self.augment_jitter or self.augment_flip or self.augment_transform or self.augment_mix)


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


@torch.no_grad()
def score_batches(model: nn.Module, batches: Iterable, device: torch.device) -> float:
    """:func:`score` over ``(x, y, ...)`` batches of a DataLoader, without holding the whole split."""
    was_training = model.training
    model.eval()
    total, count, regression = 0.0, 0, False
    try:
        for batch in batches:
            x, y = batch[0].to(device), batch[1].to(device)
            x = x.float() if x.dtype == torch.float64 else x
            outputs = model(x).float()
            if y.dtype.is_floating_point:
                regression = True
                total += torch.sum((outputs.reshape(len(y), -1)[:, 0] - y.float()) ** 2).item()
            else:
                total += (outputs.argmax(-1) == y).sum().item()
            count += len(y)
    finally:
        model.train(was_training)
    if count == 0:
        return 0.0
    return -total / count if regression else total / count


class TrainingObjective(nn.Module):
    """Base class of everything :func:`~kdistill.train.fit` trains.

    Subclasses set ``self.student`` (the model that is saved under ``model.``
    and exported) and implement ``forward(inputs, labels, indices)``
    returning a dict of named scalar losses that includes ``"loss"``, the
    one that is back-propagated. The defaults below suit a plain model.
    """

    student: nn.Module

    def prepare(self, x_train: Tensor, context: FitContext) -> None:
        """Called once before the first epoch, with the (un-augmented) training inputs on the device.

        Shape-dependent set-up goes here: method adapters, teacher caches,
        compatibility checks. Modules created here must be on ``context.device``.
        """

    def set_epoch(self, epoch: int) -> None:
        """Called at the start of every epoch (0-based), also after a resume."""

    def trainable_modules(self) -> dict[str, nn.Module]:
        """Modules whose parameters the optimiser steps, by checkpoint prefix (``model`` first)."""
        return {"model": self.student}

    def validation_score(self, x: Tensor, y: Tensor) -> float:
        """Higher is better; picks ``best.safetensors``. Default: accuracy, or -MSE for regression."""
        return score(self.student, x, y)


def regression_loss(outputs: Tensor, targets: Tensor) -> Tensor:
    """Mean squared error of a one-output regressor, ``outputs`` of shape (batch, 1) or (batch,)."""
    return nn.functional.mse_loss(outputs.squeeze(-1).float(), targets.float())


class LabelLoss(nn.Module):
    """The label term a data set's targets call for: cross-entropy for class indices, or
    :func:`regression_loss` for real-valued targets (a regression set), chosen per batch by the
    targets' dtype, so one objective trains either kind of data."""

    def __init__(self, label_smoothing: float = 0.0) -> None:
        super().__init__()
        self.cross_entropy = nn.CrossEntropyLoss(label_smoothing=label_smoothing)

    def forward(self, outputs: Tensor, targets: Tensor) -> Tensor:
        if targets.is_floating_point():
            return regression_loss(outputs, targets)
        return self.cross_entropy(outputs, targets)
