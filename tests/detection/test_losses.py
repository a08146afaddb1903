"""FCOS assignment and losses against values worked out by hand."""

import math

import pytest
import torch

from kdistill.detection.losses import (
    FCOSLoss,
    assign,
    centerness_target,
    giou_loss,
    sigmoid_focal_loss,
    size_ranges,
)
from kdistill.detection.models import DetectorOutput
from kdistill.models import create_model


def test_focal_loss_by_hand():
    # logit 0 -> p = 0.5. Positive: alpha (1-p)^2 (-log p) = 0.25 * 0.25 * ln 2; negative: 0.75 * 0.25 * ln 2
    loss = sigmoid_focal_loss(torch.zeros(2), torch.tensor([1.0, 0.0]))
    assert loss.tolist() == pytest.approx([0.0625 * math.log(2), 0.1875 * math.log(2)])
    # a confident right answer costs almost nothing, a confident wrong one a lot
    right, wrong = sigmoid_focal_loss(torch.tensor([5.0, -5.0]), torch.tensor([1.0, 1.0]))
    assert right < 1e-5 < 1.0 < wrong


def test_giou_loss_and_centerness_by_hand():
    a, b = torch.tensor([0.0, 0.0, 2.0, 2.0]), torch.tensor([1.0, 1.0, 3.0, 3.0])
    assert giou_loss(a, b).item() == pytest.approx(1 - (1 / 7 - 2 / 9))
    assert giou_loss(a, a).item() == pytest.approx(0.0, abs=1e-6)
    # l, t, r, b = 1, 3, 2, 2: sqrt(1/2 * 2/3)
    assert centerness_target(torch.tensor([1.0, 3.0, 2.0, 2.0])).item() == pytest.approx(math.sqrt(1 / 3))
    assert centerness_target(torch.tensor([2.0, 2.0, 2.0, 2.0])).item() == pytest.approx(1.0)


def test_size_ranges():
    assert size_ranges([8, 16]) == [(0.0, 16.0), (16.0, 1e8)]


def test_assignment_by_hand():
    # one level, stride 8, a 4x4 grid of location centres 4, 12, 20, 28 (x and y)
    xs = torch.tensor([4.0, 12.0, 20.0, 28.0])
    points = torch.stack(torch.meshgrid(xs, xs, indexing="xy"), -1).reshape(-1, 2)
    strides = torch.full((16,), 8.0)
    levels = torch.zeros(16, dtype=torch.long)
    # box 10..30 x 10..20, class 3: centre (20, 15); window +-12 clipped to the box -> x in (10, 30), y in (10, 20)
    # locations strictly inside: x in {12, 20, 28}, y = 12 only (20 is on the edge) -> 3 positives
    targets = torch.tensor([[[3.0, 10.0, 10.0, 30.0, 20.0], [-1, 0, 0, 0, 0]]])
    a = assign(targets, points, strides, levels, [(0.0, 1e8)], center_radius=1.5)
    pos = a.positive[0].nonzero()[:, 0].tolist()
    assert [points[i].tolist() for i in pos] == [[12.0, 12.0], [20.0, 12.0], [28.0, 12.0]]
    assert a.labels[0, pos].tolist() == [3, 3, 3] and (a.labels[0, ~a.positive[0]] == -1).all()
    # at (20, 12): l, t, r, b = 10, 2, 10, 8 -> centerness sqrt(1 * 2/8) = 0.5
    assert a.centerness[0, pos[1]].item() == pytest.approx(0.5)
    # a range that excludes the box's reach leaves no positive
    none = assign(targets, points, strides, levels, [(0.0, 5.0)])
    assert not none.positive.any()


def test_smallest_box_wins_where_boxes_overlap():
    points = torch.tensor([[12.0, 12.0]])
    targets = torch.tensor([[[1.0, 0.0, 0.0, 30.0, 30.0], [2.0, 8.0, 8.0, 16.0, 16.0]]])
    a = assign(targets, points, torch.tensor([8.0]), torch.tensor([0]), [(0.0, 1e8)], center_radius=100)
    assert a.labels.tolist() == [[2]]


def test_fcos_loss_terms_by_hand():
    # the model only supplies the grid here; predictions are set by hand
    model = create_model("fcos-simple", (1, 32, 32), 2)
    points, _, _ = model.points((32, 32), torch.device("cpu"))
    n = len(points)  # 4x4 (stride 8) + 2x2 (stride 16) = 20 locations
    # a 16x16 box centred on the location (12, 12) of level 0: its reach there is 8 <= 16
    targets = torch.tensor([[[1.0, 4.0, 4.0, 20.0, 20.0]]])
    out = DetectorOutput(torch.zeros(1, n, 2), torch.full((1, n, 4), 8.0), torch.zeros(1, n))
    losses, a = FCOSLoss()(model, out, targets, (32, 32))
    pos = a.positive[0]
    k = int(pos.sum())
    assert k >= 1
    # cls: every (location, class) has logit 0: k positives at 0.0625 ln2, all other 2n - k pairs at 0.1875 ln2
    expected_cls = (k * 0.0625 + (2 * n - k) * 0.1875) * math.log(2) / k
    assert losses["cls"].item() == pytest.approx(expected_cls, rel=1e-5)
    # ctr: BCE(logit 0, c*) = ln 2 whatever c* is
    assert losses["ctr"].item() == pytest.approx(math.log(2), rel=1e-5)
    # box: the location at (12, 12) predicts exactly the box -> zero there; the loss is a weighted mean
    centre = [i for i in range(n) if points[i].tolist() == [12.0, 12.0]][0]
    assert pos[centre] and 0 <= losses["box"].item() < 1
    assert losses["loss"].item() == pytest.approx((losses["cls"] + losses["box"] + losses["ctr"]).item())
