"""Weight initialisation shared by the convolutional families."""

from __future__ import annotations

from torch import nn


def init_conv_bn(module: nn.Module) -> None:
    """He-normal convolutions (He et al. 2015), unit-scale BatchNorm.

    PyTorch's default conv init is tuned for tanh-like nets; ReLU stacks train
    faster from fan-out He init, the choice of the original ResNet code.
    """
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
