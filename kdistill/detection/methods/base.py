"""What detection distillation methods share: their step context, base class, hooks and KD losses.

A detection method (``crosskd``, ``pred-mimic``, ``feat-imitation``) is a
:class:`~kdistill.methods.base.DistillationMethod` whose ``forward`` gets a
:class:`DetectionStepContext` from the :class:`~kdistill.distiller.Distiller`
instead of class logits (built by :class:`~kdistill.detection.task.DetectionTask`).
Like every method it names the module paths it needs; because the detection
head is shared across FPN levels and runs once per level, its hooks keep one
output per call (``FeatureHooks(..., every_call=True)``), so
``ctx.student_features[path]`` is a list, finest level first.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kdistill.detection.boxes import distance_to_box, elementwise_giou
from kdistill.detection.losses import Assignment
from kdistill.detection.models import DenseDetector, DetectorOutput, is_detector
from kdistill.errors import ConfigError
from kdistill.methods.base import DistillationMethod
from kdistill.registry import METHODS


@dataclass
class DetectionStepContext:
    """Everything a detection distillation loss may need about one batch."""

    inputs: Tensor
    targets: Tensor
    student: DenseDetector
    teacher: DenseDetector
    student_out: DetectorOutput
    teacher_out: DetectorOutput
    assignment: Assignment  # the student's FCOS assignment of this batch
    points: Tensor  # (L, 2) location centres
    student_features: dict[str, list[Tensor]] = field(default_factory=dict)
    teacher_features: dict[str, list[Tensor]] = field(default_factory=dict)
    epoch: int = 0

    @property
    def normalizer(self) -> Tensor:
        """The box loss's normaliser, the sum of the positives' centerness targets (at least 1)."""
        return self.assignment.centerness.sum().clamp(min=1.0)


class DetectionMethod(DistillationMethod):
    """Base of the methods that distil one dense detector into another.

    Subclasses set ``name`` and implement :meth:`resolve` (layer paths,
    adapters) and ``forward(ctx: DetectionStepContext)``.
    """

    name = "detection method"
    #: the same grid of locations in both models (set False for methods that never compare locations)
    needs_same_grid = True

    def bind(self, student: nn.Module, teacher: nn.Module) -> None:
        for role, model in (("student", student), ("teacher", teacher)):
            if not is_detector(model):
                raise ConfigError(
                    f"Method '{self.name}' distils object detectors, but the {role} is a "
                    f"{type(model).__name__}, not a detector. Use it with detectors (fcos-simple, fcos-medium, "
                    "fcos-deep) on a detection data set (canvas-mnist, canvas-fashion-mnist, canvas-digits), or "
                    "pick a classification method (kd, dkd, fitnets, ...)."
                )
        if self.needs_same_grid and student.strides != teacher.strides:
            raise ConfigError(
                f"Method '{self.name}' compares teacher and student location by location, so both detectors "
                f"need the same FPN strides; the student has {student.strides}, the teacher {teacher.strides}. "
                "Give both the same number of backbone stages and levels."
            )
        self.resolve(student, teacher)

    def resolve(self, student: DenseDetector, teacher: DenseDetector) -> None:
        """Set ``student_layers`` / ``teacher_layers`` and build adapters (both models are detectors)."""


def kd_quality_focal(student_logits: Tensor, teacher_logits: Tensor, beta: float = 1.0) -> Tensor:
    """Sum over elements of ``BCE(s, sigmoid(t)) * |sigmoid(s) - sigmoid(t)|^beta`` (QFL with soft targets).

    Quality focal loss (Li et al. 2020, GFL) with the teacher's sigmoid
    scores as targets, as CrossKD uses for dense classification: pairs the
    student already matches contribute little, so the background majority
    does not swamp the signal.
    """
    target = torch.sigmoid(teacher_logits.float())
    s = student_logits.float()
    bce = F.binary_cross_entropy_with_logits(s, target, reduction="none")
    return (bce * (torch.sigmoid(s) - target).abs().pow(beta)).sum()


def binary_kl(student_logits: Tensor, teacher_logits: Tensor) -> Tensor:
    """Sum over elements of KL(Bernoulli(sigmoid(t)) || Bernoulli(sigmoid(s))), per-class sigmoid scores."""
    t, s = teacher_logits.float(), student_logits.float()
    p = torch.sigmoid(t)
    # BCE(s, p) - BCE(t, p) = KL(p || q): the teacher's own entropy cancels
    return (F.binary_cross_entropy_with_logits(s, p, reduction="none")
            - F.binary_cross_entropy_with_logits(t, p, reduction="none")).sum()


def box_distillation(student_ltrb: Tensor, teacher_ltrb: Tensor, points: Tensor, weight: Tensor) -> Tensor:
    """Sum over locations of ``weight * (1 - GIoU(student box, teacher box))`` (boxes decoded at ``points``)."""
    pts = points.expand_as(student_ltrb[..., :2])
    s = distance_to_box(pts, student_ltrb.float())
    t = distance_to_box(pts, teacher_ltrb.float())
    return (weight * (1.0 - elementwise_giou(s, t)[1])).sum()


def prediction_losses(pred: DetectorOutput, teacher: DetectorOutput, ctx: DetectionStepContext, *,
                      cls_loss: str, beta: float) -> tuple[Tensor, Tensor]:
    """The classification and box terms shared by ``pred-mimic`` and ``crosskd``, normalised per batch.

    ``cls``: ``kd_quality_focal`` (``cls_loss='qfl'``) or ``binary_kl``
    (``'kl'``) over every location and class; ``box``: ``box_distillation``
    at every location weighted by the teacher's top class score
    ``max_c sigmoid(t_c)`` (so confident teacher locations teach the box).
    Both are divided by :attr:`DetectionStepContext.normalizer`.
    """
    t_cls = teacher.cls.detach()
    if cls_loss == "qfl":
        cls = kd_quality_focal(pred.cls, t_cls, beta)
    else:
        cls = binary_kl(pred.cls, t_cls)
    weight = torch.sigmoid(t_cls.float()).max(-1).values
    box = box_distillation(pred.box, teacher.box.detach(), ctx.points, weight)
    return cls / ctx.normalizer, box / ctx.normalizer


def check_cls_loss(cls_loss: str) -> str:
    if cls_loss not in ("qfl", "kl"):
        raise ValueError(f"cls_loss must be 'qfl' (quality focal, the CrossKD choice) or 'kl' (binary KL), "
                         f"got {cls_loss!r}")
    return cls_loss


def detection_method_names() -> list[str]:
    """The registered loss terms that distil detectors."""
    return [n for n in METHODS.names() if isinstance(METHODS.get(n), type) and issubclass(METHODS.get(n), DetectionMethod)]
