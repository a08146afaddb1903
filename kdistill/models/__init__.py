"""The model zoo.

``create_model(name, input_shape, num_classes, **kwargs)`` builds any model
registered in :data:`kdistill.registry.MODELS`; importing this package
registers the built-in families:

* ``mlp-simple`` / ``mlp-medium`` / ``mlp-deep`` (:mod:`kdistill.models.mlp`)
* ``cnn-simple`` / ``cnn-medium`` / ``cnn-deep`` (:mod:`kdistill.models.cnn`)
* ``resnet-simple`` / ``resnet-medium`` / ``resnet-deep`` (:mod:`kdistill.models.resnet`)
* ``hinton-teacher`` / ``hinton-student`` (:mod:`kdistill.models.hinton`)
* detectors, on canvases (:mod:`kdistill.detection.models`): ``fcos-simple`` /
  ``fcos-medium`` / ``fcos-deep``
* text, on token ids (needs ``kdistill[nlp]``): ``hf-classifier``, ``hf-distil``,
  ``tiny-transformer`` (:mod:`kdistill.models.text`), ``bilstm``, ``text-cnn``
  (:mod:`kdistill.models.text_rnn`)

Every model maps a batch to logits of shape ``(batch, num_classes)``, or
``(batch, 1)`` for regression (``num_classes == 0``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import nn

from kdistill.detection import models as detection  # noqa: F401  (fcos-simple / -medium / -deep)
from kdistill.models import cnn, hinton, mlp, resnet, text, text_rnn  # noqa: F401  (registers the zoo)
from kdistill.models.cnn import ConvNet
from kdistill.models.mlp import MLP
from kdistill.models.resnet import BasicBlock, ResNet
from kdistill.registry import MODELS, register_model

__all__ = [
    "MLP",
    "BasicBlock",
    "ConvNet",
    "ResNet",
    "create_model",
    "list_models",
    "register_model",
]


def create_model(
    name: str, input_shape: Sequence[int], num_classes: int, **kwargs: Any
) -> nn.Module:
    """Build the model registered as ``name``.

    Raises :class:`~kdistill.errors.UnknownNameError` (a ``ConfigError``) listing
    the registered names when ``name`` is unknown, and ``ConfigError`` naming the
    allowed options when a keyword is not understood.
    """
    return MODELS.get(name)(tuple(input_shape), num_classes, **kwargs)


def list_models() -> list[str]:
    """Names of every registered model, sorted."""
    return MODELS.names()
