"""The detection distillation losses on tiny inputs, by hand, and where each may (not) be used."""

import copy
import math

import pytest
import torch

from kdistill.config import parse_config
from kdistill.detection.losses import FCOSLoss
from kdistill.detection.methods.base import (
    DetectionStepContext,
    binary_kl,
    box_distillation,
    kd_quality_focal,
)
from kdistill.detection.methods.crosskd import CrossKD, align_scale
from kdistill.detection.methods.feat_imitation import FeatureImitation
from kdistill.detection.methods.pred_mimic import PredictionMimicking
from kdistill.detection.objective import build_objective
from kdistill.detection.task import DetectionTask
from kdistill.distiller import Distiller, build_method
from kdistill.errors import ConfigError
from kdistill.methods.hooks import FeatureHooks
from kdistill.models import create_model

SHAPE = (1, 32, 32)


def test_kd_quality_focal_by_hand():
    # teacher logit 0 -> target 0.5; student logit 0: BCE = ln 2 but |0.5 - 0.5|^1 = 0 -> no loss
    assert kd_quality_focal(torch.zeros(3), torch.zeros(3)).item() == pytest.approx(0.0)
    # student logit ln 3 -> sigma = 0.75; BCE(ln3, 0.5) = -0.5 ln 0.75 - 0.5 ln 0.25 = 0.5 ln(16/3); |0.75-0.5| = 0.25
    s = torch.tensor([math.log(3)])
    assert kd_quality_focal(s, torch.zeros(1), beta=1.0).item() == pytest.approx(0.25 * 0.5 * math.log(16 / 3))
    assert kd_quality_focal(s, torch.zeros(1), beta=2.0).item() == pytest.approx(0.0625 * 0.5 * math.log(16 / 3))


def test_binary_kl_by_hand():
    # p = 0.5, q = 0.75: KL = 0.5 ln(0.5/0.75) + 0.5 ln(0.5/0.25) = 0.5 ln(4/3)
    assert binary_kl(torch.tensor([math.log(3)]), torch.zeros(1)).item() == pytest.approx(0.5 * math.log(4 / 3))
    assert binary_kl(torch.tensor([1.3, -2.0]), torch.tensor([1.3, -2.0])).item() == pytest.approx(0.0, abs=1e-6)


def test_box_distillation_by_hand():
    points = torch.tensor([[10.0, 10.0]])
    student = torch.tensor([[[1.0, 1.0, 1.0, 1.0]]])  # box 9..11 (area 4)
    teacher = torch.tensor([[[2.0, 2.0, 2.0, 2.0]]])  # box 8..12 (area 16), encloses it: GIoU = IoU = 1/4
    loss = box_distillation(student, teacher, points, torch.tensor([[0.5]]))
    assert loss.item() == pytest.approx(0.5 * (1 - 0.25))


def test_align_scale_gives_the_teacher_statistics():
    torch.manual_seed(0)
    s, t = torch.randn(4, 3, 5, 5) * 7 + 2, torch.randn(4, 3, 5, 5) * 0.5 - 1
    a = align_scale(s, t)
    assert torch.allclose(a.mean((0, 2, 3)), t.mean((0, 2, 3)), atol=1e-5)
    assert torch.allclose(a.std((0, 2, 3)), t.std((0, 2, 3)), atol=1e-4)


def _context(student, teacher, methods, x):
    """Run the detection Distiller's forward pieces by hand and return the step context."""
    paths_s = [p for m in methods for p in m.student_layers]
    paths_t = [p for m in methods for p in m.teacher_layers]
    hs = FeatureHooks(student, paths_s, every_call=True)
    ht = FeatureHooks(teacher, paths_t, every_call=True)
    with torch.no_grad():
        t_out = teacher(x)
    s_out = student(x)
    targets = torch.tensor([[[1.0, 4.0, 4.0, 20.0, 20.0]]]).expand(len(x), -1, -1)
    _, assignment = FCOSLoss()(student, s_out, targets, (32, 32))
    return DetectionStepContext(x, targets, student, teacher, s_out, t_out, assignment, assignment.points,
                                hs.pop(), ht.pop())


@pytest.mark.parametrize("cross_at", [0, 1, 2])
def test_crosskd_of_a_model_with_itself_is_zero(cross_at):
    # without alignment the cross-head pass of a model through its own head reproduces its predictions
    torch.manual_seed(0)
    teacher = create_model("fcos-simple", SHAPE, 3).eval()
    student = copy.deepcopy(teacher)
    method = CrossKD(cross_at=cross_at, align=False)
    method.bind(student, teacher)
    ctx = _context(student, teacher, [method], torch.randn(2, *SHAPE))
    losses = method(ctx)
    assert losses["crosskd_cls"].item() == pytest.approx(0.0, abs=1e-6)
    assert losses["crosskd_box"].item() == pytest.approx(0.0, abs=1e-5)


def test_crosskd_trains_the_student_through_the_frozen_teacher_head():
    torch.manual_seed(0)
    teacher = create_model("fcos-medium", SHAPE, 3).eval()  # head width 48 vs the student's 32: an adapter
    for p in teacher.parameters():
        p.requires_grad_(False)
    student = create_model("fcos-simple", SHAPE, 3)
    method = CrossKD(cross_at=1)
    method.bind(student, teacher)
    assert method.cls_adapter.in_channels == 32 and method.cls_adapter.out_channels == 48
    assert method.student_layers == ("head.cls_tower.0.norm", "head.reg_tower.0.norm")
    ctx = _context(student, teacher, [method], torch.randn(2, *SHAPE))
    losses = method(ctx)
    (losses["crosskd_cls"] + losses["crosskd_box"]).backward()
    assert student.backbone.stages[0][0].conv.weight.grad.abs().sum() > 0
    assert student.head.cls_tower[0].conv.weight.grad.abs().sum() > 0
    # the student's own layers after the crossing point and its predictors get nothing from CrossKD
    assert student.head.cls_tower[1].conv.weight.grad is None and student.head.cls_out.weight.grad is None
    assert all(p.grad is None for p in teacher.parameters())


def test_pred_mimic_of_identical_models_is_zero_and_otherwise_positive():
    torch.manual_seed(0)
    teacher = create_model("fcos-simple", SHAPE, 3).eval()
    method = PredictionMimicking()
    method.bind(teacher, teacher)
    same = method(_context(copy.deepcopy(teacher), teacher, [method], torch.randn(2, *SHAPE)))
    assert same["mimic_cls"].item() == pytest.approx(0.0, abs=1e-6) and same["mimic_box"].item() < 1e-5
    other = create_model("fcos-simple", SHAPE, 3)
    losses = method(_context(other, teacher, [method], torch.randn(2, *SHAPE)))
    assert losses["mimic_cls"].item() > 0 and losses["mimic_box"].item() > 0


def test_feat_imitation_by_hand():
    torch.manual_seed(0)
    teacher = create_model("fcos-medium", SHAPE, 3).eval()
    student = create_model("fcos-simple", SHAPE, 3)
    method = FeatureImitation()
    method.bind(student, teacher)
    assert method.student_layers == ("fpn.outputs.0", "fpn.outputs.1") and len(method.adapters) == 2
    for adapter in method.adapters:  # zero adapters: the loss is the mean square of the teacher's maps
        torch.nn.init.zeros_(adapter.weight)
        torch.nn.init.zeros_(adapter.bias)
    x = torch.randn(2, *SHAPE)
    ctx = _context(student, teacher, [method], x)
    with torch.no_grad():
        maps = teacher.features(x)
    expected = sum(m.pow(2).mean() for m in maps) / 2
    assert method(ctx)["feat_imitation"].item() == pytest.approx(expected.item(), rel=1e-5)


def test_level_hooks_keep_one_output_per_level_and_reset():
    model = create_model("fcos-simple", SHAPE, 3)
    hooks = FeatureHooks(model, ["head.cls_tower.0.norm", "fpn.outputs.1"], every_call=True)
    model(torch.randn(2, *SHAPE))
    model(torch.randn(2, *SHAPE))  # a second forward starts afresh
    feats = hooks.pop()
    assert [f.shape for f in feats["head.cls_tower.0.norm"]] == [(2, 32, 4, 4), (2, 32, 2, 2)]
    assert len(feats["fpn.outputs.1"]) == 1


def test_detection_method_on_a_classifier_is_a_config_error():
    teacher, student = create_model("cnn-medium", (1, 8, 8), 10), create_model("cnn-simple", (1, 8, 8), 10)
    for name in ("crosskd", "pred-mimic", "feat-imitation"):
        with pytest.raises(ConfigError, match="distils object detectors"):
            Distiller(teacher=teacher, student=student, methods=[(build_method(name, {}, 4.0), 1.0)])


def _cfg(distill):
    return parse_config({"data": {"dataset": "canvas-digits"}, "teacher": {"model": "fcos-medium"},
                         "student": {"model": "fcos-simple"}, "distill": distill})


@pytest.mark.parametrize("distill, words", [
    ({"method": "kd"}, "soft-target loss of classifiers"),
    ({"method": "dkd"}, "distils classifier outputs"),
    ({"methods": [{"name": "kd"}, {"name": "crosskd"}]}, "soft-target loss"),
    ({"methods": [{"name": "crosskd", "options": {"cross_at": 5}}]}, "cross_at=5"),
])
def test_classification_settings_on_a_detector_are_config_errors(distill, words):
    teacher, student = create_model("fcos-medium", SHAPE, 10), create_model("fcos-simple", SHAPE, 10)
    with pytest.raises(ConfigError, match=words):
        build_objective(_cfg(distill), student, teacher)


def test_mismatched_grids_are_config_errors():
    teacher = create_model("fcos-medium", SHAPE, 10, levels=3)
    student = create_model("fcos-simple", SHAPE, 10)
    with pytest.raises(ConfigError, match="same FPN strides"):
        Distiller(teacher=teacher, student=student, terms=[(CrossKD(), 1.0)], task=DetectionTask())


def test_a_classification_term_in_a_detection_distiller_is_a_config_error():
    teacher, student = create_model("fcos-medium", SHAPE, 10), create_model("fcos-simple", SHAPE, 10)
    with pytest.raises(ConfigError, match="not a detection loss term.*crosskd"):
        Distiller(teacher=teacher, student=student, terms=[(build_method("pkt", {}, 4.0), 1.0)], task=DetectionTask())


def test_training_on_boxes_alone_is_supervised_with_the_detection_task():
    from kdistill.detection.evaluate import detection_score
    from kdistill.distiller import Supervised
    from kdistill.train.objective import FitContext

    torch.manual_seed(0)
    model = create_model("fcos-simple", SHAPE, 3)
    objective = build_objective(parse_config({"data": {"dataset": "canvas-digits"}}), model)
    assert type(objective) is Supervised and isinstance(objective.task_adapter, DetectionTask)
    x = torch.randn(2, *SHAPE)
    boxes = torch.tensor([[[1.0, 4.0, 4.0, 20.0, 20.0]], [[0.0, 2.0, 6.0, 14.0, 30.0]]])
    losses = objective(x, boxes)
    expected, _ = FCOSLoss()(model, model(x), boxes, (32, 32))
    assert set(losses) == set(expected) >= {"loss", "cls", "box", "ctr"}
    for name, value in expected.items():
        torch.testing.assert_close(losses[name], value)
    assert objective.validation_score(x, boxes) == detection_score(model, x, boxes)  # the AP picks the best epoch
    with pytest.raises(ConfigError, match="built for inputs"):
        objective.prepare(torch.randn(2, 1, 16, 16), FitContext(device=torch.device("cpu")))
    with pytest.raises(ConfigError, match="Detection targets"):
        objective(x, torch.zeros(2))  # class labels are not boxes
