"""Plain convolutional nets: ``cnn-simple``, ``cnn-medium``, ``cnn-deep``.

Each block is ``convs_per_block`` x (3x3 conv, padding 1 -> BatchNorm -> ReLU)
followed by 2x2 max pooling. A block only pools while the feature map is at
least 4x4, so the map never shrinks below 2x2 and the same net runs on 28x28
MNIST and 8x8 sklearn digits. An adaptive average pool before the classifier
makes the parameter count independent of the image size.

Parameters (10 classes, one input channel; same on (1,28,28) and (1,8,8)):

=============  ==============  =========  ==========
name           widths          convs      params
=============  ==============  =========  ==========
cnn-simple     16-32           1          5,178
cnn-medium     32-64-128       1          94,186
cnn-deep       32-64-128       2          288,170
=============  ==============  =========  ==========

Module names: ``features.i`` is block ``i`` (an ``nn.Sequential``), then
``pool`` and ``classifier`` (flatten -> dropout -> linear). Options:
``widths``, ``convs_per_block``, ``dropout`` (before the classifier).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import Tensor, nn

from kdistill.models._common import (
    MAX_LAYERS,
    check_parameters,
    image_shape,
    merge_kwargs,
    output_size,
    positive_int,
    positive_ints,
    probability,
)
from kdistill.models.init import init_conv_bn
from kdistill.registry import register_model


class ConvNet(nn.Module):
    """A VGG-style stack of conv blocks with a global-average-pooled linear head."""

    def __init__(
        self,
        input_shape: tuple[int, int, int],
        widths: Sequence[int],
        out_features: int,
        convs_per_block: int = 1,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        channels, height, width = input_shape
        blocks = []
        for w in widths:
            layers: list[nn.Module] = []
            for _ in range(convs_per_block):
                # No conv bias: the BatchNorm shift that follows makes it redundant.
                layers += [
                    nn.Conv2d(channels, w, 3, padding=1, bias=False),
                    nn.BatchNorm2d(w),
                    nn.ReLU(),
                ]
                channels = w
            pool = min(height, width) >= 4
            # Identity keeps block indices identical whatever the input size.
            layers.append(nn.MaxPool2d(2) if pool else nn.Identity())
            if pool:
                height, width = height // 2, width // 2
            blocks.append(nn.Sequential(*layers))
        self.features = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Dropout(dropout), nn.Linear(channels, out_features)
        )
        init_conv_bn(self)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.pool(self.features(x)))


def _build(
    name: str,
    input_shape: Sequence[int],
    num_classes: int,
    kwargs: dict[str, Any],
    widths: tuple[int, ...],
    convs_per_block: int,
) -> ConvNet:
    defaults = {"widths": widths, "convs_per_block": convs_per_block, "dropout": 0.0}
    opts = merge_kwargs(name, kwargs, defaults)
    shape = image_shape(name, input_shape)
    chosen = positive_ints(name, "widths", opts["widths"])
    convs = positive_int(name, "convs_per_block", opts["convs_per_block"], MAX_LAYERS)
    outputs = output_size(name, num_classes)
    check_parameters(name, _parameters(shape[0], chosen, convs, outputs), "widths or convs_per_block")
    return ConvNet(shape, chosen, outputs, convs_per_block=convs,
                   dropout=probability(name, "dropout", opts["dropout"]))


def _parameters(channels: int, widths: Sequence[int], convs: int, outputs: int) -> int:
    count = 0
    for w in widths:
        for _ in range(min(convs, 2)):  # every conv after the second of a block is like the second
            count += 9 * channels * w + 2 * w
            channels = w
        count += (convs - min(convs, 2)) * (9 * w * w + 2 * w)
    return count + (channels + 1) * outputs


@register_model("cnn-simple")
def cnn_simple(input_shape: Sequence[int], num_classes: int, **kwargs: Any) -> ConvNet:
    """Two single-conv blocks, 16 and 32 channels: 5,178 parameters."""
    return _build("cnn-simple", input_shape, num_classes, kwargs, (16, 32), 1)


@register_model("cnn-medium")
def cnn_medium(input_shape: Sequence[int], num_classes: int, **kwargs: Any) -> ConvNet:
    """Three single-conv blocks, 32-64-128 channels: 94,186 parameters."""
    return _build("cnn-medium", input_shape, num_classes, kwargs, (32, 64, 128), 1)


@register_model("cnn-deep")
def cnn_deep(input_shape: Sequence[int], num_classes: int, **kwargs: Any) -> ConvNet:
    """Three double-conv blocks, 32-64-128 channels: 288,170 parameters."""
    return _build("cnn-deep", input_shape, num_classes, kwargs, (32, 64, 128), 2)
