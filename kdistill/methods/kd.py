"""Hinton et al. 2015, "Distilling the Knowledge in a Neural Network".

    L_KD = T^2 * KL( softmax(z_t / T) || softmax(z_s / T) )

The T^2 factor keeps the soft-target gradients on the same scale as the hard
label gradients when T changes (their magnitude falls as 1/T^2). The
:class:`~kdistill.distiller.Distiller` adds this term with weight ``alpha``;
the standalone method below lets KD be composed with other methods at its own
temperature and weight.
"""

from __future__ import annotations

from torch import Tensor

from kdistill.methods.base import DistillationMethod, StepContext, soft_kl
from kdistill.registry import register_method


@register_method("kd")
class HintonKD(DistillationMethod):
    def __init__(self, temperature: float = 4.0) -> None:
        super().__init__()
        if temperature <= 0:
            raise ValueError("temperature must be positive")
        self.temperature = float(temperature)

    def forward(self, ctx: StepContext) -> dict[str, Tensor]:
        t = self.temperature
        return {"kd": t * t * soft_kl(ctx.student_logits, ctx.teacher_logits, t)}
