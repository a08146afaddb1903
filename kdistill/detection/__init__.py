"""Object detection: canvas data sets, a one-stage dense detector family, its losses, mAP evaluation.

Detection plugs into the same training loop as classification through a
:class:`~kdistill.train.objective.TrainingObjective`::

    from kdistill.config import load_config
    from kdistill.experiment import run_distill
    result = run_distill(load_config("examples/detection-mnist.yaml"))
    print(result.metrics["AP"])

or, one level down, :func:`build_objective` (supervised or distilled) and
:func:`evaluate_detector` (COCO-style AP through pycocotools). See
docs/DETECTION.md.

Importing this package registers detection's data sets (``canvas-mnist``,
...), models (``fcos-*``) and distillation terms (``crosskd``, ...) with the
registries; the core packages never import it, the registries do on their
first lookup (:data:`kdistill.registry.BUILTIN_PACKAGES`).
"""

from __future__ import annotations

from kdistill.detection import data, methods, models  # registers the data sets, terms and models
from kdistill.detection.evaluate import evaluate_detector
from kdistill.detection.losses import FCOSLoss
from kdistill.detection.models import DenseDetector, DetectorOutput, is_detector
from kdistill.detection.objective import (
    DetectionDistiller,
    DetectionObjective,
    build_objective,
    check_config,
)
from kdistill.detection.postprocess import postprocess

__all__ = [
    "DenseDetector",
    "DetectionDistiller",
    "DetectionObjective",
    "DetectorOutput",
    "FCOSLoss",
    "build_objective",
    "check_config",
    "data",
    "evaluate_detector",
    "is_detector",
    "methods",
    "models",
    "postprocess",
]
