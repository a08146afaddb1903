"""Tung & Mori 2019, "Similarity-Preserving Knowledge Distillation" (ICCV).

Samples that activate the teacher similarly should activate the student
similarly. With the batch's flattened features Q (b x d)::

    G = row_normalise_L2(Q Q^T)                 (b x b)
    L_SP = || G_s - G_t ||_F^2 / b^2

Only b x b similarity matrices are compared, so widths and map sizes may
differ. The paper's weight is gamma = 3000 (``weight: 3000``).
"""

from __future__ import annotations

from torch import Tensor, nn

from kdistill.methods.base import StepContext
from kdistill.methods.features import FeaturePairMethod
from kdistill.registry import register_method


def similarity(features: Tensor) -> Tensor:
    q = features.float().flatten(1)
    return nn.functional.normalize(q @ q.T, dim=1)


def sp_loss(student: Tensor, teacher: Tensor) -> Tensor:
    b = len(student)
    return (similarity(student) - similarity(teacher)).pow(2).sum() / (b * b)


@register_method("sp")
class SimilarityPreserving(FeaturePairMethod):
    def forward(self, ctx: StepContext) -> dict[str, Tensor]:
        s, t = self.features(ctx)
        return {"sp": sp_loss(s, t)}
