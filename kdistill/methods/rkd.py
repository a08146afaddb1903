"""Park et al. 2019, "Relational Knowledge Distillation" (CVPR).

The student preserves the teacher's *relations* between samples of a batch:
pairwise distances (normalised by their mean mu) and the angles formed by
triplets, compared with the Huber loss l_delta (delta = 1)::

    psi_D(t_i, t_j)      = ||t_i - t_j||_2 / mu
    psi_A(t_i, t_j, t_k) = < (t_i - t_j)/||t_i - t_j||, (t_k - t_j)/||t_k - t_j|| >
    L_RKD = w_D * mean l_delta(psi_D^s - psi_D^t) + w_A * mean l_delta(psi_A^s - psi_A^t)

Defaults w_D = 25, w_A = 50 (the CIFAR setting of Tian et al.'s benchmark;
the paper's ratio of 1 : 2). Conv maps are globally average-pooled first.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from kdistill.methods.base import StepContext
from kdistill.methods.features import FeaturePairMethod, embedding
from kdistill.registry import register_method


def pairwise_distances(x: Tensor) -> Tensor:
    """Euclidean distances between the rows of ``x``, divided by their mean over distinct pairs.

    ``torch.cdist``'s default computes ``||a||^2 + ||b||^2 - 2 a.b`` by matrix product for
    more than 25 rows, which cancels badly: a row's distance to itself comes out non-zero and
    every distance is off by the round-off of the squared norms. The differences are formed
    explicitly instead, so the diagonal is exactly zero and its gradient is zero, not NaN.
    """
    d = torch.cdist(x, x, compute_mode="donot_use_mm_for_euclid_dist")
    d = d.masked_fill(torch.eye(len(x), dtype=torch.bool, device=x.device), 0.0)
    return d / d[d > 0].mean().clamp_min(1e-12)


def triplet_angles(x: Tensor) -> Tensor:
    # e[j, i] = unit vector from x_j to x_i; angles[j, i, k] = <e[j, i], e[j, k]>
    e = nn.functional.normalize(x.unsqueeze(0) - x.unsqueeze(1), dim=2)
    return torch.bmm(e, e.transpose(1, 2)).flatten()


@register_method("rkd")
class RKD(FeaturePairMethod):
    def __init__(self, student_layer: str | None = None, teacher_layer: str | None = None,
                 distance_weight: float = 25.0, angle_weight: float = 50.0) -> None:
        super().__init__(student_layer, teacher_layer)
        if distance_weight < 0 or angle_weight < 0:
            raise ValueError("distance_weight and angle_weight must be >= 0")
        self.distance_weight, self.angle_weight = float(distance_weight), float(angle_weight)

    def forward(self, ctx: StepContext) -> dict[str, Tensor]:
        s, t = self.features(ctx)
        s, t = embedding(s).float(), embedding(t).float()
        losses: dict[str, Tensor] = {}
        if self.distance_weight:
            with torch.no_grad():
                target = pairwise_distances(t)
            losses["rkd_distance"] = self.distance_weight * nn.functional.smooth_l1_loss(
                pairwise_distances(s), target)
        if self.angle_weight:
            with torch.no_grad():
                target = triplet_angles(t)
            losses["rkd_angle"] = self.angle_weight * nn.functional.smooth_l1_loss(triplet_angles(s), target)
        return losses
