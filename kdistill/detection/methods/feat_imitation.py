"""Feature imitation for dense detectors: FitNets-style hints on the FPN maps.

Romero et al. 2015's hint loss applied where detection KD usually applies it
(the FPN outputs, e.g. Wang et al. 2019's FGFI without its mask, or
Chen et al. 2017's hint layers): a trainable 1x1 conv ``r_l`` per level maps
the student's FPN map onto the teacher's, and::

    L_feat = 1/|levels| sum_l mean (r_l(F_s^l) - F_t^l)^2

(mean over batch, channels and positions of each level). ``student_layers``
/ ``teacher_layers`` choose other modules (default: every ``fpn.outputs.i``).
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from kdistill.detection.methods.base import DetectionMethod, DetectionStepContext
from kdistill.detection.models import DenseDetector
from kdistill.methods.hooks import resolve_module
from kdistill.registry import register_method


def _out_channels(module: nn.Module) -> int | None:
    return getattr(module, "out_channels", None) or getattr(module, "num_channels", None)


@register_method("feat-imitation")
class FeatureImitation(DetectionMethod):
    name = "feat-imitation"
    needs_same_grid = False  # maps are compared level by level and checked for shape when they arrive

    def __init__(self, student_layers: Sequence[str] | None = None, teacher_layers: Sequence[str] | None = None) -> None:
        super().__init__()
        self._student_paths = tuple(student_layers) if student_layers else None
        self._teacher_paths = tuple(teacher_layers) if teacher_layers else None
        self.adapters = nn.ModuleList()

    def resolve(self, student: DenseDetector, teacher: DenseDetector) -> None:
        s_paths = self._student_paths or tuple(f"fpn.outputs.{i}" for i in range(len(student.strides)))
        t_paths = self._teacher_paths or tuple(f"fpn.outputs.{i}" for i in range(len(teacher.strides)))
        if len(s_paths) != len(t_paths):
            raise ValueError(f"student_layers ({len(s_paths)}) and teacher_layers ({len(t_paths)}) must pair up")
        self.student_layers, self.teacher_layers = s_paths, t_paths
        if len(self.adapters):
            return
        for s_path, t_path in zip(s_paths, t_paths):
            c_s = _out_channels(resolve_module(student, s_path, "student"))
            c_t = _out_channels(resolve_module(teacher, t_path, "teacher"))
            if c_s is None or c_t is None:
                raise ValueError(f"cannot tell the channels of '{s_path}' / '{t_path}'; hook conv or norm layers")
            self.adapters.append(nn.Conv2d(c_s, c_t, 1))

    def forward(self, ctx: DetectionStepContext) -> dict[str, Tensor]:
        total = 0.0
        for adapter, s_path, t_path in zip(self.adapters, self.student_layers, self.teacher_layers):
            s, t = ctx.student_features[s_path][-1], ctx.teacher_features[t_path][-1].detach()
            mapped = adapter(s)
            if mapped.shape != t.shape:
                raise ValueError(f"feat-imitation: student '{s_path}' maps to {tuple(mapped.shape)} but teacher "
                                 f"'{t_path}' is {tuple(t.shape)}; pair layers of the same spatial size")
            total = total + (mapped.float() - t.float()).pow(2).mean()
        return {"feat_imitation": total / len(self.adapters)}
