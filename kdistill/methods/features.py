"""Shared plumbing for feature-based methods: default layers, shape probes, adapters.

Feature methods name module paths (``student_layer: blocks.2``); when a path
is left out, :func:`default_feature_layer` picks the last feature module
before the classifier, which is what most papers distil (the penultimate
representation). Shape mismatches between the two networks are bridged by a
small trainable adapter that lives inside the method, so it is saved under
``methods.`` in checkpoints and never becomes part of the exported student.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from kdistill.errors import ConfigError, TrainingError
from kdistill.methods.base import DistillationMethod, StepContext
from kdistill.methods.hooks import resolve_module

# modules holding the last feature map in the zoo (ResNet, ConvNet / MLP), in order of preference
_PREFERRED = ("layer3", "layer4", "features", "encoder", "backbone")


def default_feature_layer(model: nn.Module) -> str:
    """The module whose output is the model's last feature map (before pooling / classifier).

    Zoo models: ``layer3`` (ResNet), ``features`` (ConvNet, MLP). Any other
    model: the last top-level child that is not the final linear classifier.
    """
    children = dict(model.named_children())
    for name in _PREFERRED:
        if name in children:
            return name
    names = list(children)
    if not names:
        raise ValueError(f"{type(model).__name__} has no sub-modules to take features from")
    # drop the head (and a global pool right before it) to land on the feature extractor
    tail = [n for n in names if not isinstance(children[n], (nn.Linear, nn.AdaptiveAvgPool2d, nn.Flatten))]
    return (tail or names)[-1] if len(names) > 1 else names[0]


@torch.no_grad()
def probe_features(model: nn.Module, paths: list[str], sample: Tensor, role: str = "model") -> dict[str, Tensor]:
    """Run ``model`` once on ``sample`` (eval mode) and return the outputs of ``paths``."""
    found: dict[str, Tensor] = {}
    handles = []
    for path in paths:
        def hook(_m, _i, out, path=path):
            found[path] = out[0] if isinstance(out, tuple) else out
        handles.append(resolve_module(model, path, role).register_forward_hook(hook))
    was_training = model.training
    model.eval()
    try:
        model(sample)
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
    return found


def embedding(feature: Tensor) -> Tensor:
    """One vector per sample: global-average-pool conv maps, flatten anything else."""
    if feature.dim() == 4:
        return feature.mean(dim=(2, 3))
    return feature.flatten(1)


def require_conv_maps(method: str, student: Tensor, teacher: Tensor) -> None:
    """Raise a clear error unless both hooked features are (batch, channels, height, width) maps."""
    if student.dim() != 4 or teacher.dim() != 4:
        raise ConfigError(f"{method} needs conv feature maps (batch, channels, height, width); "
                          f"got shapes {tuple(student.shape)} and {tuple(teacher.shape)}. Choose conv "
                          "layers of both models with the method's student_layer / teacher_layer options, "
                          "or a method that compares any features (e.g. fitnets, pkt, rkd, sp, crd).")


def make_adapter(student_shape: torch.Size, teacher_shape: torch.Size) -> nn.Module:
    """A regressor from the student's feature shape to the teacher's (FitNets' ``r``).

    Conv maps get a 1x1 conv (+BatchNorm) and, if the spatial sizes differ, an
    adaptive average pool to the teacher's size; anything else is flattened
    and mapped by a linear layer.
    """
    if len(student_shape) == 4 and len(teacher_shape) == 4:
        layers: list[nn.Module] = [nn.Conv2d(student_shape[1], teacher_shape[1], 1, bias=False),
                                   nn.BatchNorm2d(teacher_shape[1])]
        if student_shape[2:] != teacher_shape[2:]:
            layers.append(nn.AdaptiveAvgPool2d(tuple(teacher_shape[2:])))
        return nn.Sequential(*layers)
    s_dim = int(torch.Size(student_shape[1:]).numel())
    t_dim = int(torch.Size(teacher_shape[1:]).numel())
    return nn.Sequential(nn.Flatten(), nn.Linear(s_dim, t_dim), _Reshape(tuple(teacher_shape[1:])))


class _Reshape(nn.Module):
    def __init__(self, shape: tuple[int, ...]) -> None:
        super().__init__()
        self.shape = shape

    def forward(self, x: Tensor) -> Tensor:
        return x.reshape(len(x), *self.shape)


class FeaturePairMethod(DistillationMethod):
    """Base for methods that compare one student layer with one teacher layer.

    ``student_layer`` / ``teacher_layer`` default to :func:`default_feature_layer`
    of each model, resolved in :meth:`bind` (before the Distiller attaches hooks).
    """

    def __init__(self, student_layer: str | None = None, teacher_layer: str | None = None) -> None:
        super().__init__()
        self.student_layer = student_layer
        self.teacher_layer = teacher_layer
        self._set_paths()

    def _set_paths(self) -> None:
        self.student_layers = (self.student_layer,) if self.student_layer else ()
        self.teacher_layers = (self.teacher_layer,) if self.teacher_layer else ()

    def bind(self, student: nn.Module, teacher: nn.Module) -> None:
        self.student_layer = self.student_layer or default_feature_layer(student)
        self.teacher_layer = self.teacher_layer or default_feature_layer(teacher)
        resolve_module(student, self.student_layer, "student")
        resolve_module(teacher, self.teacher_layer, "teacher")
        self._set_paths()

    def probe(self, student: nn.Module, teacher: nn.Module, sample: Tensor) -> tuple[Tensor, Tensor]:
        """The two hooked features for ``sample``, to size adapters in ``setup``."""
        s = probe_features(student, [self.student_layer], sample, "student")[self.student_layer]
        t = probe_features(teacher, [self.teacher_layer], sample, "teacher")[self.teacher_layer]
        return s, t

    def features(self, ctx: StepContext) -> tuple[Tensor, Tensor]:
        try:
            return ctx.student_features[self.student_layer], ctx.teacher_features[self.teacher_layer]
        except KeyError:
            raise TrainingError(
                f"{type(self).__name__}: no features were captured for student layer "
                f"'{self.student_layer}' / teacher layer '{self.teacher_layer}'; the method must be "
                "run inside a Distiller, which attaches the forward hooks."
            ) from None
