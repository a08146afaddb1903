"""Box arithmetic and NMS, against values worked out by hand and a plain greedy loop."""

import pytest
import torch

from kdistill.detection.boxes import (
    batched_nms,
    box_iou,
    box_to_distance,
    distance_to_box,
    elementwise_giou,
)


def test_iou_and_giou_by_hand():
    a = torch.tensor([[0.0, 0.0, 2.0, 2.0]])
    b = torch.tensor([[1.0, 1.0, 3.0, 3.0]])
    # intersection 1, union 4 + 4 - 1 = 7, enclosing box 3 x 3 = 9
    assert box_iou(a, b).item() == pytest.approx(1 / 7)
    iou, giou = elementwise_giou(a[0], b[0])
    assert iou.item() == pytest.approx(1 / 7) and giou.item() == pytest.approx(1 / 7 - 2 / 9)
    far = torch.tensor([4.0, 0.0, 6.0, 2.0])  # no overlap; enclosing 6 x 2 = 12, union 8
    assert elementwise_giou(a[0], far)[1].item() == pytest.approx(0 - 4 / 12)


def test_distance_round_trip():
    points = torch.tensor([[4.0, 6.0]])
    ltrb = torch.tensor([[1.0, 2.0, 3.0, 4.0]])
    box = distance_to_box(points, ltrb)
    assert box.tolist() == [[3.0, 4.0, 7.0, 10.0]]
    assert torch.equal(box_to_distance(points, box), ltrb)


def greedy_reference(boxes, scores, labels, valid, thr):
    keep = []
    for i in sorted(range(len(scores)), key=lambda j: -float(scores[j])):
        if not valid[i]:
            continue
        if all(not (labels[k] == labels[i] and box_iou(boxes[k:k + 1], boxes[i:i + 1]).item() > thr) for k in keep):
            keep.append(i)
    return sorted(keep)


def test_nms_by_hand():
    boxes = torch.tensor([[[0, 0, 10, 10], [1, 1, 10, 10], [0, 0, 10, 10], [20, 20, 30, 30]]], dtype=torch.float)
    scores = torch.tensor([[0.9, 0.8, 0.7, 0.6]])
    labels = torch.tensor([[0, 0, 1, 0]])  # box 2 overlaps box 0 fully but is another class
    keep = batched_nms(boxes, scores, labels, torch.ones(1, 4, dtype=torch.bool), 0.5)
    assert keep.tolist() == [[True, False, True, True]]


def test_nms_matches_a_greedy_loop_on_random_boxes():
    gen = torch.Generator().manual_seed(0)
    for _ in range(20):
        n = 30
        xy = torch.rand(2, n, 2, generator=gen) * 20
        wh = torch.rand(2, n, 2, generator=gen) * 15 + 1
        boxes = torch.cat([xy, xy + wh], -1)
        scores = torch.rand(2, n, generator=gen)
        labels = torch.randint(0, 2, (2, n), generator=gen)
        valid = torch.rand(2, n, generator=gen) > 0.2
        keep = batched_nms(boxes, scores, labels, valid, 0.4)
        for b in range(2):
            expected = greedy_reference(boxes[b], scores[b], labels[b], valid[b], 0.4)
            assert keep[b].nonzero()[:, 0].tolist() == expected
