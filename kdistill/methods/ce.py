"""The label term: the student's loss on the true labels.

    L_CE = CrossEntropy(z_s, y)      (with label smoothing eps: against (1 - eps) * onehot(y) + eps / C)

``ce`` is the hard-label term of the loss: ``distill.alpha`` gives it weight
``1 - alpha``, or ``distill.terms`` lists it with its own weight. Its value is
reported as ``"student"`` (the name training histories have always used for
it). A run built from a config passes ``train.label_smoothing`` unless the
term's options set ``label_smoothing``; a regression run passes the mean
squared error on the standardised targets as ``loss_fn`` instead.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor, nn

from kdistill.methods.base import DistillationMethod, StepContext
from kdistill.registry import register_method


@register_method("ce")
class LabelLoss(DistillationMethod):
    """``loss_fn(student_logits, labels)``; default ``nn.CrossEntropyLoss(label_smoothing=...)``."""

    def __init__(self, label_smoothing: float = 0.0, *,
                 loss_fn: Callable[[Tensor, Tensor], Tensor] | None = None) -> None:
        super().__init__()
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must lie in [0, 1), got {label_smoothing}")
        if loss_fn is not None and label_smoothing:
            raise ValueError("label_smoothing applies to the cross-entropy on class labels, not to a given loss_fn")
        self.label_smoothing = float(label_smoothing)
        self.loss_fn = loss_fn or nn.CrossEntropyLoss(label_smoothing=self.label_smoothing)

    def forward(self, ctx: StepContext) -> dict[str, Tensor]:
        return {"student": self.loss_fn(ctx.student_logits, ctx.labels)}
