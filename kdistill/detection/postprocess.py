"""From dense predictions to detections: score, threshold, keep the top candidates, NMS.

Per image, with ``p_c = sigmoid(class logit)`` and ``q = sigmoid(centerness)``,
every (location, class) pair scores ``sqrt(p_c * q)`` (FCOS's ranking); pairs
above ``score_threshold`` compete, the ``pre_nms_top_k`` best survive, boxes
are clipped to the canvas, per-class greedy NMS at ``nms_iou`` removes
duplicates and at most ``max_detections`` remain (all four are model options).
"""

from __future__ import annotations

import torch
from torch import Tensor

from kdistill.detection.boxes import batched_nms, distance_to_box
from kdistill.detection.models import DenseDetector, DetectorOutput


def postprocess(model: DenseDetector, out: DetectorOutput, image_hw: tuple[int, int],
                score_threshold: float | None = None) -> list[dict[str, Tensor]]:
    """One dict per image with ``boxes (n, 4)`` (x1, y1, x2, y2 pixels), ``scores (n,)``, ``labels (n,)``."""
    threshold = model.score_threshold if score_threshold is None else score_threshold
    points = model.points(image_hw, out.cls.device)[0]
    b, n_loc, n_cls = out.cls.shape
    scores = torch.sqrt(torch.sigmoid(out.cls.float()) * torch.sigmoid(out.ctr.float())[..., None])
    k = min(model.pre_nms_top_k, n_loc * n_cls)
    top, flat = scores.reshape(b, -1).topk(k, dim=1)
    loc, labels = flat // n_cls, flat % n_cls
    ltrb = out.box.float().gather(1, loc[..., None].expand(-1, -1, 4))
    boxes = distance_to_box(points[loc], ltrb)
    h, w = image_hw
    boxes = torch.stack([boxes[..., 0].clamp(0, w), boxes[..., 1].clamp(0, h),
                         boxes[..., 2].clamp(0, w), boxes[..., 3].clamp(0, h)], -1)
    valid = top > threshold
    keep = batched_nms(boxes, top, labels, valid, model.nms_iou)
    results = []
    for i in range(b):
        idx = keep[i].nonzero()[:, 0]
        idx = idx[top[i, idx].argsort(descending=True)][:model.max_detections]
        results.append({"boxes": boxes[i, idx], "scores": top[i, idx], "labels": labels[i, idx]})
    return results


@torch.no_grad()
def detect(model: DenseDetector, images: Tensor, batch_size: int = 256,
           score_threshold: float | None = None) -> list[dict[str, Tensor]]:
    """Detections for every image of ``images (N, C, H, W)``, in eval mode (the mode is restored)."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    hw = tuple(images.shape[-2:])
    results: list[dict[str, Tensor]] = []
    try:
        for i in range(0, len(images), batch_size):
            out = model(images[i:i + batch_size].to(device))
            results += postprocess(model, out, hw, score_threshold)
    finally:
        model.train(was_training)
    return results


def targets_to_list(targets: Tensor) -> list[dict[str, Tensor]]:
    """Padded ``(N, M, 5)`` targets -> one ``{"boxes", "labels"}`` dict per image (padding dropped)."""
    out = []
    for row in targets:
        real = row[:, 0] >= 0
        out.append({"boxes": row[real, 1:].float(), "labels": row[real, 0].long()})
    return out
