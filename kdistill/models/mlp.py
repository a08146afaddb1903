"""Fully connected classifiers: ``mlp-simple``, ``mlp-medium``, ``mlp-deep``.

Parameters on (1, 28, 28) with 10 classes / on (1, 8, 8) with 10 classes:

============  ===========  =========  =======
name          hidden       (1,28,28)  (1,8,8)
============  ===========  =========  =======
mlp-simple    32              25,450    2,410
mlp-medium    256-128        235,146   50,826
mlp-deep      512-512-256    798,474  429,834
============  ===========  =========  =======

Options: ``hidden`` (list of widths), ``dropout`` (after every hidden layer).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import Tensor, nn

from kdistill.models._common import (
    check_parameters,
    flat_size,
    merge_kwargs,
    mlp_parameters,
    output_size,
    positive_ints,
    probability,
)
from kdistill.registry import register_model


class MLP(nn.Module):
    """``flatten -> input_dropout -> features (Linear-ReLU-Dropout per block) -> classifier``.

    ``features.i`` is the output of hidden layer ``i`` after its activation, so
    feature-based methods can hook it by that name.
    """

    def __init__(
        self,
        in_features: int,
        hidden: Sequence[int],
        out_features: int,
        dropout: float = 0.0,
        input_dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.flatten = nn.Flatten()
        # Identity instead of Dropout(0) keeps the printed model honest about what it does.
        self.input_dropout = nn.Dropout(input_dropout) if input_dropout > 0 else nn.Identity()
        blocks = []
        width = in_features
        for h in hidden:
            blocks.append(
                nn.Sequential(
                    nn.Linear(width, h),
                    nn.ReLU(),  # not in-place: hooks on the Linear must see pre-activations
                    nn.Dropout(dropout) if dropout > 0 else nn.Identity(),
                )
            )
            width = h
        self.features = nn.Sequential(*blocks)
        self.classifier = nn.Linear(width, out_features)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(self.input_dropout(self.flatten(x))))


def build_mlp(
    name: str,
    input_shape: Sequence[int],
    num_classes: int,
    kwargs: dict[str, Any],
    defaults: dict[str, Any],
) -> MLP:
    """Validate ``kwargs`` against ``defaults`` and build an :class:`MLP`."""
    opts = merge_kwargs(name, kwargs, defaults)
    # An empty list is allowed: a linear (softmax regression) model.
    hidden = positive_ints(name, "hidden", opts["hidden"])
    features, outputs = flat_size(name, input_shape), output_size(name, num_classes)
    check_parameters(name, mlp_parameters(features, hidden, outputs),
                     "hidden (or the input size / number of classes)")
    return MLP(
        features,
        hidden,
        outputs,
        dropout=probability(name, "dropout", opts.get("dropout", 0.0)),
        input_dropout=probability(name, "input_dropout", opts.get("input_dropout", 0.0)),
    )


@register_model("mlp-simple")
def mlp_simple(input_shape: Sequence[int], num_classes: int, **kwargs: Any) -> MLP:
    """One hidden layer of 32 units: 25,450 parameters on MNIST."""
    return build_mlp(
        "mlp-simple", input_shape, num_classes, kwargs, {"hidden": (32,), "dropout": 0.0}
    )


@register_model("mlp-medium")
def mlp_medium(input_shape: Sequence[int], num_classes: int, **kwargs: Any) -> MLP:
    """Hidden layers 256-128: 235,146 parameters on MNIST."""
    return build_mlp(
        "mlp-medium", input_shape, num_classes, kwargs, {"hidden": (256, 128), "dropout": 0.0}
    )


@register_model("mlp-deep")
def mlp_deep(input_shape: Sequence[int], num_classes: int, **kwargs: Any) -> MLP:
    """Hidden layers 512-512-256: 798,474 parameters on MNIST."""
    return build_mlp(
        "mlp-deep", input_shape, num_classes, kwargs, {"hidden": (512, 512, 256), "dropout": 0.0}
    )
