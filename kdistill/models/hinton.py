"""The MNIST networks of Hinton, Vinyals & Dean (2015), "Distilling the Knowledge
in a Neural Network", section 3.

* ``hinton-teacher``: 784-1200-1200-10, ReLU, dropout 0.5 on the hidden layers
  (the paper's strongly regularised net, 67 test errors). Exactly
  784*1200+1200 + 1200*1200+1200 + 1200*10+10 = 2,395,210 parameters.
  ``input_dropout=0.2`` adds the input dropout of Srivastava et al. (2014).
* ``hinton-student``: 784-800-800-10 without dropout (146 errors alone, 74 when
  distilled at T=20). Exactly 784*800+800 + 800*800+800 + 800*10+10 =
  1,276,810 parameters.

Both flatten whatever they get, so on (1, 8, 8) the first layer has 64 inputs
(teacher 1,531,210, student 700,810 parameters).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from kdistill.models._common import merge_kwargs
from kdistill.models.mlp import MLP, build_mlp
from kdistill.registry import register_model


@register_model("hinton-teacher")
def hinton_teacher(input_shape: Sequence[int], num_classes: int, **kwargs: Any) -> MLP:
    """784-1200-1200-10 with dropout; options ``dropout`` (0.5), ``input_dropout`` (0.0)."""
    defaults = {"dropout": 0.5, "input_dropout": 0.0}
    return _build("hinton-teacher", input_shape, num_classes, kwargs, (1200, 1200), defaults)


@register_model("hinton-student")
def hinton_student(input_shape: Sequence[int], num_classes: int, **kwargs: Any) -> MLP:
    """784-800-800-10 without dropout; option ``dropout`` (0.0)."""
    return _build("hinton-student", input_shape, num_classes, kwargs, (800, 800), {"dropout": 0.0})


def _build(
    name: str,
    input_shape: Sequence[int],
    num_classes: int,
    kwargs: dict[str, Any],
    hidden: tuple[int, ...],
    defaults: dict[str, Any],
) -> MLP:
    # The architecture is the point of these nets, so ``hidden`` is deliberately
    # not an option: checking against ``defaults`` first rejects it by name.
    opts = merge_kwargs(name, kwargs, defaults)
    return build_mlp(name, input_shape, num_classes, opts, {**defaults, "hidden": hidden})
