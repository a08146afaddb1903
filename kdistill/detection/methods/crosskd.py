"""Wang et al. 2023, "CrossKD: Cross-Head Knowledge Distillation for Object Detection" (CVPR 2024).

Prediction mimicking asks the student's head to match the ground truth and
the teacher at once, and the two targets disagree wherever the teacher is
wrong or unsure. CrossKD moves the distillation target off the student's own
predictions: the student's head features after its ``k``-th tower layer are
fed into the *teacher's* head from layer ``k + 1`` on, and the teacher
head's predictions on those features, the cross-head predictions
``p_hat``, are trained to match the teacher's own predictions ``p_t``.
Gradients reach the student's first ``k`` head layers, FPN and backbone
through the frozen teacher layers; the student's own predictions answer to
the ground truth alone.

With ``N`` the sum of the student's positive centerness targets (the FCOS
box-loss normaliser), sigmoid scores ``sigma`` and boxes decoded from the
``(l, t, r, b)`` distances at each location ``r``::

    L_cls = 1/N sum_{r,c} BCE(p_hat_{r,c}, sigma(t_{r,c})) * |sigma(p_hat_{r,c}) - sigma(t_{r,c})|^beta
    L_box = 1/N sum_r  max_c sigma(t_{r,c}) * (1 - GIoU(box_hat_r, box_t_r))
    L     = cls_weight * L_cls + box_weight * L_box

(the quality-focal classification term with the teacher's scores as soft
targets, and GIoU box distillation weighted by the teacher's confidence, as
in the paper's dense-detector recipes; ``cls_loss: kl`` swaps in a binary
KL). The default weights 0.4 and 0.75 are the authors' FCOS settings; the
default ``cross_at: 2`` (the last tower layer of kdistill's two-layer heads,
so only the teacher's predictors are reused) scored best on validation AP
among 0, 1 and 2 on canvas-mnist, see docs/DETECTION.md. The student's features are first standardised per channel and given
the mean and standard deviation of the teacher's features at the same layer
(``align``), as the authors' code does, and pass a 1x1 conv adapter when the
two heads' widths differ. ``cross_at`` is ``k``: 0 feeds the student's FPN
features to the whole teacher head, ``head_convs`` only the predictors.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from kdistill.detection.methods.base import (
    DetectionMethod,
    DetectionStepContext,
    check_cls_loss,
    prediction_losses,
)
from kdistill.detection.models import DenseDetector, flatten_levels
from kdistill.registry import register_method


def align_scale(student: Tensor, teacher: Tensor, eps: float = 1e-6) -> Tensor:
    """Standardise ``student (B, C, H, W)`` per channel, then give it the teacher's per-channel mean and std."""
    dims = (0, 2, 3)
    s_mean, s_std = student.mean(dims, keepdim=True), student.std(dims, keepdim=True)
    t_mean, t_std = teacher.mean(dims, keepdim=True), teacher.std(dims, keepdim=True)
    return (student - s_mean) / (s_std + eps) * t_std + t_mean


def tap_path(tower: str, k: int) -> str:
    """The module whose output is a head's tower feature after layer ``k`` (pre-activation; k = 0: the input)."""
    return "head.input" if k == 0 else f"head.{tower}_tower.{k - 1}.norm"


@register_method("crosskd")
class CrossKD(DetectionMethod):
    name = "crosskd"

    def __init__(self, cross_at: int = 2, cls_weight: float = 0.4, box_weight: float = 0.75, beta: float = 1.0,
                 cls_loss: str = "qfl", align: bool = True) -> None:
        super().__init__()
        if isinstance(cross_at, bool) or not isinstance(cross_at, int) or cross_at < 0:
            raise ValueError(f"cross_at must be a whole number >= 0 (a head tower depth), got {cross_at!r}")
        if cls_weight < 0 or box_weight < 0 or beta < 0:
            raise ValueError("cls_weight, box_weight and beta must be >= 0")
        self.cross_at, self.cls_weight, self.box_weight, self.beta = cross_at, float(cls_weight), float(box_weight), float(beta)
        self.cls_loss = check_cls_loss(cls_loss)
        self.align = bool(align)
        self.cls_adapter: nn.Module | None = None
        self.reg_adapter: nn.Module | None = None

    def resolve(self, student: DenseDetector, teacher: DenseDetector) -> None:
        k = self.cross_at
        deepest = min(student.head.convs, teacher.head.convs)
        if k > deepest:
            raise ValueError(f"cross_at={k}, but the student's head has {student.head.convs} tower layer(s) and "
                             f"the teacher's {teacher.head.convs}; choose 0..{deepest}")
        paths = (tap_path("cls", k), tap_path("reg", k)) if k else ("head.input",)
        self.student_layers = self.teacher_layers = paths
        s_width = student.head.tower_input_width(k) if k == 0 else student.head.width
        t_width = teacher.head.tower_input_width(k) if k == 0 else teacher.head.width
        if s_width != t_width and self.cls_adapter is None:
            self.cls_adapter = nn.Conv2d(s_width, t_width, 1)
            self.reg_adapter = nn.Conv2d(s_width, t_width, 1) if k else self.cls_adapter

    def _bridge(self, s: Tensor, t: Tensor, adapter: nn.Module | None) -> Tensor:
        if adapter is not None:
            s = adapter(s)
        if self.align:
            s = align_scale(s, t.detach())
        return F.relu(s) if self.cross_at else s

    def cross_head(self, ctx: DetectionStepContext):
        """The teacher head's predictions on the student's features (a DetectorOutput)."""
        k, head = self.cross_at, ctx.teacher.head
        cls_path, reg_path = self.student_layers[0], self.student_layers[-1]
        levels = []
        for level, stride in enumerate(ctx.teacher.strides):
            c = self._bridge(ctx.student_features[cls_path][level], ctx.teacher_features[cls_path][level],
                             self.cls_adapter)
            r = c if reg_path == cls_path else self._bridge(ctx.student_features[reg_path][level],
                                                             ctx.teacher_features[reg_path][level], self.reg_adapter)
            levels.append(head.from_layer(c, r, level, stride, start=k))
        return flatten_levels(levels)

    def forward(self, ctx: DetectionStepContext) -> dict[str, Tensor]:
        cls, box = prediction_losses(self.cross_head(ctx), ctx.teacher_out, ctx, cls_loss=self.cls_loss,
                                     beta=self.beta)
        return {"crosskd_cls": self.cls_weight * cls, "crosskd_box": self.box_weight * box}
