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

# parameter-free modules that sit between the last feature map and the classifier
_PASS_THROUGH: tuple[type[nn.Module], ...] = (
    nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d,
    nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d,
    nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d, nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d,
    nn.Flatten, nn.Identity, nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout,
)
# activations may sit inside a multi-layer classifier (VGG's, MobileNetV3's)
_ACTIVATIONS: tuple[type[nn.Module], ...] = (
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.PReLU, nn.ELU, nn.SELU, nn.GELU, nn.SiLU, nn.Mish,
    nn.Hardswish, nn.Hardsigmoid, nn.Sigmoid, nn.Tanh,
)
# modules that may follow the last linear layer and still belong to the output: a normalised
# logit layer, or probabilities instead of logits. Their output is the model's output.
_OUTPUT_TAIL: tuple[type[nn.Module], ...] = (nn.BatchNorm1d, nn.Softmax, nn.LogSoftmax, nn.Softmax2d)
_CONVS: tuple[type[nn.Module], ...] = (nn.Conv1d, nn.Conv2d, nn.Conv3d)


def _is_output_layer(module: nn.Module) -> bool:
    """A layer that maps features to the outputs: a ``Linear``, or a 1x1 convolution (the
    all-convolutional classifiers of SqueezeNet and Network-in-Network, pooled afterwards)."""
    if isinstance(module, nn.Linear):
        return True
    return isinstance(module, _CONVS) and all(k == 1 for k in module.kernel_size)


def _is_classifier(module: nn.Module) -> bool:
    """The part of a net that produces the outputs: an output layer (``Linear`` or 1x1 conv), or a
    module (``Sequential`` or a custom head class) made only of output layers, activations, pooling,
    flatten, dropout, ``BatchNorm1d`` and softmax whose last computing child is such a classifier."""
    if _is_output_layer(module):
        return True
    children = list(module.children())
    allowed = _PASS_THROUGH + _ACTIVATIONS + _OUTPUT_TAIL
    if not children or not all(isinstance(m, allowed) or _is_classifier(m) for m in children):
        return False
    return _ends_in_classifier(module)


def _ends_in_classifier(module: nn.Module) -> bool:
    """A module whose last registered computing child is a classifier (its output is the outputs);
    activations, pooling, ``BatchNorm1d`` and softmax after it are part of the output."""
    trailing = _PASS_THROUGH + _ACTIVATIONS + _OUTPUT_TAIL
    children = list(module.children())
    while children and isinstance(children[-1], trailing):
        children.pop()
    return bool(children) and _is_classifier(children[-1])


def _walk(module: nn.Module, prefix: str) -> str | None:
    """The last child of ``module`` that outputs features, looking past one classifier."""
    seen_classifier = False
    for name, child in reversed(list(module.named_children())):
        if isinstance(child, _PASS_THROUGH):
            continue
        if not seen_classifier and isinstance(child, _ACTIVATIONS + _OUTPUT_TAIL):
            continue  # applied to the outputs (softmax, a normalised or activated logit layer)
        if not seen_classifier and _is_classifier(child):
            seen_classifier = True
            continue
        if isinstance(child, (nn.ModuleList, nn.ModuleDict)):
            continue  # containers never run themselves, so a hook on one never fires
        if not seen_classifier and _ends_in_classifier(child):
            # the whole net (classifier included) lives in this child, e.g. a wrapped model: look inside
            return _walk(child, f"{prefix}{name}.")
        return prefix + name
    return None


def default_feature_layer(model: nn.Module) -> str:
    """The module whose output is the model's last feature map (before pooling / classifier).

    A model may name it itself with a ``default_feature_layer`` attribute (a
    module path), which wins. Otherwise the top-level children are walked
    from the end, skipping pooling, flatten, dropout and identity modules and
    the classifier (a ``Linear`` or a 1x1 convolution, or a ``Sequential`` or
    custom head module made only of those, activations, pooling, flatten,
    dropout, ``BatchNorm1d`` and softmax that ends in one), and anything
    applied after the classifier (an activation, ``BatchNorm1d``, softmax or
    log-softmax), and the first other child is chosen; when
    that child itself ends in the classifier (the whole net in one
    ``Sequential``, or a wrapped model), the walk continues inside it.
    ``ModuleList`` / ``ModuleDict`` children are skipped: they never run as a
    whole. Children are taken in the order they were registered, which is
    the order ``forward`` runs them in most models; declare the attribute
    when it is not.

    Zoo models: ``layer3`` (``resnet-*``), ``features`` (``cnn-*``, ``mlp-*``,
    ``hinton-*``). Raises :class:`ConfigError` when no such module exists.
    """
    declared = getattr(model, "default_feature_layer", None)
    if declared is not None:
        if not isinstance(declared, str) or not declared or declared not in dict(model.named_modules()):
            valid = ", ".join(name for name, _ in model.named_modules() if name)
            raise ConfigError(f"{type(model).__name__}.default_feature_layer is {declared!r}, which is not "
                              f"one of its module paths: {valid}.")
        return declared
    found = _walk(model, "")
    if found is None:
        raise ConfigError(
            f"{type(model).__name__} has no feature module before its classifier to take features from. "
            "Name a layer with the method's student_layer / teacher_layer options, set a "
            "default_feature_layer attribute on the model, or use a method that needs no features "
            "(kd, dkd, regression).")
    return found


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
    missing = [path for path in paths if path not in found]
    if missing:
        raise ConfigError(
            f"The {role} layer{'s' if len(missing) > 1 else ''} {', '.join(repr(p) for p in missing)} never "
            "ran during a forward pass, so no features can be taken from it (a ModuleList or ModuleDict "
            "never runs as a whole, nor does a module the forward skips). Name a layer that the forward "
            "pass calls in the method's student_layer / teacher_layer options.")
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
    of each model, resolved in :meth:`bind` (before the Distiller attaches hooks);
    :meth:`describe_layers` says which were chosen and which were defaults.
    """

    def __init__(self, student_layer: str | None = None, teacher_layer: str | None = None) -> None:
        super().__init__()
        self.student_layer = student_layer
        self.teacher_layer = teacher_layer
        self.defaulted: tuple[str, ...] = ()
        self._set_paths()

    def _set_paths(self) -> None:
        self.student_layers = (self.student_layer,) if self.student_layer else ()
        self.teacher_layers = (self.teacher_layer,) if self.teacher_layer else ()

    def bind(self, student: nn.Module, teacher: nn.Module) -> None:
        self.defaulted = tuple(role for role, layer in (("student", self.student_layer),
                                                        ("teacher", self.teacher_layer)) if not layer)
        self.student_layer = self.student_layer or default_feature_layer(student)
        self.teacher_layer = self.teacher_layer or default_feature_layer(teacher)
        resolve_module(student, self.student_layer, "student")
        resolve_module(teacher, self.teacher_layer, "teacher")
        self._set_paths()

    def describe_layers(self) -> str:
        """``student 'features' (default) <- teacher 'layer3'``: what :meth:`bind` chose."""
        def one(role: str, layer: str | None) -> str:
            return f"{role} {layer!r}" + (" (default)" if role in self.defaulted else "")
        return f"{one('student', self.student_layer)} <- {one('teacher', self.teacher_layer)}"

    def setup(self, student: nn.Module, teacher: nn.Module, sample: Tensor, num_train: int) -> None:
        self.probe(student, teacher, sample)  # a layer the forward pass never calls fails here, by name

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
                f"'{self.student_layer}' / teacher layer '{self.teacher_layer}'. Either the method is run "
                "outside a Distiller (which attaches the forward hooks), or the layer never runs in the "
                "model's forward pass (name one that does with student_layer / teacher_layer)."
            ) from None
