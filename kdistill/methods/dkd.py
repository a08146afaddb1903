"""Zhao et al. 2022, "Decoupled Knowledge Distillation" (CVPR).

The KD loss splits into a target-class part (TCKD) and a non-target part (NCKD)::

    b = [p_gt, 1 - p_gt]                      binary target / non-target split
    p_hat = softmax(z_{!gt} / T)              distribution over the non-target classes
    TCKD = KL(b_t || b_s)
    NCKD = KL(p_hat_t || p_hat_s)
    L_DKD = T^2 * (alpha * TCKD + beta * NCKD) * min(epoch / warmup_epochs, 1)

Classic KD equals TCKD + (1 - p_gt_t) * NCKD, so the teacher's confidence
suppresses NCKD; DKD weights the two freely (the paper uses alpha=1, beta=8).
DKD replaces the Hinton term (``replaces = ("kd",)``): a config listing dkd
without ``distill.alpha`` trains ``CE + L_DKD``, the paper's objective.
"""

from __future__ import annotations

import torch
from torch import Tensor

from kdistill.methods.base import DistillationMethod, StepContext
from kdistill.registry import register_method


def dkd_loss(student_logits: Tensor, teacher_logits: Tensor, labels: Tensor, alpha: float, beta: float,
             temperature: float) -> tuple[Tensor, Tensor]:
    """Return (TCKD, NCKD), each already multiplied by T^2 and averaged over the batch."""
    t = temperature
    s, te = student_logits.float() / t, teacher_logits.float() / t
    gt = torch.nn.functional.one_hot(labels, s.shape[-1]).bool()
    p_s, p_t = s.softmax(-1), te.softmax(-1)
    b_s = torch.stack([(p_s * gt).sum(-1), (p_s * ~gt).sum(-1)], -1).clamp_min(1e-12)
    b_t = torch.stack([(p_t * gt).sum(-1), (p_t * ~gt).sum(-1)], -1).clamp_min(1e-12)
    tckd = (b_t * (b_t.log() - b_s.log())).sum(-1).mean() * t * t
    # masking the target logit with a large negative value drops it from the softmax
    log_q_s = (s - 1000.0 * gt).log_softmax(-1)
    log_q_t = (te - 1000.0 * gt).log_softmax(-1)
    nckd = (log_q_t.exp() * (log_q_t - log_q_s)).masked_fill(gt, 0.0).sum(-1).mean() * t * t
    return alpha * tckd, beta * nckd


@register_method("dkd")
class DKD(DistillationMethod):
    uses_temperature = True
    needs_class_labels = True  # its target-class split needs one true class per sample
    replaces = ("kd",)

    def __init__(self, alpha: float = 1.0, beta: float = 8.0, temperature: float = 4.0,
                 warmup_epochs: int = 0) -> None:
        super().__init__()
        if temperature <= 0 or alpha < 0 or beta < 0 or warmup_epochs < 0:
            raise ValueError("temperature must be positive and alpha, beta, warmup_epochs >= 0")
        self.alpha, self.beta, self.temperature = float(alpha), float(beta), float(temperature)
        self.warmup_epochs = int(warmup_epochs)

    def forward(self, ctx: StepContext) -> dict[str, Tensor]:
        tckd, nckd = dkd_loss(ctx.student_logits, ctx.teacher_logits, ctx.labels, self.alpha, self.beta,
                              self.temperature)
        ramp = min((ctx.epoch + 1) / self.warmup_epochs, 1.0) if self.warmup_epochs else 1.0
        return {"dkd_tckd": ramp * tckd, "dkd_nckd": ramp * nckd}
