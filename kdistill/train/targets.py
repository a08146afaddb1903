"""Regression targets: trained standardised, predicted in the data's own units.

A regressor learns best on targets of mean 0 and variance 1, whatever their
units (the diabetes progression score runs from 25 to 346). A regression run
therefore trains on ``(y - mean) / std`` (train-split statistics) and, when it
is done, folds the inverse map into the model's output layer (:func:`kdistill.train.fit`
does both, whoever calls it: the CLI and the Python API train regressors alike)::

    y_hat = std * (W h + b) + mean  =  (std W) h + (std b + mean)

so the saved, evaluated and exported model predicts in the original units and
needs no wrapper. Checkpoints written during training hold the standardised
model with ``target_scale: {mean, std}`` in their metadata;
:func:`kdistill.experiment.saved.load_model` folds it on loading, so a
checkpoint is always read back in original units.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from kdistill.data import DataSplits
from kdistill.errors import ConfigError

log = logging.getLogger("kdistill")


@dataclasses.dataclass(frozen=True)
class TargetScale:
    """``y_standardised = (y - mean) / std``."""

    mean: float
    std: float

    @classmethod
    def of(cls, y: Tensor) -> TargetScale:
        y = y.double()
        std = float(y.std()) if len(y) > 1 else 1.0
        return cls(mean=float(y.mean()), std=std if std > 0 and math.isfinite(std) else 1.0)

    def to_dict(self) -> dict[str, float]:
        return {"mean": self.mean, "std": self.std}

    @classmethod
    def from_dict(cls, record: Any) -> TargetScale | None:
        if not isinstance(record, dict):
            return None
        try:
            scale = cls(mean=float(record["mean"]), std=float(record["std"]))
        except (KeyError, TypeError, ValueError):
            return None
        finite = math.isfinite(scale.mean) and math.isfinite(scale.std)
        return scale if finite and scale.std > 0 else None


def standardised(data: DataSplits, scale: TargetScale) -> DataSplits:
    """A copy of ``data`` whose targets are standardised (inputs shared, not copied)."""
    return dataclasses.replace(data, y_train=(data.y_train - scale.mean) / scale.std,
                               y_test=(data.y_test - scale.mean) / scale.std)


def output_layer(model: nn.Module) -> nn.Linear | None:
    """The model's last ``nn.Linear``, if it has one output and a bias (else ``None``)."""
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    last = linears[-1] if linears else None
    return last if last is not None and last.out_features == 1 and last.bias is not None else None


def can_fold(model: nn.Module, sample: Tensor) -> bool:
    """Whether the scale can be folded into ``model``'s output layer (checked on ``sample``)."""
    layer = output_layer(model)
    if layer is None:
        return False
    probe = TargetScale(mean=0.5, std=2.0)
    with torch.no_grad():
        was = model.training
        model.eval()
        try:
            before = model(sample).float()
            fold(model, probe)
            after = model(sample).float()
            unfold(model, probe)
        finally:
            model.train(was)
    return bool(torch.allclose(after, before * probe.std + probe.mean, rtol=1e-4, atol=1e-4))


@torch.no_grad()
def fold(model: nn.Module, scale: TargetScale) -> nn.Module:
    """Make ``model`` predict ``std * model(x) + mean`` by rescaling its output layer in place."""
    layer = output_layer(model)
    if layer is None:
        raise ValueError(f"{type(model).__name__} does not end in a one-output nn.Linear with a bias")
    layer.weight.mul_(scale.std)
    layer.bias.mul_(scale.std).add_(scale.mean)
    return model


@torch.no_grad()
def unfold(model: nn.Module, scale: TargetScale) -> nn.Module:
    """The inverse of :func:`fold`."""
    layer = output_layer(model)
    layer.bias.sub_(scale.mean).div_(scale.std)
    layer.weight.div_(scale.std)
    return model


def standardise_for_training(objective: nn.Module, data: DataSplits
                             ) -> tuple[DataSplits, TargetScale | None, Callable[[], None]]:
    """[regression] The data the loop trains on, its scale, and a function that undoes the teacher's view.

    For a regression set whose student ends in a one-output linear layer the targets are
    standardised and a frozen teacher (``objective.teacher``), which predicts in the data's
    units, is seen through the same map by a forward hook (its module paths, which feature
    methods name, stay the same). Any other data passes through unchanged.
    """
    nothing = (data, None, lambda: None)
    # a streamed set's targets are not all at hand to standardise: they are used as they are
    if not isinstance(data, DataSplits) or data.task != "regression" or not len(data.x_train):
        return nothing
    if getattr(objective, "task", "regression") != "regression":
        raise ConfigError(
            f"Data set '{data.name}' is a regression set (real-valued targets), but the objective "
            f"{type(objective).__name__} was built for task={objective.task!r}; build it with "
            "task='regression' (e.g. Distiller(teacher=..., student=..., task='regression')).")
    student = objective.student
    if not can_fold(student, data.x_train[:2]):
        log.warning("%s does not end in a one-output linear layer: regression targets are used "
                    "unstandardised", type(student).__name__)
        return nothing
    scale = TargetScale.of(data.y_train)
    teacher = getattr(objective, "teacher", None)
    if not isinstance(teacher, nn.Module):
        return standardised(data, scale), scale, lambda: None

    def teacher_in_standard_units(_module: nn.Module, _inputs: Any, outputs: Tensor) -> Tensor:
        return (outputs.float() - scale.mean) / scale.std

    handle = teacher.register_forward_hook(teacher_in_standard_units)
    return standardised(data, scale), scale, handle.remove
