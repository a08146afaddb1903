"""A model of your own, used from the command line as a plugin.

kdistill configs are plain data and never import code, so the command line
names the code: ``--plugin examples/plugins/my_model.py`` imports this file
before the command runs, and the decorator below makes ``model: my-mlp``
valid in a config (see examples/plugins/my-model.yaml and the README's
"Bring your own model")::

    kdistill distill examples/plugins/my-model.yaml --plugin examples/plugins/my_model.py

Checkpoints record the model's name, options and this plugin's path, so
``kdistill evaluate`` / ``export`` rebuild it when given the same --plugin
(and say which one to pass when it is missing).
"""

from __future__ import annotations

import math

from torch import nn

from kdistill import register_model


@register_model("my-mlp")
def my_mlp(input_shape: tuple[int, ...], num_classes: int, *, hidden: int = 32,
           dropout: float = 0.0) -> nn.Module:
    """One hidden layer with a GELU: the factory gets the data's sample shape and class count,
    and the options under ``options:`` in the config as keywords."""
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(math.prod(input_shape), hidden),
        nn.GELU(),
        nn.Dropout(dropout),
        nn.Linear(hidden, num_classes),
    )
