"""What every distillation method sees and returns.

A method is an ``nn.Module`` whose ``forward(ctx)`` returns a dict of named,
already-weighted-by-nothing loss terms. The :class:`~kdistill.distiller.Distiller`
multiplies each term by the method's weight and adds it to the total.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor, nn


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
    """Base class: declare the module paths you need and return named losses.

    ``student_layers`` / ``teacher_layers`` are module paths (``"layer3"``,
    ``"features.2"``) whose outputs the Distiller captures with forward hooks
    and hands over in ``ctx.student_features`` / ``ctx.teacher_features``.
    """

    student_layers: tuple[str, ...] = ()
    teacher_layers: tuple[str, ...] = ()
    #: set by methods that need the teacher to run live (e.g. on augmented inputs)
    needs_teacher_features: bool = False

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
