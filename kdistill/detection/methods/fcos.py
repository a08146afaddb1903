"""The detector's own loss on its boxes, as a loss term: what ``ce`` is to a classifier.

FCOS (Tian et al. 2019; :mod:`kdistill.detection.losses`) on the student's
predictions and the batch's assignment (computed once per batch by
:class:`~kdistill.detection.task.DetectionTask` and shared with the other
terms)::

    L = L_cls + box_weight * L_box + L_ctr

reported as its three parts ``cls``, ``box`` (already weighted) and ``ctr``,
which add up to ``L``. A detection run's loss starts with this term at
weight 1 unless ``distill.terms`` lists it with another weight.
"""

from __future__ import annotations

from torch import Tensor

from kdistill.detection.losses import FCOSLoss
from kdistill.detection.methods.base import DetectionMethod, DetectionStepContext
from kdistill.registry import register_method


@register_method("fcos")
class DetectionLabelLoss(DetectionMethod):
    name = "fcos"
    needs_same_grid = False  # the student's predictions against its own assignment: no teacher involved

    def __init__(self, alpha: float = 0.25, gamma: float = 2.0, box_weight: float = 1.0) -> None:
        super().__init__()
        if not 0.0 <= alpha <= 1.0 or gamma < 0 or box_weight < 0:
            raise ValueError("alpha must lie in [0, 1], and gamma and box_weight must be >= 0")
        self.loss = FCOSLoss(alpha=alpha, gamma=gamma, box_weight=box_weight)

    def forward(self, ctx: DetectionStepContext) -> dict[str, Tensor]:
        parts = self.loss.losses(ctx.student_out, ctx.assignment)
        return {"cls": parts["cls"], "box": self.loss.box_weight * parts["box"], "ctr": parts["ctr"]}
