"""Passalis & Tefas 2018, "Learning Deep Representations with Probabilistic Knowledge Transfer" (ECCV).

Each model's batch of embeddings defines conditional probabilities from a
cosine-similarity kernel; the student matches the teacher's::

    K_ij = (cos(f_i, f_j) + 1) / 2
    P_j|i = K_ij / sum_k K_ik
    L_PKT = mean_i sum_j P^t_j|i * log(P^t_j|i / P^s_j|i)

Only similarities are compared, so student and teacher widths may differ and
no adapter is needed. Conv maps are globally average-pooled first.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from kdistill.methods.base import StepContext
from kdistill.methods.features import FeaturePairMethod, embedding
from kdistill.registry import register_method


def pkt_conditional(features: Tensor, eps: float = 1e-7) -> Tensor:
    f = nn.functional.normalize(features.float(), dim=1)
    kernel = (f @ f.T + 1.0) / 2.0
    return kernel / kernel.sum(1, keepdim=True)


def pkt_loss(student: Tensor, teacher: Tensor, eps: float = 1e-7) -> Tensor:
    p_s, p_t = pkt_conditional(student), pkt_conditional(teacher)
    return (p_t * torch.log((p_t + eps) / (p_s + eps))).sum(1).mean()


@register_method("pkt")
class PKT(FeaturePairMethod):
    def forward(self, ctx: StepContext) -> dict[str, Tensor]:
        s, t = self.features(ctx)
        return {"pkt": pkt_loss(embedding(s), embedding(t))}
