"""Detection distillation terms, registered when imported: ``crosskd``, ``pred-mimic``, ``feat-imitation``.

They share :mod:`kdistill.detection.methods.base` (the step context, base
class, per-level hooks and KD losses); see docs/DETECTION.md.
"""

from kdistill.detection.methods import crosskd, feat_imitation, pred_mimic
from kdistill.detection.methods.base import DetectionMethod, DetectionStepContext, LevelFeatureHooks

__all__ = ["DetectionMethod", "DetectionStepContext", "LevelFeatureHooks", "crosskd", "feat_imitation",
           "pred_mimic"]
