"""Reverse KL, T^2 * KL(p_s || p_t) at temperature T: a mode-seeking stand-in for Hinton's forward KL."""
import torch

from kdistill import register_method
from kdistill.methods import DistillationMethod


@register_method("reverse-kl")
class ReverseKL(DistillationMethod):
    uses_temperature = True  # a config run passes distill.temperature to __init__
    replaces = ("kd",)  # without distill.alpha the loss is ce + reverse-kl, not ce + kd + reverse-kl

    def __init__(self, temperature: float = 1.0) -> None:
        super().__init__()
        self.temperature = temperature

    def forward(self, ctx):
        t = self.temperature
        log_p_s = torch.log_softmax(ctx.student_logits.float() / t, dim=-1)
        log_p_t = torch.log_softmax(ctx.teacher_logits.float() / t, dim=-1)
        return {"reverse_kl": t * t * (log_p_s.exp() * (log_p_s - log_p_t)).sum(-1).mean()}
