"""COCO-style detection metrics through pycocotools, plus size, latency and fidelity to a teacher.

AP is computed by pycocotools' ``COCOeval`` (the reference COCO
implementation; torchmetrics' ``MeanAveragePrecision`` wraps the same code
but refuses to run without torchvision, which kdistill does not depend on):
AP averaged over IoU 0.50:0.05:0.95, AP50, AP75, and AP by object size, at
up to 100 detections per image.

Object sizes: COCO's ``small < 32^2 <= medium < 96^2 <= large`` (pixel
areas) would put every glyph of a 64x64 canvas into 'small', so the size
ranges are scaled down by 4 in side length: **small < 8^2 = 64 px^2,
medium 64-576 px^2, large >= 24^2 = 576 px^2** (``COCOeval.params.areaRng``;
the same 1:3 side ratio as COCO's). Change them with ``small`` / ``large``.
A size with no ground-truth box reports -1, as COCO does.
"""

from __future__ import annotations

import contextlib
import io
import logging
from typing import Any

import numpy as np
from torch import Tensor, nn

from kdistill.detection.postprocess import detect, targets_to_list
from kdistill.errors import ConfigError
from kdistill.eval import LATENCY_THREADS
from kdistill.eval.measure import cpu_latency, parameter_count, size_on_disk

log = logging.getLogger("kdistill")

SMALL_SIDE = 8.0
LARGE_SIDE = 24.0
#: teacher detections at least this confident are the reference of ``fidelity_AP50``
FIDELITY_SCORE = 0.5
STAT_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")


def _cocoeval():
    try:
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval
    except ImportError:
        raise ConfigError("Detection metrics need pycocotools: pip install 'kdistill[detection]'.") from None
    return COCO, COCOeval


def coco_map(predictions: list[dict[str, Tensor]], targets: list[dict[str, Tensor]], num_classes: int, *,
             small: float = SMALL_SIDE, large: float = LARGE_SIDE, by_size: bool = True) -> dict[str, float]:
    """COCO AP / AR of per-image ``predictions`` (boxes, scores, labels) against ``targets`` (boxes, labels).

    Boxes are ``(x1, y1, x2, y2)`` pixels. ``by_size=False`` evaluates the
    'all' size range only (about four times faster; APs/APm/APl are then -1).
    """
    if len(predictions) != len(targets):
        raise ValueError(f"{len(predictions)} predictions for {len(targets)} images")
    COCO, COCOeval = _cocoeval()
    annotations = []
    for image_id, t in enumerate(targets):
        for box, label in zip(t["boxes"].tolist(), t["labels"].tolist()):
            w, h = box[2] - box[0], box[3] - box[1]
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": int(label),
                                "bbox": [box[0], box[1], w, h], "area": w * h, "iscrowd": 0})
    rows = [np.concatenate([np.full((len(p["scores"]), 1), image_id),
                            _xywh(p["boxes"].detach().cpu().double().numpy()),
                            p["scores"].detach().cpu().double().numpy()[:, None],
                            p["labels"].detach().cpu().double().numpy()[:, None]], 1)
            for image_id, p in enumerate(predictions) if len(p["scores"])]
    if not annotations:
        raise ValueError("no ground-truth boxes to evaluate against")
    if not rows:  # nothing detected: every precision is 0
        return {name: 0.0 for name in STAT_NAMES}
    quiet = io.StringIO()
    with contextlib.redirect_stdout(quiet):  # pycocotools prints progress
        gt = COCO()
        gt.dataset = {"images": [{"id": i} for i in range(len(targets))], "annotations": annotations,
                      "categories": [{"id": c} for c in range(num_classes)]}
        gt.createIndex()
        dt = gt.loadRes(np.concatenate(rows))
        ev = COCOeval(gt, dt, "bbox")
        if by_size:
            ev.params.areaRng = [[0.0, 1e10], [0.0, small ** 2], [small ** 2, large ** 2], [large ** 2, 1e10]]
        else:
            ev.params.areaRng, ev.params.areaRngLbl = [[0.0, 1e10]], ["all"]
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return {name: float(v) for name, v in zip(STAT_NAMES, ev.stats)}


def _xywh(boxes: np.ndarray) -> np.ndarray:
    out = boxes.copy()
    out[:, 2:] -= out[:, :2]
    return out


def detection_score(model: nn.Module, x: Tensor, y: Tensor) -> float:
    """AP (IoU 0.50:0.95, all sizes) of ``model`` on images ``x`` with padded targets ``y``."""
    stats = coco_map(detect(model, x), targets_to_list(y), model.num_classes, by_size=False)
    return stats["AP"]


def evaluate_detector(model: nn.Module, data: Any, teacher: nn.Module | None = None, *,
                      latency: bool = True) -> dict[str, Any]:
    """Test-set metrics of a detector: AP, AP50, AP75, APs/APm/APl, AR100, params, size, CPU latency.

    ``data`` is a detection :class:`~kdistill.data.DataSplits`. ``latency_ms``
    is the median CPU time of one forward pass on one canvas (the network
    alone; post-processing excluded) with one torch thread, like every other
    latency kdistill reports (``latency_threads``). Given the ``teacher``,
    ``fidelity_AP50`` is the student's AP50 measured against the teacher's
    own detections with score >= 0.5 as ground truth (1.0: it finds what the
    teacher finds, where the teacher puts it). When the teacher makes no such
    detection there is nothing to measure against: ``fidelity_AP50`` is
    ``None`` and ``fidelity_AP50_missing`` says why.
    """
    predictions = detect(model, data.x_test)
    stats = coco_map(predictions, targets_to_list(data.y_test), data.num_classes)
    result: dict[str, Any] = {k: stats[k] for k in ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR100")}
    result["n_test"] = int(len(data.x_test))
    result["n_objects"] = int((data.y_test[..., 0] >= 0).sum().item())
    result["params"] = parameter_count(model)
    result["size_bytes"] = size_on_disk(model)
    if latency:
        timing = cpu_latency(model, data.input_shape, batch_size=1, threads=LATENCY_THREADS)
        result["latency_ms"] = timing["ms_per_sample"]
        result["latency_threads"] = int(timing["threads"])
    if teacher is not None:
        reference = [{"boxes": d["boxes"][d["scores"] >= FIDELITY_SCORE], "labels": d["labels"][d["scores"] >= FIDELITY_SCORE]}
                     for d in detect(teacher, data.x_test)]
        if any(len(r["labels"]) for r in reference):
            result["fidelity_AP50"] = coco_map(predictions, reference, data.num_classes, by_size=False)["AP50"]
        else:
            reason = (f"the teacher made no detection with score >= {FIDELITY_SCORE} on the "
                      f"{len(data.x_test)} test images, so there is nothing to compare the student with")
            result["fidelity_AP50"] = None
            result["fidelity_AP50_missing"] = reason
            log.warning("fidelity_AP50 not measured: %s", reason)
    return result
