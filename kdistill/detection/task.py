"""Detection as a task of the one :class:`~kdistill.distiller.Distiller`.

:class:`DetectionTask` tells the Distiller what a dense detector outputs
(:class:`~kdistill.detection.models.DetectorOutput`: class logits, box
distances and centerness at every location of every FPN level):

* every batch's FCOS assignment of the ground-truth boxes to the student's
  locations is computed once and shared by the terms in a
  :class:`~kdistill.detection.methods.base.DetectionStepContext` (the ``fcos``
  term trains on it, ``crosskd`` and ``pred-mimic`` normalise by it);
* the teacher cache stores the teacher's three outputs and every level of its
  hooked features as named tensors (on the device or memory-mapped, like a
  classifier's logits);
* hooked modules keep one output per call (the head runs once per level);
* the best epoch is the one with the best validation AP.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from kdistill.detection.evaluate import detection_score
from kdistill.detection.losses import FCOSLoss
from kdistill.detection.methods.base import (
    DetectionMethod,
    DetectionStepContext,
    detection_method_names,
)
from kdistill.detection.models import DetectorOutput, is_detector
from kdistill.errors import ConfigError
from kdistill.task import Task
from kdistill.train.objective import FitContext

if TYPE_CHECKING:
    from kdistill.distiller import Distiller

DETECTION_DATASETS = "canvas-mnist, canvas-fashion-mnist, canvas-digits"
DETECTORS = "fcos-simple, fcos-medium, fcos-deep"
_OUTPUT = "output:"  # cache names of the DetectorOutput parts; hooked features are "PATH@LEVEL"


def check_detector(model: nn.Module, role: str) -> None:
    if not is_detector(model):
        raise ConfigError(f"The data set is a detection set, but the {role} is a {type(model).__name__}, not a "
                          f"detector; use a detector model ({DETECTORS}).")


def check_targets(targets: Tensor) -> None:
    if targets.ndim != 3 or targets.shape[-1] != 5:
        raise ConfigError(f"Detection targets must be (N, max_objects, 5) rows [class, x1, y1, x2, y2], got "
                          f"shape {tuple(targets.shape)}; detectors train on detection data sets "
                          f"({DETECTION_DATASETS}).")


def refuse_augmentation(context: FitContext) -> None:
    if context.augmenting:
        raise ConfigError("Augmentation shifts or flips the pixels of a canvas but not its boxes; set "
                          "data.augment.jitter: 0 and flip: false to train a detector.")


class DetectionTask(Task):
    """Dense detectors (FCOS heads over FPN levels) distilled box by box; ``center_radius`` as in FCOS."""

    name = "detection"
    every_call_hooks = True

    def __init__(self, center_radius: float = 1.5) -> None:
        self.assigner = FCOSLoss(center_radius=center_radius)

    def check_terms(self, terms: list[tuple[nn.Module, float]]) -> None:
        """Every term must distil a detector (the ``fcos`` term included)."""
        for term, _ in terms:
            if not isinstance(term, DetectionMethod):
                raise ConfigError(f"{type(term).__name__} is not a detection loss term; detectors distil with "
                                  f"{', '.join(detection_method_names())}.")

    def prepare_model(self, model: nn.Module, sample: Tensor, context: FitContext) -> None:
        """A detector trained on its boxes alone: no augmentation, inputs of the size it was built for."""
        refuse_augmentation(context)
        if tuple(sample.shape[1:]) != tuple(model.input_shape):
            raise ConfigError(f"The detector was built for inputs {tuple(model.input_shape)} but the "
                              f"data has {tuple(sample.shape[1:])}.")

    def label_losses(self, model: nn.Module, inputs: Tensor, labels: Tensor) -> dict[str, Tensor]:
        """The FCOS loss on the ground-truth boxes (``loss``, and its parts ``cls``, ``box``, ``ctr``)."""
        check_targets(labels)
        losses, _ = self.assigner(model, model(inputs), labels, tuple(inputs.shape[-2:]))
        return losses

    def prepare(self, distiller: Distiller, sample: Tensor, context: FitContext) -> None:
        self.prepare_model(distiller.student, sample, context)
        student, teacher = distiller.student, distiller.teacher
        if tuple(teacher.input_shape) != tuple(student.input_shape):
            raise ConfigError(f"The teacher takes inputs {tuple(teacher.input_shape)} but the student "
                              f"{tuple(student.input_shape)}; build both for the same canvas size.")
        # every term once on two canvases, so a layer or option that does not fit fails now, in words
        no_boxes = torch.full((len(sample), 1, 5), -1.0, device=sample.device)
        was_training = student.training
        student.eval()
        try:
            with torch.no_grad():
                distiller(sample, no_boxes)
        except ValueError as error:
            raise ConfigError(f"Detection distillation: {error}") from None
        finally:
            student.train(was_training)

    def context(self, distiller: Distiller, *, inputs: Tensor, labels: Tensor, indices: Tensor | None,
                student_out: Any, teacher_out: Any, student_features: dict[str, Any],
                teacher_features: dict[str, Any]) -> DetectionStepContext:
        check_targets(labels)
        assignment = self.assigner.assign(distiller.student, student_out, labels, tuple(inputs.shape[-2:]))
        return DetectionStepContext(inputs=inputs, targets=labels, student=distiller.student,
                                    teacher=distiller.teacher, student_out=student_out, teacher_out=teacher_out,
                                    assignment=assignment, points=assignment.points,
                                    student_features=student_features, teacher_features=teacher_features,
                                    epoch=distiller.epoch)

    def flatten(self, outputs: Any, features: dict[str, Any]) -> tuple[Tensor, dict[str, Tensor]]:
        named = {f"{_OUTPUT}box": outputs.box, f"{_OUTPUT}ctr": outputs.ctr}
        for path, levels in features.items():
            named.update({f"{path}@{level}": value for level, value in enumerate(levels)})
        return outputs.cls, named

    def unflatten(self, logits: Tensor, features: dict[str, Tensor]) -> tuple[DetectorOutput, dict[str, Any]]:
        out = DetectorOutput(logits, features[f"{_OUTPUT}box"], features[f"{_OUTPUT}ctr"])
        levels: dict[str, dict[int, Tensor]] = {}
        for name, value in features.items():
            if not name.startswith(_OUTPUT):
                path, level = name.rsplit("@", 1)
                levels.setdefault(path, {})[int(level)] = value
        return out, {path: [by_level[i] for i in sorted(by_level)] for path, by_level in levels.items()}

    def validation_score(self, student: nn.Module, x: Tensor, y: Tensor) -> float:
        """AP (IoU 0.50:0.95) on the validation canvases."""
        return detection_score(student, x, y)
