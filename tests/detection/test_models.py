"""The detector family: outputs, sizes, options and the head's entry at any tower depth."""

import pytest
import torch

from kdistill.detection.models import DenseDetector, DetectorOutput, flatten_levels, is_detector
from kdistill.detection.postprocess import postprocess
from kdistill.errors import ConfigError
from kdistill.models import create_model, list_models

FAMILY = ["fcos-simple", "fcos-medium", "fcos-deep"]
DOCUMENTED = {"fcos-simple": 82441, "fcos-medium": 218065, "fcos-deep": 665097}


@pytest.mark.parametrize("name", FAMILY)
def test_outputs_and_documented_size(name):
    model = create_model(name, (1, 32, 32), 10).eval()
    out = model(torch.randn(3, 1, 32, 32))
    assert out.cls.shape == (3, 20, 10) and out.box.shape == (3, 20, 4) and out.ctr.shape == (3, 20)
    assert (out.box > 0).all() and torch.isfinite(out.cls).all()
    assert sum(p.numel() for p in model.parameters()) == DOCUMENTED[name]
    assert is_detector(model) and name in list_models()
    # the size does not depend on the canvas
    assert sum(p.numel() for p in create_model(name, (1, 64, 64), 10).parameters()) == DOCUMENTED[name]


def test_sizes_increase():
    counts = [DOCUMENTED[n] for n in FAMILY]
    assert counts == sorted(counts) and len(set(counts)) == 3


@pytest.mark.parametrize("shape, options, words", [
    ((1, 30, 30), {}, "multiples of 16"),
    ((64,), {}, "image input"),
    ((1, 32, 32), {"levels": 5}, "cannot exceed"),
    ((1, 32, 32), {"nms_iou": 2}, "nms_iou"),
    ((1, 32, 32), {"depth": 3}, "unknown option"),
])
def test_bad_options(shape, options, words):
    with pytest.raises(ConfigError, match=words):
        create_model("fcos-simple", shape, 10, **options)


def test_from_layer_resumes_the_head_exactly():
    torch.manual_seed(0)
    model: DenseDetector = create_model("fcos-simple", (1, 32, 32), 3, head_convs=3).eval()
    x = torch.randn(2, 1, 32, 32)
    full = model(x)
    feats = model.features(x)
    for start in range(4):
        levels = []
        for level, (f, s) in enumerate(zip(feats, model.strides)):
            c = r = f
            for layer in range(start):
                c, r = model.head.cls_tower[layer](c), model.head.reg_tower[layer](r)
            levels.append(model.head.from_layer(c, r, level, s, start=start))
        resumed = flatten_levels(levels)
        for a, b in zip(resumed, full):
            assert torch.allclose(a, b, atol=1e-6)


def test_grid_and_postprocess_by_hand():
    model = create_model("fcos-simple", (1, 32, 32), 2, score_threshold=0.3, nms_iou=0.5)
    points, strides, levels = model.points((32, 32), torch.device("cpu"))
    assert points[:2].tolist() == [[4.0, 4.0], [12.0, 4.0]] and points[16].tolist() == [8.0, 8.0]
    assert strides.tolist() == [8.0] * 16 + [16.0] * 4 and levels.tolist() == [0] * 16 + [1] * 4
    n = len(points)
    cls = torch.full((1, n, 2), -10.0)
    ctr = torch.full((1, n), 10.0)
    box = torch.full((1, n, 4), 3.0)
    cls[0, 5, 1] = 5.0  # location 5 = (12, 12): a confident class-1 box 9..15
    cls[0, 4, 1] = 4.5  # location 4 = (4, 12): box 1..7 x 9..15, no overlap: kept
    cls[0, 6, 1] = 4.0  # location 6 = (20, 12) with the box below: 9..20.5 x 9..15
    box[0, 6] = torch.tensor([11.0, 3.0, 0.5, 3.0])  # IoU with location 5's box 36 / 69 > 0.5: removed
    cls[0, 7, 0] = 4.0  # the same box as location 6's but class 0: NMS is per class, kept
    box[0, 7] = torch.tensor([19.0, 3.0, -7.5, 3.0])  # location 7 = (28, 12): box 9..20.5 again

    dets = postprocess(model, DetectorOutput(cls, box, ctr), (32, 32))[0]
    assert dets["labels"].tolist() == [1, 1, 0]
    assert dets["boxes"].tolist() == [[9.0, 9.0, 15.0, 15.0], [1.0, 9.0, 7.0, 15.0], [9.0, 9.0, 20.5, 15.0]]
    assert dets["scores"][0].item() == pytest.approx((torch.sigmoid(torch.tensor(5.0)) * torch.sigmoid(torch.tensor(10.0))).sqrt().item())
