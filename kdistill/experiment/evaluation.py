"""The one evaluation of a trained model: what ``execute`` writes to ``metrics.json`` and
``kdistill evaluate`` prints for the same checkpoint.

Both callers hand :func:`score_model` the model (its best epoch, predicting in
the data's own units), the data and, for fidelity, the teacher, so a run's
recorded metrics and a later evaluation of its checkpoint cannot drift apart.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from kdistill.compress.variational import sparse_metrics
from kdistill.data.streaming import default_workers
from kdistill.detection.evaluate import evaluate_detector
from kdistill.detection.models import is_detector
from kdistill.errors import ConfigError
from kdistill.eval import evaluate_model, test_predictions


def score_model(
    model: nn.Module,
    data: Any,
    teacher: nn.Module | None = None,
    *,
    sparse: bool = False,
    sparse_file: str | Path | None = None,
    workers: int | None = None,
    batch_size: int = 256,
) -> dict[str, Any]:
    """Test-split metrics of ``model`` on ``data``, with fidelity to ``teacher`` when one is given.

    Classification: accuracy, top-5 accuracy, errors; regression: ``mse`` and the
    baseline of always predicting the training mean (``mse_predict_mean``,
    ``r2_vs_mean``); detection: COCO-style AP (:func:`~kdistill.detection.evaluate.evaluate_detector`).
    All report size and CPU latency (:func:`kdistill.eval.evaluate_model`). Given
    a teacher: ``agreement`` and ``kl`` (``teacher_mse`` for regression,
    ``fidelity_AP50`` for detection). ``sparse`` marks a sparsified variational
    model, whose size is its bitmask encoding: the size of ``sparse_file`` when
    the model was saved in that format, else computed from the model. A streamed
    test split is read by ``workers`` DataLoader workers (unset:
    :func:`~kdistill.data.streaming.default_workers`), ``batch_size`` samples at
    a time (a run passes :func:`~kdistill.data.streaming.evaluation_batch_size`,
    as its validation does).
    """
    detector = is_detector(model)
    if data.task == "detection" or detector:  # [detection] AP instead of accuracy
        if not detector or data.task != "detection":
            raise ConfigError(f"The model is a {'detector' if detector else 'classifier'} but data set "
                              f"'{data.name}' is a {data.task} set; evaluate it on the kind of data it was "
                              "trained on.")
        return evaluate_detector(model, data, teacher=teacher)
    workers = default_workers() if workers is None else workers
    teacher_logits = None
    if teacher is not None and data.num_test:
        teacher_logits = test_predictions(teacher, data, batch_size=batch_size, workers=workers)[0]
    metrics = evaluate_model(model, data, teacher_logits=teacher_logits, workers=workers, batch_size=batch_size)
    if data.task == "regression" and hasattr(data, "y_train"):
        metrics.update(regression_baseline(data, metrics))
    if sparse:
        size = Path(sparse_file).stat().st_size if sparse_file is not None else None
        metrics.update(sparse_metrics(model, size_bytes=size))
    return metrics


def regression_baseline(data: Any, metrics: dict[str, Any]) -> dict[str, float]:
    """The test MSE of always predicting the training mean, and R^2 against it."""
    y = data.y_test.double()
    baseline = torch.mean((y - data.y_train.double().mean()) ** 2).item()
    extra = {"mse_predict_mean": baseline}
    if baseline > 0 and "mse" in metrics:
        extra["r2_vs_mean"] = 1.0 - metrics["mse"] / baseline
    return extra
