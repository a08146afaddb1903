"""Training objectives for detectors: what :func:`kdistill.train.fit` trains on a detection data set.

* Training on boxes alone is :class:`~kdistill.distiller.Supervised` with
  :class:`~kdistill.detection.task.DetectionTask`: the FCOS loss of
  :mod:`kdistill.detection.losses`, the validation AP.
* Distillation is the one :class:`~kdistill.distiller.Distiller` with
  :class:`~kdistill.detection.task.DetectionTask`: its loss is the weighted
  sum of the ``fcos`` term (the boxes, weight 1 unless ``distill.terms`` says
  otherwise) and the detection distillation terms (``crosskd``,
  ``pred-mimic``, ``feat-imitation``) from a frozen teacher detector::

      loss = fcos(student, boxes) + sum_k weight_k * method_k(ctx)

  (``distill.alpha`` and ``temperature`` belong to the classifier soft-target
  term and play no part here.)

``validation_score`` is the AP (IoU 0.50:0.95, all sizes, pycocotools) on the
held-out part of the training set: the headline metric itself, cheap on a
few hundred canvases, so ``best.safetensors`` is the epoch with the best
validation AP.

Without augmentation the frozen teacher's outputs and hooked features are
computed once for the whole training set and looked up by sample index, in
the Distiller's teacher cache (``distill.cache``: device or memmap; ``off``
runs the teacher live on every batch instead). Box targets do not follow
shifted pixels, so ``data.augment.jitter`` must be 0 for detection.
"""

from __future__ import annotations

import logging
from typing import Any

from torch import nn

from kdistill.detection.methods.base import DetectionMethod, detection_method_names
from kdistill.detection.task import (
    DetectionTask,
    check_detector,
)
from kdistill.distiller import Distiller, LossTerm, Supervised, build_term, term_options
from kdistill.errors import ConfigError
from kdistill.registry import METHODS
from kdistill.train.objective import TrainingObjective

log = logging.getLogger("kdistill")

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


def detection_terms(cfg: Any) -> list[LossTerm]:
    """The loss a detection run's ``distill`` section asks for: ``fcos`` at weight 1 (unless ``distill.terms``
    lists it), then the listed detection terms with their weights and options."""
    d = cfg.distill
    listed = [(m.name, m.weight, m.options) for m in (d.terms or d.method_list())]
    if "fcos" not in [name for name, _, _ in listed]:
        listed.insert(0, ("fcos", 1.0, {}))
    return [LossTerm(name, float(weight), term_options(name, options, d.temperature)) for name, weight, options in listed]


def build_objective(cfg: Any, model: nn.Module, teacher: nn.Module | None = None) -> TrainingObjective:
    """The objective :func:`~kdistill.train.fit` trains for a detection run.

    Without ``teacher``: :class:`~kdistill.distiller.Supervised` with
    :class:`~kdistill.detection.task.DetectionTask` (boxes alone). With it:
    the :class:`~kdistill.distiller.Distiller` with :class:`~kdistill.detection.task.DetectionTask` and the
    terms of :func:`detection_terms` (``loss_terms`` records them).
    """
    check_detector(model, "student" if teacher is not None else "model")
    if teacher is None:
        return Supervised(model, task=DetectionTask())
    check_detector(teacher, "teacher")
    check_config(cfg)
    terms = detection_terms(cfg)
    try:
        distiller = Distiller(teacher=teacher, student=model, terms=[(build_term(t), t.weight) for t in terms],
                              task=DetectionTask(), teacher_precision=cfg.distill.teacher_precision)
    except ValueError as error:  # an option that does not fit these two models (e.g. cross_at too deep)
        raise ConfigError(f"Detection distillation: {error}") from None
    distiller.loss_terms = terms
    return distiller
