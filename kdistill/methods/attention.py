"""Zagoruyko & Komodakis 2017, "Paying More Attention to Attention" (ICLR).

The spatial attention map of a conv feature F (C x H x W) is the channel mean
of |F|^p, flattened and L2-normalised; the student matches the teacher's::

    Q(F) = vec(mean_c |F_c|^p) / || vec(mean_c |F_c|^p) ||_2
    L_AT = mean_{batch, positions} (Q(F_s) - Q(F_t))^2

with p = 2. Channel counts may differ (the map has none); a student map of
another size is average-pooled to the teacher's size. The loss is small, so
use a large weight (the paper's beta = 1000, ``weight: 1000``).
"""

from __future__ import annotations

from torch import Tensor, nn

from kdistill.methods.base import StepContext
from kdistill.methods.features import FeaturePairMethod, require_conv_maps
from kdistill.registry import register_method


def attention_map(feature: Tensor, p: float = 2.0) -> Tensor:
    return nn.functional.normalize(feature.float().abs().pow(p).mean(1).flatten(1), dim=1)


@register_method("at")
class AttentionTransfer(FeaturePairMethod):
    def __init__(self, student_layer: str | None = None, teacher_layer: str | None = None, p: float = 2.0) -> None:
        super().__init__(student_layer, teacher_layer)
        if p <= 0:
            raise ValueError("p must be positive")
        self.p = float(p)

    def forward(self, ctx: StepContext) -> dict[str, Tensor]:
        s, t = self.features(ctx)
        require_conv_maps("attention transfer", s, t)
        if s.shape[2:] != t.shape[2:]:
            s = nn.functional.adaptive_avg_pool2d(s, t.shape[2:])
        return {"at": (attention_map(s, self.p) - attention_map(t, self.p)).pow(2).mean()}
