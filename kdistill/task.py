"""What the :class:`~kdistill.distiller.Distiller` needs to know about the kind of model it distils.

One Distiller serves every task: it freezes the teacher, hooks layers, caches
the teacher's outputs (on the device or memory-mapped) and adds up the
weighted loss terms. A :class:`Task` supplies the rest, the parts that depend
on what the models output:

* ``prepare``: check the teacher/student pair (and the run) before training;
* ``context``: the step context every term of one batch reads (class logits
  for a classifier; for a detector, its dense outputs and the batch's box
  assignment);
* ``flatten`` / ``unflatten``: the teacher's outputs and hooked features as
  named tensors, which is what the teacher cache stores, and back;
* ``validation_score``: the metric that picks the best epoch;
* ``every_call_hooks``: whether hooked modules run more than once per forward
  pass (a detection head shared across FPN levels).

Training on labels alone (:class:`~kdistill.distiller.Supervised`, no teacher)
reads the same task: ``prepare_model`` checks the model, ``label_losses``
gives the loss of a batch when the task has its own (a detector's boxes;
``None``: the objective's label loss, cross-entropy or MSE), and
``validation_score`` picks the best epoch.

:class:`ClassificationTask` (class logits; also a one-output regressor's
``"regression"``) is the default. Optional packages define their own (e.g.
:class:`kdistill.detection.task.DetectionTask`) and pass it as
``Distiller(task=...)``; the core never imports them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from torch import Tensor, nn

from kdistill.errors import ConfigError
from kdistill.methods.base import StepContext
from kdistill.train.objective import FitContext, score

if TYPE_CHECKING:
    from kdistill.distiller import Distiller


class Task:
    """The task-specific parts of distillation; the base class is the classifier's (``name`` says which)."""

    name = "classification"
    every_call_hooks = False

    def check_terms(self, terms: list[tuple[nn.Module, float]]) -> None:
        """Refuse, in words, a loss term this task's outputs cannot feed (called when the Distiller is built)."""

    def prepare(self, distiller: Distiller, sample: Tensor, context: FitContext) -> None:
        """Check the pair on two training samples, before any training step."""
        distiller.check_compatible(sample)

    def prepare_model(self, model: nn.Module, sample: Tensor, context: FitContext) -> None:
        """Training on labels alone: check the model on two training samples, before any training step."""

    def label_losses(self, model: nn.Module, inputs: Tensor, labels: Tensor) -> dict[str, Tensor] | None:
        """Training on labels alone: the batch's named losses (with ``"loss"``), or ``None`` for the
        objective's own label loss on ``model(inputs)``."""
        return None

    def context(self, distiller: Distiller, *, inputs: Tensor, labels: Tensor, indices: Tensor | None,
                student_out: Any, teacher_out: Any, student_features: dict[str, Any],
                teacher_features: dict[str, Any]) -> Any:
        """What every loss term of this batch gets as ``ctx``."""
        return StepContext(inputs=inputs, labels=labels, student_logits=student_out, teacher_logits=teacher_out,
                           indices=indices, epoch=distiller.epoch, student_features=student_features,
                           teacher_features=teacher_features)

    def flatten(self, outputs: Any, features: dict[str, Any]) -> tuple[Tensor, dict[str, Tensor]]:
        """The teacher's outputs and hooked features of a batch as ``(logits, named tensors)`` to cache."""
        return outputs, features

    def unflatten(self, logits: Tensor, features: dict[str, Tensor]) -> tuple[Any, dict[str, Any]]:
        """:meth:`flatten` undone on cached rows: what the live teacher and its hooks would have given."""
        return logits, features

    def validation_score(self, student: nn.Module, x: Tensor, y: Tensor) -> float:
        """Higher is better; picks ``best.safetensors``. Accuracy, or -MSE for a regressor."""
        return score(student, x, y)


class ClassificationTask(Task):
    """Class logits of shape ``(N, C)``, compared class by class."""


class RegressionTask(Task):
    """One real-valued output per sample; the ``kd`` term becomes the MSE to the teacher's outputs."""

    name = "regression"


def builtin_task(name: str) -> Task:
    """The task a name stands for: ``"classification"`` or ``"regression"``."""
    tasks = {"classification": ClassificationTask, "regression": RegressionTask}
    if name not in tasks:
        raise ConfigError(f"task must be 'classification', 'regression' or a kdistill.task.Task, got {name!r}.")
    return tasks[name]()
