"""Hinton et al. 2015, "Distilling the Knowledge in a Neural Network".

    L_KD = T^2 * KL( softmax(z_t / T) || softmax(z_s / T) )

The T^2 factor keeps the soft-target gradients on the same scale as the hard
label gradients when T changes (their magnitude falls as 1/T^2). ``kd`` is
the soft-target term of the loss: ``distill.alpha`` weights it (and ``1 -
alpha`` the ``ce`` term), or ``distill.terms`` lists it with its own weight and
temperature.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from kdistill.methods.base import DistillationMethod, StepContext
from kdistill.registry import register_method


@register_method("kd")
class HintonKD(DistillationMethod):
    """``T**2 * loss_fn(log_softmax(z_s / T), softmax(z_t / T))``, reported as ``"kd"``.

    ``loss_fn`` (Python only; default ``nn.KLDivLoss(reduction="batchmean")``)
    receives the student's log-probabilities first, as ``nn.KLDivLoss``
    expects: passing probabilities instead is a common bug that silently
    yields a wrong, sign-flipped gradient.
    """

    uses_temperature = True

    def __init__(self, temperature: float = 4.0, *,
                 loss_fn: Callable[[Tensor, Tensor], Tensor] | None = None) -> None:
        super().__init__()
        if temperature <= 0:
            raise ValueError("temperature must be positive")
        self.temperature = float(temperature)
        self.loss_fn = loss_fn or nn.KLDivLoss(reduction="batchmean")

    def forward(self, ctx: StepContext) -> dict[str, Tensor]:
        t = self.temperature
        log_p_student = torch.log_softmax(ctx.student_logits.float() / t, dim=-1)
        p_teacher = torch.softmax(ctx.teacher_logits.float() / t, dim=-1)
        return {"kd": t * t * self.loss_fn(log_p_student, p_teacher)}
