"""Regression distillation: the student regresses the teacher's outputs.

For regression models there is no softmax to soften, so the teacher's
predictions themselves are the soft targets (as in model compression,
Bucila et al. 2006, and regression KD, e.g. Saputra et al. 2019)::

    L_MSE   = mean_i (z_s,i - z_t,i)^2
    L_Huber = mean_i h_delta(z_s,i - z_t,i),  h_delta(r) = r^2/2 if |r| <= delta else delta(|r| - delta/2)

Also usable on classifier logits (logit matching, Ba & Caruana 2014). It
replaces the built-in ``kd`` term (``replaces = ("kd",)``): a config listing it
without ``distill.alpha`` trains ``CE + L``.

:class:`TeacherOutputMSE` is what ``kd`` means on regression data (one output
has no distribution to soften): the MSE to the teacher's outputs, reported as
``"kd"``.
"""

from __future__ import annotations

from torch import Tensor, nn

from kdistill.methods.base import DistillationMethod, StepContext
from kdistill.registry import register_method


@register_method("regression")
class RegressionKD(DistillationMethod):
    replaces = ("kd",)

    def __init__(self, loss: str = "mse", delta: float = 1.0) -> None:
        super().__init__()
        if loss not in {"mse", "huber"}:
            raise ValueError(f"loss must be 'mse' or 'huber', got {loss!r}")
        if delta <= 0:
            raise ValueError("delta must be positive")
        self.loss = loss
        self.delta = float(delta)

    def forward(self, ctx: StepContext) -> dict[str, Tensor]:
        s, t = ctx.student_logits.float(), ctx.teacher_logits.float()
        if self.loss == "mse":
            return {"regression": nn.functional.mse_loss(s, t)}
        return {"regression": nn.functional.huber_loss(s, t, delta=self.delta)}


class TeacherOutputMSE(DistillationMethod):
    """The ``kd`` term of a regression run: ``mse_loss(student_outputs, teacher_outputs)``, no temperature."""

    def forward(self, ctx: StepContext) -> dict[str, Tensor]:
        return {"kd": nn.functional.mse_loss(ctx.student_logits.float(), ctx.teacher_logits.float())}
