"""Box arithmetic in ``(x1, y1, x2, y2)`` pixel coordinates: IoU, GIoU, distance decoding and NMS.

torchvision is not a dependency, so the few box operations a one-stage
detector needs are written here in plain torch. Every function works on
batched tensors (any leading dimensions) unless it says otherwise.
"""

from __future__ import annotations

import torch
from torch import Tensor

EPS = 1e-7


def box_area(boxes: Tensor) -> Tensor:
    """Area of ``(..., 4)`` boxes; degenerate boxes have area 0."""
    return (boxes[..., 2] - boxes[..., 0]).clamp(min=0) * (boxes[..., 3] - boxes[..., 1]).clamp(min=0)


def box_iou(a: Tensor, b: Tensor) -> Tensor:
    """Pairwise IoU: ``(..., N, 4)`` and ``(..., M, 4)`` -> ``(..., N, M)``."""
    lt = torch.maximum(a[..., :, None, :2], b[..., None, :, :2])
    rb = torch.minimum(a[..., :, None, 2:], b[..., None, :, 2:])
    inter = (rb - lt).clamp(min=0).prod(-1)
    union = box_area(a)[..., :, None] + box_area(b)[..., None, :] - inter
    return inter / union.clamp(min=EPS)


def elementwise_giou(a: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
    """IoU and generalised IoU (Rezatofighi et al. 2019) of matching boxes ``(..., 4)``.

    ``GIoU = IoU - (|C| - |A u B|) / |C|`` with ``C`` the smallest box enclosing
    both; it lies in ``(-1, 1]`` and still has a gradient when the boxes do not
    overlap.
    """
    lt = torch.maximum(a[..., :2], b[..., :2])
    rb = torch.minimum(a[..., 2:], b[..., 2:])
    inter = (rb - lt).clamp(min=0).prod(-1)
    union = box_area(a) + box_area(b) - inter
    iou = inter / union.clamp(min=EPS)
    enclose = (torch.maximum(a[..., 2:], b[..., 2:]) - torch.minimum(a[..., :2], b[..., :2])).clamp(min=0).prod(-1)
    return iou, iou - (enclose - union) / enclose.clamp(min=EPS)


def distance_to_box(points: Tensor, ltrb: Tensor) -> Tensor:
    """Boxes from points ``(..., 2)`` and distances to the left, top, right and bottom edges ``(..., 4)``."""
    return torch.cat([points - ltrb[..., :2], points + ltrb[..., 2:]], dim=-1)


def box_to_distance(points: Tensor, boxes: Tensor) -> Tensor:
    """Distances ``(l, t, r, b)`` from points to the edges of boxes (negative outside)."""
    return torch.cat([points - boxes[..., :2], boxes[..., 2:] - points], dim=-1)


def batched_nms(boxes: Tensor, scores: Tensor, labels: Tensor, valid: Tensor, iou_threshold: float) -> Tensor:
    """Greedy per-class non-maximum suppression for a batch of images at once.

    ``boxes (B, K, 4)``, ``scores``/``labels``/``valid (B, K)``. Returns the
    keep mask ``(B, K)``. Greedy NMS keeps box ``j`` exactly when no *kept*,
    higher-scoring box of the same class overlaps it by more than the
    threshold. That rule is a triangular recurrence in score order, so instead
    of a Python loop over boxes it is solved by iterating
    ``keep <- valid & not any_i(keep_i & suppresses_ij)`` from ``keep = valid``:
    after ``t`` rounds the first ``t`` boxes are settled, and the first round
    that changes nothing has reached the recurrence's unique solution, which
    is the greedy answer. In practice it settles in a handful of rounds.
    """
    order = scores.masked_fill(~valid, -1.0).argsort(dim=1, descending=True)
    inverse = order.argsort(dim=1)

    def gather(t: Tensor) -> Tensor:
        index = order if t.ndim == 2 else order[..., None].expand(-1, -1, t.shape[-1])
        return t.gather(1, index)

    b, cls, v = gather(boxes), gather(labels), gather(valid)
    k = b.shape[1]
    earlier = torch.ones(k, k, dtype=torch.bool, device=b.device).triu(1)  # i (row) ranks above j
    suppresses = (box_iou(b, b) > iou_threshold) & (cls[:, :, None] == cls[:, None, :]) & earlier
    suppresses = (suppresses & v[:, :, None]).float()
    keep = v.clone()
    for _ in range(k + 1):
        hit = torch.bmm(keep.float()[:, None, :], suppresses)[:, 0] > 0
        new = v & ~hit
        if torch.equal(new, keep):
            break
        keep = new
    return keep.gather(1, inverse)
