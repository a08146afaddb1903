"""Prediction mimicking for dense detectors: the student's own head matches the teacher's predictions.

The classic output distillation of detectors (the detection form of Hinton
et al. 2015, as in Chen et al. 2017 and, for boxes, Zheng et al. 2022's
localization distillation), and the baseline CrossKD (Wang et al. 2023) is
measured against: the same losses as ``crosskd`` but on the student's
predictions ``p_s`` instead of cross-head ones, so the student's head answers
to the ground truth and the teacher at once. With ``N`` the sum of the
student's positive centerness targets::

    L_cls = 1/N sum_{r,c} D(p_s_{r,c}, sigma(t_{r,c}))
            D = BCE * |sigma(p_s) - sigma(t)|^beta   (cls_loss: qfl)  or  binary KL  (cls_loss: kl)
    L_box = 1/N sum_r  max_c sigma(t_{r,c}) * (1 - GIoU(box_s_r, box_t_r))
    L     = cls_weight * L_cls + box_weight * L_box

The default weights (0.4, 0.75) are ``crosskd``'s, so the two methods differ
only in which predictions are compared.
"""

from __future__ import annotations

from torch import Tensor

from kdistill.detection.methods.base import (
    DetectionMethod,
    DetectionStepContext,
    check_cls_loss,
    prediction_losses,
)
from kdistill.registry import register_method


@register_method("pred-mimic")
class PredictionMimicking(DetectionMethod):
    name = "pred-mimic"

    def __init__(self, cls_weight: float = 0.4, box_weight: float = 0.75, beta: float = 1.0,
                 cls_loss: str = "qfl") -> None:
        super().__init__()
        if cls_weight < 0 or box_weight < 0 or beta < 0:
            raise ValueError("cls_weight, box_weight and beta must be >= 0")
        self.cls_weight, self.box_weight, self.beta = float(cls_weight), float(box_weight), float(beta)
        self.cls_loss = check_cls_loss(cls_loss)

    def forward(self, ctx: DetectionStepContext) -> dict[str, Tensor]:
        cls, box = prediction_losses(ctx.student_out, ctx.teacher_out, ctx, cls_loss=self.cls_loss, beta=self.beta)
        return {"mimic_cls": self.cls_weight * cls, "mimic_box": self.box_weight * box}
