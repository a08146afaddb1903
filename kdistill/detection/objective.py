"""Training objectives for detectors: what :func:`kdistill.train.fit` trains on a detection data set.

* :class:`DetectionObjective` trains a detector on its boxes alone (the FCOS
  loss of :mod:`kdistill.detection.losses`).
* :class:`DetectionDistiller` adds the loss terms of detection distillation
  methods (``crosskd``, ``pred-mimic``, ``feat-imitation``) from a frozen
  teacher detector::

      loss = L_det(student, boxes) + sum_k weight_k * method_k(ctx)

  (``distill.alpha`` and ``temperature`` belong to the classifier soft-target
  term and play no part here.)

``validation_score`` is the AP (IoU 0.50:0.95, all sizes, pycocotools) on the
held-out part of the training set: the headline metric itself, cheap on a
few hundred canvases, so ``best.safetensors`` is the epoch with the best
validation AP.

Without augmentation the frozen teacher's outputs and hooked features are
computed once for the whole training set in ``prepare`` and looked up by
sample index (``distill.cache: off`` runs it live on every batch instead).
Box targets do not follow shifted pixels, so ``data.augment.jitter`` must be
0 for detection.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from kdistill.detection.evaluate import detection_score
from kdistill.detection.losses import FCOSLoss
from kdistill.detection.methods.base import DetectionMethod, DetectionStepContext, LevelFeatureHooks
from kdistill.detection.models import DetectorOutput, is_detector
from kdistill.distiller import build_method
from kdistill.errors import ConfigError
from kdistill.registry import METHODS
from kdistill.train.objective import FitContext, TrainingObjective

log = logging.getLogger("kdistill")

DETECTION_DATASETS = "canvas-mnist, canvas-fashion-mnist, canvas-digits"
DETECTORS = "fcos-simple, fcos-medium, fcos-deep"


def check_detector(model: nn.Module, role: str) -> None:
    if not is_detector(model):
        raise ConfigError(f"The data set is a detection set, but the {role} is a {type(model).__name__}, not a "
                          f"detector; use a detector model ({DETECTORS}).")


def _check_targets(targets: Tensor) -> None:
    if targets.ndim != 3 or targets.shape[-1] != 5:
        raise ConfigError(f"Detection targets must be (N, max_objects, 5) rows [class, x1, y1, x2, y2], got "
                          f"shape {tuple(targets.shape)}; detectors train on detection data sets "
                          f"({DETECTION_DATASETS}).")


class DetectionObjective(TrainingObjective):
    """A detector trained on its ground-truth boxes."""

    def __init__(self, model: nn.Module, loss: FCOSLoss | None = None) -> None:
        super().__init__()
        check_detector(model, "model")
        self.student = model
        self.loss = loss or FCOSLoss()

    def prepare(self, x_train: Tensor, context: FitContext) -> None:
        if context.augmenting:
            raise ConfigError("Augmentation shifts or flips the pixels of a canvas but not its boxes; set "
                              "data.augment.jitter: 0 and flip: false to train a detector.")
        if tuple(x_train.shape[1:]) != tuple(self.student.input_shape):
            raise ConfigError(f"The detector was built for inputs {tuple(self.student.input_shape)} but the "
                              f"data has {tuple(x_train.shape[1:])}.")

    def detection_losses(self, out: DetectorOutput, targets: Tensor, image_hw: tuple[int, int]):
        _check_targets(targets)
        return self.loss(self.student, out, targets, image_hw)

    def forward(self, inputs: Tensor, labels: Tensor, indices: Tensor | None = None) -> dict[str, Tensor]:
        losses, _ = self.detection_losses(self.student(inputs), labels, tuple(inputs.shape[-2:]))
        return losses

    def validation_score(self, x: Tensor, y: Tensor) -> float:
        """AP (IoU 0.50:0.95) on the validation canvases."""
        return detection_score(self.student, x, y)


class DetectionDistiller(DetectionObjective):
    """A student detector trained on its boxes plus detection distillation methods from a frozen teacher."""

    def __init__(self, teacher: nn.Module, student: nn.Module,
                 methods: Sequence[tuple[DetectionMethod, float]], loss: FCOSLoss | None = None) -> None:
        super().__init__(student, loss)
        check_detector(teacher, "teacher")
        for method, _ in methods:
            if not isinstance(method, DetectionMethod):
                raise ConfigError(f"{type(method).__name__} is not a detection method; detectors distil with "
                                  f"{', '.join(detection_method_names())}.")
        self.teacher = teacher
        self.methods = nn.ModuleList([m for m, _ in methods])
        self.weights = [float(w) for _, w in methods]
        self.teacher.eval()
        for p in self.teacher.parameters():
            p.requires_grad_(False)
        for method in self.methods:
            method.bind(self.student, self.teacher)
        s_paths = [p for m in self.methods for p in m.student_layers]
        t_paths = [p for m in self.methods for p in m.teacher_layers]
        self._student_hooks = LevelFeatureHooks(self.student, s_paths, "student") if s_paths else None
        self._teacher_hooks = LevelFeatureHooks(self.teacher, t_paths, "teacher") if t_paths else None
        self._cache: dict[str, Any] | None = None
        self.epoch = 0

    def train(self, mode: bool = True) -> DetectionDistiller:
        super().train(mode)
        self.teacher.eval()
        return self

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def trainable_modules(self) -> dict[str, nn.Module]:
        modules: dict[str, nn.Module] = {"model": self.student}
        if any(True for _ in self.methods.parameters()):
            modules["methods"] = self.methods
        return modules

    def prepare(self, x_train: Tensor, context: FitContext) -> None:
        super().prepare(x_train, context)
        if tuple(self.teacher.input_shape) != tuple(self.student.input_shape):
            raise ConfigError(f"The teacher takes inputs {tuple(self.teacher.input_shape)} but the student "
                              f"{tuple(self.student.input_shape)}; build both for the same canvas size.")
        self._probe(x_train[:2])
        self._cache = None
        if context.cache != "off":
            self._cache = self._teacher_pass(x_train)
            log.info("teacher outputs cached for %d training canvases", len(x_train))

    @torch.no_grad()
    def _probe(self, sample: Tensor) -> None:
        """Run every method once on two canvases, so a layer or option that does not fit fails now, in words."""
        no_boxes = torch.full((len(sample), 1, 5), -1.0, device=sample.device)
        was_training = self.student.training
        self.student.eval()
        try:
            self.forward(sample, no_boxes)
        except ValueError as error:
            raise ConfigError(f"Detection distillation: {error}") from None
        finally:
            self.student.train(was_training)

    @torch.no_grad()
    def _teacher_pass(self, x: Tensor, batch_size: int = 256) -> dict[str, Any]:
        outs, feats = [], []
        for i in range(0, len(x), batch_size):
            outs.append(self.teacher(x[i:i + batch_size]))
            feats.append(self._teacher_hooks.pop() if self._teacher_hooks else {})
        out = DetectorOutput(*(torch.cat([o[j] for o in outs]) for j in range(3)))
        features = {path: [torch.cat([f[path][level] for f in feats]) for level in range(len(feats[0][path]))]
                    for path in feats[0]}
        return {"out": out, "features": features}

    def teacher_outputs(self, inputs: Tensor, indices: Tensor | None) -> tuple[DetectorOutput, dict[str, list[Tensor]]]:
        if self._cache is not None and indices is not None:
            out = DetectorOutput(*(t.index_select(0, indices) for t in self._cache["out"]))
            feats = {p: [t.index_select(0, indices) for t in levels] for p, levels in self._cache["features"].items()}
            return out, feats
        with torch.no_grad():
            out = self.teacher(inputs)
        return out, (self._teacher_hooks.pop() if self._teacher_hooks else {})

    def forward(self, inputs: Tensor, labels: Tensor, indices: Tensor | None = None) -> dict[str, Tensor]:
        t_out, t_feats = self.teacher_outputs(inputs, indices)
        s_out = self.student(inputs)
        s_feats = self._student_hooks.pop() if self._student_hooks else {}
        image_hw = tuple(inputs.shape[-2:])
        losses, assignment = self.detection_losses(s_out, labels, image_hw)
        total = losses["loss"]
        ctx = DetectionStepContext(inputs=inputs, targets=labels, student=self.student, teacher=self.teacher,
                                   student_out=s_out, teacher_out=t_out, assignment=assignment,
                                   points=assignment.points, student_features=s_feats, teacher_features=t_feats,
                                   epoch=self.epoch)
        losses = {("detection" if k == "loss" else k): v for k, v in losses.items()}
        for method, weight in zip(self.methods, self.weights):
            for name, value in method(ctx).items():
                losses[name] = value
                total = total + weight * value
        losses["loss"] = total
        return losses


def detection_method_names() -> list[str]:
    return [n for n in METHODS.names() if isinstance(METHODS.get(n), type) and issubclass(METHODS.get(n), DetectionMethod)]


def check_config(cfg: Any) -> None:
    """Fail early, in words, on distillation settings a detector cannot use (before any training)."""
    d = cfg.distill
    names = detection_method_names()
    listed = [m.name for m in d.terms] if d.terms else [m.name for m in d.methods] if d.methods else [d.method]
    if "kd" in listed:
        raise ConfigError(
            "Method 'kd' is the soft-target loss of classifiers and cannot distil a detector. Set distill.method "
            f"(or distill.methods) to a detection method: {', '.join(names)}.")
    for name in listed:
        cls = METHODS.get(name)
        if not (isinstance(cls, type) and issubclass(cls, DetectionMethod)):
            raise ConfigError(f"Method '{name}' distils classifier outputs and cannot distil a detector; "
                              f"detection methods: {', '.join(names)}.")
    for section, augment in (("data.augment", cfg.data.augment), ("teacher_augment", cfg.teacher_augment)):
        if augment is not None and augment.active:
            raise ConfigError(f"{section} shifts or flips the pixels of a canvas but not its boxes; set "
                              f"{section}.jitter: 0 and {section}.flip: false to train a detector.")


def build_objective(cfg: Any, model: nn.Module, teacher: nn.Module | None = None) -> DetectionObjective:
    """The objective :func:`~kdistill.train.fit` trains for a detection run.

    Without ``teacher``: :class:`DetectionObjective` (boxes alone). With it:
    :class:`DetectionDistiller` with the config's ``distill`` methods (each a
    detection method, with its weight and options).
    """
    check_detector(model, "student" if teacher is not None else "model")
    if teacher is None:
        return DetectionObjective(model)
    check_detector(teacher, "teacher")
    check_config(cfg)
    d = cfg.distill
    methods = [(build_method(m.name, m.options, d.temperature), m.weight) for m in d.terms or d.method_list()]
    try:
        return DetectionDistiller(teacher, model, methods)
    except ValueError as error:  # an option that does not fit these two models (e.g. cross_at too deep)
        raise ConfigError(f"Detection distillation: {error}") from None
