"""FCOS training targets and losses: sigmoid focal loss, GIoU box loss, centerness BCE.

Assignment (Tian et al. 2019, with the centre sampling of FCOS's later
versions): a location is a positive for a ground-truth box when

* it lies inside the box and within ``center_radius * stride`` of the box
  centre (the window clipped to the box), and
* the largest of its distances to the box edges, ``max(l, t, r, b)``, falls
  in its level's size range (level ``i`` of ``n``: ``(2 s_{i-1}, 2 s_i]`` in
  pixels with ``s`` the strides, the first from 0 and the last open), so
  small boxes go to fine levels and large ones to coarse levels;

a location matching several boxes takes the smallest. Everything else is
background. With ``N_pos`` positives in the batch, centerness targets
``c* = sqrt(min(l,r)/max(l,r) * min(t,b)/max(t,b))`` and ``p = sigmoid``::

    L_cls = sum over locations and classes of FL(p, onehot) / N_pos
            FL = -alpha (1-p)^gamma log p  (positives),  -(1-alpha) p^gamma log(1-p)  (negatives)
    L_box = sum_pos c* (1 - GIoU(box, box*)) / sum_pos c*
    L_ctr = mean_pos BCE(ctr, c*)
    L     = L_cls + box_weight * L_box + L_ctr

(alpha 0.25, gamma 2 as in RetinaNet; box_weight 1).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from kdistill.detection.boxes import box_area, box_to_distance, distance_to_box, elementwise_giou
from kdistill.detection.models import DenseDetector, DetectorOutput

INF = 1e8


def sigmoid_focal_loss(logits: Tensor, targets: Tensor, alpha: float = 0.25, gamma: float = 2.0) -> Tensor:
    """Element-wise focal loss (Lin et al. 2017) on logits against 0/1 (or soft) targets; not reduced."""
    p = torch.sigmoid(logits)
    ce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    p_t = p * targets + (1 - p) * (1 - targets)
    alpha_t = alpha * targets + (1 - alpha) * (1 - targets)
    return alpha_t * (1 - p_t) ** gamma * ce


def giou_loss(pred: Tensor, target: Tensor) -> Tensor:
    """``1 - GIoU`` of matching ``(..., 4)`` boxes; not reduced."""
    return 1.0 - elementwise_giou(pred, target)[1]


def centerness_target(ltrb: Tensor) -> Tensor:
    """FCOS centerness of distances ``(..., 4)``: 1 at a box's centre, towards 0 at its edges."""
    lr, tb = ltrb[..., 0::2], ltrb[..., 1::2]
    ratio = (lr.min(-1).values / lr.max(-1).values.clamp(min=1e-6)) * (tb.min(-1).values / tb.max(-1).values.clamp(min=1e-6))
    return ratio.clamp(min=0).sqrt()


def size_ranges(strides: list[int]) -> list[tuple[float, float]]:
    """Per-level ``(lo, hi]`` ranges of ``max(l, t, r, b)``: boundaries at twice each stride."""
    bounds = [0.0] + [2.0 * s for s in strides[:-1]] + [INF]
    return [(bounds[i], bounds[i + 1]) for i in range(len(strides))]


@dataclass
class Assignment:
    """What assignment decided for a batch: ``labels (B, L)`` (-1 background), boxes ``(B, L, 4)``."""

    labels: Tensor
    boxes: Tensor
    points: Tensor
    positive: Tensor
    centerness: Tensor  # (B, L), 0 at negatives

    @property
    def num_positive(self) -> Tensor:
        return self.positive.sum()


def assign(targets: Tensor, points: Tensor, strides: Tensor, level_ids: Tensor, ranges: list[tuple[float, float]],
           center_radius: float = 1.5) -> Assignment:
    """FCOS targets for ``targets (B, M, 5)`` rows ``[class, x1, y1, x2, y2]`` (class < 0: padding)."""
    gt_cls, gt_box = targets[..., 0], targets[..., 1:]
    valid = gt_cls >= 0  # (B, M)
    pts = points[None, :, None, :]  # (1, L, 1, 2)
    ltrb = box_to_distance(pts, gt_box[:, None, :, :])  # (B, L, M, 4)
    inside = ltrb.min(-1).values > 0
    centre = (gt_box[..., :2] + gt_box[..., 2:]) / 2  # (B, M, 2)
    radius = (strides * center_radius)[None, :, None, None]
    lo = torch.maximum(centre[:, None] - radius, gt_box[:, None, :, :2])
    hi = torch.minimum(centre[:, None] + radius, gt_box[:, None, :, 2:])
    in_centre = ((pts > lo) & (pts < hi)).all(-1)
    bounds = torch.tensor(ranges, dtype=points.dtype, device=points.device)[level_ids]  # (L, 2)
    reach = ltrb.max(-1).values
    in_range = (reach > bounds[None, :, None, 0]) & (reach <= bounds[None, :, None, 1])
    ok = inside & in_centre & in_range & valid[:, None, :]
    area = box_area(gt_box)[:, None, :].expand_as(reach).masked_fill(~ok, INF)
    best_area, best = area.min(-1)  # (B, L)
    positive = best_area < INF
    labels = torch.gather(gt_cls.long(), 1, best).masked_fill(~positive, -1)
    boxes = torch.gather(gt_box, 1, best[..., None].expand(-1, -1, 4))
    target_ltrb = box_to_distance(points[None], boxes)
    ctr = torch.where(positive, centerness_target(target_ltrb.clamp(min=0)), torch.zeros_like(best_area))
    return Assignment(labels, boxes, points, positive, ctr)


class FCOSLoss:
    """The detection loss of the module docstring, for a :class:`DenseDetector`'s output."""

    def __init__(self, alpha: float = 0.25, gamma: float = 2.0, box_weight: float = 1.0,
                 center_radius: float = 1.5) -> None:
        self.alpha, self.gamma = float(alpha), float(gamma)
        self.box_weight, self.center_radius = float(box_weight), float(center_radius)

    def assign(self, model: DenseDetector, out: DetectorOutput, targets: Tensor, image_hw: tuple[int, int]) -> Assignment:
        points, strides, level_ids = model.points(image_hw, out.cls.device)
        if len(points) != out.cls.shape[1]:
            raise ValueError(f"the model predicts {out.cls.shape[1]} locations but its grid has {len(points)}")
        return assign(targets.float(), points, strides, level_ids, size_ranges(model.strides), self.center_radius)

    def __call__(self, model: DenseDetector, out: DetectorOutput, targets: Tensor,
                 image_hw: tuple[int, int]) -> tuple[dict[str, Tensor], Assignment]:
        a = self.assign(model, out, targets, image_hw)
        return self.losses(out, a), a

    def losses(self, out: DetectorOutput, a: Assignment) -> dict[str, Tensor]:
        """``loss`` (the total) and its parts ``cls``, ``box`` (unweighted) and ``ctr`` for an assignment."""
        num_pos = a.num_positive.clamp(min=1).float()
        onehot = F.one_hot(a.labels.clamp(min=0), out.cls.shape[-1]).float() * a.positive[..., None]
        loss_cls = sigmoid_focal_loss(out.cls.float(), onehot, self.alpha, self.gamma).sum() / num_pos
        pos = a.positive
        weight = a.centerness[pos]
        pred_boxes = distance_to_box(a.points[None].expand_as(out.box[..., :2]), out.box.float())[pos]
        loss_box = (weight * giou_loss(pred_boxes, a.boxes[pos])).sum() / weight.sum().clamp(min=1e-6)
        loss_ctr = F.binary_cross_entropy_with_logits(out.ctr.float()[pos], weight, reduction="sum") / num_pos
        total = loss_cls + self.box_weight * loss_box + loss_ctr
        return {"loss": total, "cls": loss_cls, "box": loss_box, "ctr": loss_ctr}
