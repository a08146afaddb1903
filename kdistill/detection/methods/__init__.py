"""Detection loss terms, registered when imported: ``fcos`` (the boxes), ``crosskd``, ``pred-mimic``,
``feat-imitation``.

They share :mod:`kdistill.detection.methods.base` (the step context, base
class and KD losses); see docs/DETECTION.md.
"""

from kdistill.detection.methods import crosskd, fcos, feat_imitation, pred_mimic
from kdistill.detection.methods.base import DetectionMethod, DetectionStepContext

__all__ = ["DetectionMethod", "DetectionStepContext", "crosskd", "fcos", "feat_imitation", "pred_mimic"]
