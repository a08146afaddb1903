"""COCO-style AP through pycocotools on hand-made cases, and the detector report."""

import pytest
import torch

from kdistill.data import load_dataset
from kdistill.detection.evaluate import coco_map, evaluate_detector
from kdistill.models import create_model


def _t(boxes, labels):
    return {"boxes": torch.tensor(boxes, dtype=torch.float), "labels": torch.tensor(labels)}


def _p(boxes, scores, labels):
    return {**_t(boxes, labels), "scores": torch.tensor(scores)}


def test_perfect_and_empty_predictions():
    gt = [_t([[0, 0, 10, 10], [20, 20, 30, 32]], [0, 1]), _t([[5, 5, 9, 9]], [1])]
    perfect = [_p(t["boxes"].tolist(), [0.9] * len(t["labels"]), t["labels"].tolist()) for t in gt]
    stats = coco_map(perfect, gt, num_classes=2)
    assert stats["AP"] == pytest.approx(1.0) and stats["AP50"] == pytest.approx(1.0)
    nothing = [{"boxes": torch.zeros(0, 4), "scores": torch.zeros(0), "labels": torch.zeros(0, dtype=torch.long)}
               for _ in gt]
    assert coco_map(nothing, gt, 2) == {name: 0.0 for name in stats}


def test_iou_thresholds_by_hand():
    # IoU 0.78 with the only box: a hit at IoU 0.50, 0.55, ..., 0.75 (6 of the 10 thresholds), a miss above
    gt = [_t([[0, 0, 10, 10]], [0])]
    stats = coco_map([_p([[0, 0, 10, 7.8]], [0.9], [0])], gt, 1)
    assert stats["AP50"] == pytest.approx(1.0) and stats["AP75"] == pytest.approx(1.0)
    assert stats["AP"] == pytest.approx(0.6)
    wrong_class = coco_map([_p([[0, 0, 10, 10]], [0.9], [1])], gt, 2)
    assert wrong_class["AP"] == 0.0


def test_size_ranges_are_scaled_to_the_canvas():
    # small < 8^2 = 64 px^2 <= medium < 24^2 = 576 <= large
    gt = [_t([[0, 0, 6, 6], [30, 30, 60, 60]], [0, 0])]  # areas 36 (small) and 900 (large)
    stats = coco_map([_p([[0, 0, 6, 6]], [0.9], [0])], gt, 1)  # finds the small one only
    assert stats["APs"] == pytest.approx(1.0) and stats["APl"] == 0.0 and stats["APm"] == -1.0
    fast = coco_map([_p([[0, 0, 6, 6]], [0.9], [0])], gt, 1, by_size=False)
    assert fast["AP"] == pytest.approx(stats["AP"]) and fast["APs"] == -1.0


def test_evaluate_detector_report_and_fidelity(tiny_options):
    data = load_dataset("canvas-digits", **tiny_options)
    torch.manual_seed(0)
    teacher = create_model("fcos-simple", data.input_shape, 10).eval()
    torch.nn.init.constant_(teacher.head.cls_out.bias, 4.0)  # confident everywhere: detections >= 0.5 exist
    torch.nn.init.constant_(teacher.head.ctr_out.bias, 4.0)
    metrics = evaluate_detector(teacher, data, teacher=teacher, latency=False)
    for key in ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR100", "params", "size_bytes"):
        assert key in metrics
    assert metrics["n_test"] == 16 and metrics["n_objects"] == int((data.y_test[..., 0] >= 0).sum())
    assert 0.0 <= metrics["AP"] <= 1.0
    assert metrics["fidelity_AP50"] == pytest.approx(1.0)  # a model agrees perfectly with itself


def test_fidelity_without_confident_teacher_detections_is_reported_missing(tiny_options, caplog):
    data = load_dataset("canvas-digits", **tiny_options)
    torch.manual_seed(0)
    teacher = create_model("fcos-simple", data.input_shape, 10).eval()
    torch.nn.init.constant_(teacher.head.cls_out.bias, -20.0)  # no detection reaches score 0.5
    with caplog.at_level("WARNING", logger="kdistill"):
        metrics = evaluate_detector(teacher, data, teacher=teacher, latency=False)
    assert metrics["fidelity_AP50"] is None
    assert "no detection with score >= 0.5" in metrics["fidelity_AP50_missing"]
    assert "fidelity_AP50 not measured" in caplog.text


def test_detection_latency_uses_one_thread(tiny_options):
    data = load_dataset("canvas-digits", **tiny_options)
    model = create_model("fcos-simple", data.input_shape, 10).eval()
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        metrics = evaluate_detector(model, data, latency=True)
        assert metrics["latency_threads"] == 1  # like every other latency kdistill reports
        assert torch.get_num_threads() == 2  # the caller's count is restored
    finally:
        torch.set_num_threads(before)
