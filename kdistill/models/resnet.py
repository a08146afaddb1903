"""Small CIFAR-style residual nets (He et al. 2016, "Deep Residual Learning for
Image Recognition", section 4.2): ``resnet-simple``, ``resnet-medium``,
``resnet-deep``.

``stem`` (3x3 conv) -> ``layer1`` -> ``layer2`` -> ``layer3`` -> ``pool`` ->
``fc``, built from :class:`BasicBlock`. ``layer2`` and ``layer3`` halve the
feature map only while it is at least 4x4, so 28x28 goes 28 -> 14 -> 7 and
8x8 goes 8 -> 4 -> 2; nothing is downsampled below 2x2. Shortcuts that change
shape use a 1x1 conv + BatchNorm (the paper's option B).

Parameters (10 classes, one input channel; same on (1,28,28) and (1,8,8)):

===============  =========  ===========  ==========
name             depths     widths       params
===============  =========  ===========  ==========
resnet-simple    1-1-1      16-32-64     77,754
resnet-medium    2-2-2      16-32-64     174,970
resnet-deep      3-3-3      32-64-128    1,084,010
===============  =========  ===========  ==========

``resnet-deep`` is the zoo's large teacher. Options: ``depths``, ``widths``
(three entries each).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn

from kdistill.errors import ConfigError
from kdistill.models._common import (
    MAX_LAYERS,
    check_parameters,
    image_shape,
    merge_kwargs,
    output_size,
    positive_ints,
)
from kdistill.models.init import init_conv_bn
from kdistill.registry import register_model


class BasicBlock(nn.Module):
    """Two 3x3 convs with an identity (or projection) shortcut."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNet(nn.Module):
    """Three stages of :class:`BasicBlock` s with global average pooling."""

    def __init__(
        self,
        input_shape: tuple[int, int, int],
        depths: Sequence[int],
        widths: Sequence[int],
        out_features: int,
    ) -> None:
        super().__init__()
        channels, height, width = input_shape
        self.stem = nn.Sequential(
            nn.Conv2d(channels, widths[0], 3, padding=1, bias=False),
            nn.BatchNorm2d(widths[0]),
            nn.ReLU(),
        )
        channels = widths[0]
        stages = []
        for i, (depth, w) in enumerate(zip(depths, widths, strict=True)):
            stride = 2 if i > 0 and min(height, width) >= 4 else 1
            if stride == 2:
                height, width = (height + 1) // 2, (width + 1) // 2
            blocks = [BasicBlock(channels, w, stride)]
            blocks += [BasicBlock(w, w) for _ in range(depth - 1)]
            stages.append(nn.Sequential(*blocks))
            channels = w
        self.layer1, self.layer2, self.layer3 = stages
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(channels, out_features)
        init_conv_bn(self)

    def forward(self, x: Tensor) -> Tensor:
        x = self.layer3(self.layer2(self.layer1(self.stem(x))))
        return self.fc(self.pool(x).flatten(1))


def _build(
    name: str,
    input_shape: Sequence[int],
    num_classes: int,
    kwargs: dict[str, Any],
    depths: tuple[int, int, int],
    widths: tuple[int, int, int],
) -> ResNet:
    opts = merge_kwargs(name, kwargs, {"depths": depths, "widths": widths})
    shape = image_shape(name, input_shape)
    chosen_depths = positive_ints(name, "depths", opts["depths"], length=3)
    chosen_widths = positive_ints(name, "widths", opts["widths"], length=3)
    if sum(chosen_depths) > MAX_LAYERS:
        raise ConfigError(f"Model '{name}': depths add up to {sum(chosen_depths):,} blocks; at most "
                          f"{MAX_LAYERS} are built.")
    outputs = output_size(name, num_classes)
    check_parameters(name, _parameters(shape[0], chosen_depths, chosen_widths, outputs), "widths or depths")
    return ResNet(shape, chosen_depths, chosen_widths, outputs)


def _parameters(channels: int, depths: Sequence[int], widths: Sequence[int], outputs: int) -> int:
    count = 9 * channels * widths[0] + 2 * widths[0]
    channels = widths[0]
    for depth, w in zip(depths, widths):
        count += 9 * channels * w + 9 * w * w + 4 * w + (channels * w + 2 * w if channels != w else 0)
        count += (depth - 1) * (18 * w * w + 4 * w)
        channels = w
    return count + (channels + 1) * outputs


@register_model("resnet-simple")
def resnet_simple(input_shape: Sequence[int], num_classes: int, **kwargs: Any) -> ResNet:
    """One block per stage, 16-32-64 channels: 77,754 parameters."""
    return _build("resnet-simple", input_shape, num_classes, kwargs, (1, 1, 1), (16, 32, 64))


@register_model("resnet-medium")
def resnet_medium(input_shape: Sequence[int], num_classes: int, **kwargs: Any) -> ResNet:
    """Two blocks per stage, 16-32-64 channels: 174,970 parameters."""
    return _build("resnet-medium", input_shape, num_classes, kwargs, (2, 2, 2), (16, 32, 64))


@register_model("resnet-deep")
def resnet_deep(input_shape: Sequence[int], num_classes: int, **kwargs: Any) -> ResNet:
    """Three blocks per stage, 32-64-128 channels: 1,084,010 parameters (the teacher)."""
    return _build("resnet-deep", input_shape, num_classes, kwargs, (3, 3, 3), (32, 64, 128))
