"""A small one-stage dense detector in the FCOS style (Tian et al. 2019): ``fcos-simple/medium/deep``.

backbone -> FPN -> one head shared by every FPN level::

    image (1, S, S)
      backbone: stages of 3x3 conv-BN-ReLU, each halving the map (strides 2, 4, 8, 16)
      fpn: 1x1 lateral convs on the last ``levels`` stages, top-down sum,
           a 3x3 output conv per level (``fpn.outputs.i``; strides 8 and 16 by default)
      head, run on each level:
        input (``head.input``, an identity so the head's input can be hooked)
        cls tower: ``head_convs`` x (3x3 conv -> GroupNorm -> ReLU)  -> 3x3 conv -> class logits
        reg tower: ``head_convs`` x (3x3 conv -> GroupNorm -> ReLU)  -> 3x3 conv -> box distances
                                                                     -> 3x3 conv -> centerness logit

Box distances are ``(l, t, r, b)`` in pixels from each location to the box
edges, ``stride * exp(s_level * raw)`` with a learnt per-level scale. The
output is a :class:`DetectorOutput` of all levels flattened and concatenated
(level 0 first, row-major within a level), so a loss never loops over levels.

The head is the same design in every model, so CrossKD (``crosskd``) can run
the student's tower features through the teacher's remaining head layers:
:meth:`DenseHead.from_layer` starts the head at any tower depth. Tower layer
``k`` (1-based) ends in module ``head.cls_tower.{k-1}.norm`` (its
pre-activation output; ``head.reg_tower...`` likewise); it runs once per
level, so hooks on it see one output per level.

==============  ===============  ============  =====  ==========  ============
name            backbone widths  convs/stage   FPN    head width  params (10 classes)
==============  ===============  ============  =====  ==========  ============
fcos-simple     8-16-32-48       1             32     32 x 2      82,441
fcos-medium     16-32-64-96      1             48     48 x 2      218,065
fcos-deep       24-48-96-128     2             64     64 x 2      665,097
==============  ===============  ============  =====  ==========  ============

(parameter counts do not depend on the canvas size). Options: ``widths``,
``convs_per_stage``, ``fpn_width``, ``head_width``, ``head_convs``,
``levels`` (FPN levels, from the coarsest stage down), and post-processing
``score_threshold`` (0.05), ``nms_iou`` (0.6), ``pre_nms_top_k`` (200),
``max_detections`` (100).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kdistill.errors import ConfigError
from kdistill.models._common import image_shape, merge_kwargs, positive_int, positive_ints
from kdistill.models.init import init_conv_bn
from kdistill.registry import register_model

PRIOR_PROBABILITY = 0.01  # RetinaNet's initial foreground probability for the class logits
MAX_LOG_DISTANCE = 8.0  # exp(8) strides: far beyond any canvas, keeps early steps finite


class DetectorOutput(NamedTuple):
    """Dense predictions for every location of every level, levels concatenated.

    ``cls`` ``(B, L, C)`` class logits (sigmoid, one per class), ``box``
    ``(B, L, 4)`` distances ``(l, t, r, b)`` in pixels, ``ctr`` ``(B, L)``
    centerness logits.
    """

    cls: Tensor
    box: Tensor
    ctr: Tensor


class ConvNormAct(nn.Module):
    """3x3 conv -> norm -> ReLU; ``norm``'s output is the layer's pre-activation feature."""

    def __init__(self, c_in: int, c_out: int, stride: int = 1, group_norm: bool = False) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.norm = nn.GroupNorm(_groups(c_out), c_out) if group_norm else nn.BatchNorm2d(c_out)
        self.act = nn.ReLU()

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.norm(self.conv(x)))


def _groups(channels: int) -> int:
    for g in (8, 4, 2):
        if channels % g == 0:
            return g
    return 1


class Backbone(nn.Module):
    """Stages of conv-BN-ReLU; stage ``i`` has stride ``2 ** (i + 1)``."""

    def __init__(self, in_channels: int, widths: Sequence[int], convs_per_stage: int) -> None:
        super().__init__()
        stages, c = [], in_channels
        for w in widths:
            layers = [ConvNormAct(c, w, stride=2)] + [ConvNormAct(w, w) for _ in range(convs_per_stage - 1)]
            stages.append(nn.Sequential(*layers))
            c = w
        self.stages = nn.ModuleList(stages)

    def forward(self, x: Tensor) -> list[Tensor]:
        outs = []
        for stage in self.stages:
            x = stage(x)
            outs.append(x)
        return outs


class FPN(nn.Module):
    """Feature pyramid (Lin et al. 2017): lateral 1x1 convs, nearest top-down sum, 3x3 output convs."""

    def __init__(self, in_widths: Sequence[int], width: int) -> None:
        super().__init__()
        self.laterals = nn.ModuleList([nn.Conv2d(c, width, 1) for c in in_widths])
        self.outputs = nn.ModuleList([nn.Conv2d(width, width, 3, padding=1) for _ in in_widths])

    def forward(self, feats: Sequence[Tensor]) -> list[Tensor]:
        laterals = [conv(f) for conv, f in zip(self.laterals, feats)]
        for i in range(len(laterals) - 2, -1, -1):
            laterals[i] = laterals[i] + F.interpolate(laterals[i + 1], size=laterals[i].shape[-2:], mode="nearest")
        return [conv(x) for conv, x in zip(self.outputs, laterals)]


class DenseHead(nn.Module):
    """The FCOS head shared by all levels: two towers and three predictors."""

    def __init__(self, in_width: int, width: int, convs: int, num_classes: int, levels: int) -> None:
        super().__init__()
        self.width, self.convs, self.num_classes = width, convs, num_classes
        self.input = nn.Identity()
        self.cls_tower = nn.ModuleList([ConvNormAct(in_width if i == 0 else width, width, group_norm=True)
                                        for i in range(convs)])
        self.reg_tower = nn.ModuleList([ConvNormAct(in_width if i == 0 else width, width, group_norm=True)
                                        for i in range(convs)])
        self.cls_out = nn.Conv2d(width, num_classes, 3, padding=1)
        self.box_out = nn.Conv2d(width, 4, 3, padding=1)
        self.ctr_out = nn.Conv2d(width, 1, 3, padding=1)
        self.scales = nn.Parameter(torch.ones(levels))
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, std=0.01)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        nn.init.constant_(self.cls_out.bias, -math.log((1 - PRIOR_PROBABILITY) / PRIOR_PROBABILITY))

    def tower_input_width(self, layer: int) -> int:
        """Channels entering tower layer ``layer`` (0-based): the FPN width for 0, else the head width."""
        return self.cls_tower[layer].conv.in_channels if layer < self.convs else self.width

    def forward(self, x: Tensor, level: int, stride: int) -> tuple[Tensor, Tensor, Tensor]:
        x = self.input(x)
        return self.from_layer(x, x, level, stride, start=0)

    def from_layer(self, cls_feat: Tensor, reg_feat: Tensor, level: int, stride: int,
                   start: int) -> tuple[Tensor, Tensor, Tensor]:
        """Run the head from tower layer ``start`` on (already activated) features of that depth.

        ``start = 0`` is the whole head on an FPN feature; ``start = k`` takes
        the outputs of tower layer ``k`` (after its ReLU) and runs layers
        ``k+1 ...`` and the predictors.
        """
        for layer in self.cls_tower[start:]:
            cls_feat = layer(cls_feat)
        for layer in self.reg_tower[start:]:
            reg_feat = layer(reg_feat)
        raw = self.box_out(reg_feat).float() * self.scales[level]
        box = torch.exp(raw.clamp(max=MAX_LOG_DISTANCE)) * stride
        return self.cls_out(cls_feat), box, self.ctr_out(reg_feat)[:, 0]


class DenseDetector(nn.Module):
    """Backbone + FPN + shared dense head; ``forward`` returns a :class:`DetectorOutput`."""

    def __init__(self, input_shape: tuple[int, int, int], num_classes: int, *, widths: Sequence[int],
                 convs_per_stage: int, fpn_width: int, head_width: int, head_convs: int, levels: int,
                 score_threshold: float = 0.05, nms_iou: float = 0.6, pre_nms_top_k: int = 200,
                 max_detections: int = 100) -> None:
        super().__init__()
        channels, height, width = input_shape
        self.input_shape = tuple(input_shape)
        self.num_classes = num_classes
        self.backbone = Backbone(channels, widths, convs_per_stage)
        init_conv_bn(self.backbone)
        self.level_stages = list(range(len(widths) - levels, len(widths)))
        self.strides = [2 ** (i + 1) for i in self.level_stages]
        self.fpn = FPN([widths[i] for i in self.level_stages], fpn_width)
        self.head = DenseHead(fpn_width, head_width, head_convs, num_classes, levels)
        self.score_threshold, self.nms_iou = float(score_threshold), float(nms_iou)
        self.pre_nms_top_k, self.max_detections = int(pre_nms_top_k), int(max_detections)
        self._grid_cache: dict[tuple, tuple[Tensor, Tensor, Tensor]] = {}

    def features(self, x: Tensor) -> list[Tensor]:
        """The FPN maps, finest level first."""
        stages = self.backbone(x)
        return self.fpn([stages[i] for i in self.level_stages])

    def forward(self, x: Tensor) -> DetectorOutput:
        levels = [self.head(f, i, s) for i, (f, s) in enumerate(zip(self.features(x), self.strides))]
        return flatten_levels(levels)

    def grid(self, sizes: Sequence[tuple[int, int]], device: torch.device) -> tuple[Tensor, Tensor, Tensor]:
        """Location centres ``(L, 2)`` (x, y pixels), their strides ``(L,)`` and level ids ``(L,)``."""
        key = (tuple(sizes), str(device))
        if key not in self._grid_cache:
            points, strides, level_ids = [], [], []
            for level, ((h, w), s) in enumerate(zip(sizes, self.strides)):
                ys, xs = torch.meshgrid(torch.arange(h, device=device), torch.arange(w, device=device), indexing="ij")
                points.append(torch.stack([xs.reshape(-1), ys.reshape(-1)], -1).float() * s + s // 2)
                strides.append(torch.full((h * w,), float(s), device=device))
                level_ids.append(torch.full((h * w,), level, device=device, dtype=torch.long))
            self._grid_cache[key] = (torch.cat(points), torch.cat(strides), torch.cat(level_ids))
        return self._grid_cache[key]

    def level_sizes(self, image_hw: tuple[int, int]) -> list[tuple[int, int]]:
        """Feature-map sizes of the levels for an input of ``image_hw``."""
        h, w = image_hw
        for _ in range(self.level_stages[0] + 1):
            h, w = (h + 1) // 2, (w + 1) // 2
        sizes = [(h, w)]
        for _ in self.level_stages[1:]:
            h, w = (h + 1) // 2, (w + 1) // 2
            sizes.append((h, w))
        return sizes

    def points(self, image_hw: tuple[int, int], device: torch.device) -> tuple[Tensor, Tensor, Tensor]:
        return self.grid(self.level_sizes(image_hw), device)


def flatten_levels(levels: Sequence[tuple[Tensor, Tensor, Tensor]]) -> DetectorOutput:
    """Per-level ``(cls (B,C,h,w), box (B,4,h,w), ctr (B,h,w))`` -> one :class:`DetectorOutput`."""
    cls = torch.cat([c.flatten(2).transpose(1, 2) for c, _, _ in levels], 1)
    box = torch.cat([b.flatten(2).transpose(1, 2) for _, b, _ in levels], 1)
    ctr = torch.cat([t.flatten(1) for _, _, t in levels], 1)
    return DetectorOutput(cls, box, ctr)


def is_detector(model: Any) -> bool:
    """True for the dense detectors of this module (what the detection objective can train)."""
    return isinstance(getattr(model, "_orig_mod", model), DenseDetector)


_POST = {"score_threshold": 0.05, "nms_iou": 0.6, "pre_nms_top_k": 200, "max_detections": 100}


def _build(name: str, input_shape: Sequence[int], num_classes: int, kwargs: dict[str, Any],
           **defaults: Any) -> DenseDetector:
    opts = merge_kwargs(name, kwargs, {**defaults, **_POST})
    shape = image_shape(name, input_shape)
    widths = positive_ints(name, "widths", opts["widths"])
    levels = positive_int(name, "levels", opts["levels"])
    if levels > len(widths):
        raise ConfigError(f"Model '{name}': levels ({levels}) cannot exceed the number of backbone stages "
                          f"({len(widths)}).")
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ConfigError(f"Model '{name}' is a detector and needs num_classes >= 1, got {num_classes!r}.")
    coarsest = 2 ** len(widths)
    if shape[1] % coarsest or shape[2] % coarsest:
        raise ConfigError(f"Model '{name}' halves its input {len(widths)} times, so the canvas sides must be "
                          f"multiples of {coarsest}; got input_shape {tuple(shape)}. Use a canvas-* data set "
                          f"with canvas_size a multiple of {coarsest}, or fewer widths.")
    for key in ("score_threshold", "nms_iou"):
        value = opts[key]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
            raise ConfigError(f"Model '{name}': {key} must be a number in [0, 1], got {value!r}.")
    return DenseDetector(
        shape, num_classes, widths=widths,
        convs_per_stage=positive_int(name, "convs_per_stage", opts["convs_per_stage"]),
        fpn_width=positive_int(name, "fpn_width", opts["fpn_width"]),
        head_width=positive_int(name, "head_width", opts["head_width"]),
        head_convs=positive_int(name, "head_convs", opts["head_convs"]), levels=levels,
        score_threshold=opts["score_threshold"], nms_iou=opts["nms_iou"],
        pre_nms_top_k=positive_int(name, "pre_nms_top_k", opts["pre_nms_top_k"]),
        max_detections=positive_int(name, "max_detections", opts["max_detections"]))


@register_model("fcos-simple")
def fcos_simple(input_shape: Sequence[int], num_classes: int, **kwargs: Any) -> DenseDetector:
    """Backbone 8-16-32-48, FPN 32, head 32 x 2 convs: 82,441 parameters (10 classes)."""
    return _build("fcos-simple", input_shape, num_classes, kwargs, widths=(8, 16, 32, 48), convs_per_stage=1,
                  fpn_width=32, head_width=32, head_convs=2, levels=2)


@register_model("fcos-medium")
def fcos_medium(input_shape: Sequence[int], num_classes: int, **kwargs: Any) -> DenseDetector:
    """Backbone 16-32-64-96, FPN 48, head 48 x 2 convs: 218,065 parameters (10 classes)."""
    return _build("fcos-medium", input_shape, num_classes, kwargs, widths=(16, 32, 64, 96), convs_per_stage=1,
                  fpn_width=48, head_width=48, head_convs=2, levels=2)


@register_model("fcos-deep")
def fcos_deep(input_shape: Sequence[int], num_classes: int, **kwargs: Any) -> DenseDetector:
    """Backbone 24-48-96-128 with 2 convs per stage, FPN 64, head 64 x 2 convs: 665,097 parameters."""
    return _build("fcos-deep", input_shape, num_classes, kwargs, widths=(24, 48, 96, 128), convs_per_stage=2,
                  fpn_width=64, head_width=64, head_convs=2, levels=2)
