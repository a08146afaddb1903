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

Submodules load on first use: :mod:`kdistill.detection.data` is imported by
the data-set registry while :mod:`kdistill.data` itself is still loading.
"""

from __future__ import annotations

_LAZY = {
    "build_objective": "kdistill.detection.objective",
    "check_config": "kdistill.detection.objective",
    "is_detector": "kdistill.detection.models",
    "DetectionObjective": "kdistill.detection.objective",
    "DetectionDistiller": "kdistill.detection.objective",
    "DenseDetector": "kdistill.detection.models",
    "DetectorOutput": "kdistill.detection.models",
    "evaluate_detector": "kdistill.detection.evaluate",
    "detection_map": "kdistill.detection.evaluate",
    "postprocess": "kdistill.detection.postprocess",
    "FCOSLoss": "kdistill.detection.losses",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'kdistill.detection' has no attribute {name!r}")
