"""Object detection: canvas data sets, a one-stage dense detector family, its losses, mAP evaluation.

Detection plugs into the same training loop as classification, and its
distillation into the same :class:`~kdistill.distiller.Distiller`, through a
task adapter (:class:`~kdistill.detection.task.DetectionTask`)::

    from kdistill.config import load_config
    from kdistill.experiment import run_distill
    result = run_distill(load_config("examples/detection-mnist.yaml"))
    print(result.metrics["AP"])

or, one level down, :func:`build_objective` (supervised or distilled) and
:func:`evaluate_detector` (COCO-style AP through pycocotools). See
docs/DETECTION.md.

Each module registers what it defines when imported: the data sets
(``canvas-mnist``, ... in :mod:`kdistill.detection.data`), the models
(``fcos-*``, :mod:`kdistill.detection.models`) and the distillation terms
(``fcos``, ``crosskd``, ..., :mod:`kdistill.detection.methods`). The core packages
never import them; the registries do on their first lookup
(:mod:`kdistill.registry`). The names below load on first use, so that a
registry lookup of a detector does not import the objective, the distiller
and the training loop.
"""

from __future__ import annotations

import importlib

_LAZY = {
    "build_objective": "kdistill.detection.objective",
    "check_config": "kdistill.detection.objective",
    "is_detector": "kdistill.detection.models",
    "DetectionTask": "kdistill.detection.task",
    "DenseDetector": "kdistill.detection.models",
    "DetectorOutput": "kdistill.detection.models",
    "evaluate_detector": "kdistill.detection.evaluate",
    "postprocess": "kdistill.detection.postprocess",
    "FCOSLoss": "kdistill.detection.losses",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'kdistill.detection' has no attribute {name!r}")
