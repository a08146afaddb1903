"""What every loss term sees and returns.

The Distiller's loss is a weighted sum of terms. Each term is a registered
:class:`DistillationMethod` (``ce`` and ``kd`` as much as ``fitnets`` or a
user's own) whose ``forward(ctx)`` returns a dict of named, unweighted
values; the :class:`~kdistill.distiller.Distiller` multiplies them by the
term's weight and adds them to the total.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

if TYPE_CHECKING:
    from kdistill.config import ExperimentConfig


@dataclass
class StepContext:
    """Everything a loss may need about one training batch."""

    inputs: Tensor
    labels: Tensor
    student_logits: Tensor
    teacher_logits: Tensor
    indices: Tensor | None = None
    student_features: dict[str, Tensor] = field(default_factory=dict)
    teacher_features: dict[str, Tensor] = field(default_factory=dict)
    epoch: int = 0


class DistillationMethod(nn.Module):
    """Base class of every loss term: declare what you need and return named losses.

    ``student_layers`` / ``teacher_layers`` are module paths (``"layer3"``,
    ``"features.2"``) whose outputs the Distiller captures with forward hooks
    and hands over in ``ctx.student_features`` / ``ctx.teacher_features``.

    Class attributes a term sets to state its contract with the run:

    * ``uses_temperature``: the constructor takes ``temperature``, and a run
      built from a config passes ``distill.temperature`` unless the term's own
      options set it.
    * ``needs_live_teacher``: the teacher must run on every batch (the term
      hooks something a cache of the teacher's outputs does not hold).
    * ``needs_class_labels``: the term reads ``ctx.labels`` as class indices,
      so it cannot train on Mixup/CutMix batches, whose labels are mixed
      class probabilities.
    * ``replaces``: names of built-in terms this term stands in for. ``dkd``
      replaces ``kd``: a config that lists dkd and leaves ``distill.alpha``
      unset gets ``ce + dkd``, not ``ce + kd + dkd``.
    """

    student_layers: tuple[str, ...] = ()
    teacher_layers: tuple[str, ...] = ()
    uses_temperature: bool = False
    needs_live_teacher: bool = False
    needs_class_labels: bool = False
    replaces: tuple[str, ...] = ()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        # the attribute's earlier name, which methods written outside kdistill may still set
        if "needs_teacher_features" in cls.__dict__:
            warnings.warn(f"{cls.__name__}.needs_teacher_features is deprecated; set needs_live_teacher "
                          "instead (same meaning: the teacher runs on every batch).", DeprecationWarning,
                          stacklevel=2)
            cls.needs_live_teacher = bool(cls.__dict__["needs_teacher_features"])

    @classmethod
    def check_config(cls, options: dict[str, Any], cfg: ExperimentConfig) -> None:
        """Refuse, with a :class:`~kdistill.errors.ConfigError`, options that cannot work in this run.

        Called before any model is trained, with the term's type-checked
        options and the whole experiment config (e.g. FitNets' hint stage
        must end before the schedule does). The default accepts everything.
        """

    def bind(self, student: nn.Module, teacher: nn.Module) -> None:
        """Resolve default layer paths from the models (called before hooks are attached)."""

    def exclusive(self, epoch: int) -> bool:
        """True while this method's loss alone should train the student (e.g. FitNets stage 1)."""
        return False

    def setup(self, student: nn.Module, teacher: nn.Module, sample: Tensor, num_train: int) -> None:
        """Build shape-dependent parts (adapters) once the models and data are known."""

    def forward(self, ctx: StepContext) -> dict[str, Tensor]:  # pragma: no cover - abstract
        raise NotImplementedError


def soft_kl(student_logits: Tensor, teacher_logits: Tensor, temperature: float) -> Tensor:
    """KL(softmax(t/T) || softmax(s/T)) averaged over the batch.

    ``kl_div`` takes the student's *log*-probabilities as input and the
    teacher's probabilities as target; passing probabilities as the input is a
    common bug that silently yields a wrong, sign-flipped gradient.
    """
    log_p_student = torch.log_softmax(student_logits.float() / temperature, dim=-1)
    p_teacher = torch.softmax(teacher_logits.float() / temperature, dim=-1)
    return nn.functional.kl_div(log_p_student, p_teacher, reduction="batchmean")
