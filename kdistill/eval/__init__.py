"""Evaluation: prediction quality, teacher fidelity and deployment cost.

:func:`evaluate_model` gathers everything the reports need for one model.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from kdistill.eval.measure import (
    cpu_latency,
    format_bytes,
    latency_summary,
    parameter_count,
    size_on_disk,
    time_calls,
)
from kdistill.eval.metrics import accuracy, error_count, predict, predictive_kl, top1_agreement

__all__ = [
    "accuracy",
    "cpu_latency",
    "error_count",
    "evaluate_model",
    "format_bytes",
    "latency_summary",
    "parameter_count",
    "predict",
    "predictive_kl",
    "size_on_disk",
    "time_calls",
    "top1_agreement",
]

#: thread count of the batch-1 latency in reports: one thread is what a single request gets on a
#: busy server, and it does not swing with how many cores other work leaves free
LATENCY_THREADS = 1


def evaluate_model(
    model: nn.Module,
    data: Any,
    teacher_logits: Tensor | None = None,
    *,
    device: torch.device | str | None = None,
    latency: bool = True,
    latency_threads: int = LATENCY_THREADS,
) -> dict[str, Any]:
    """Score ``model`` on ``data.x_test`` / ``data.y_test``.

    ``data`` is anything with ``x_test``, ``y_test`` and ``input_shape`` (a
    :class:`kdistill.data.DataSplits`). Returns ``accuracy``, ``errors``,
    ``n_test``, ``params``, ``size_bytes``; unless ``latency=False``, the CPU
    latency of a batch of 1 (:func:`cpu_latency`: 5 warm-up passes, then the
    median of 30, with ``latency_threads`` torch threads, default 1, restored
    afterwards) as ``latency_ms`` with its spread ``latency_p10_ms`` /
    ``latency_p90_ms`` (10th / 90th percentile) and ``latency_threads``; and,
    given the teacher's test logits, ``agreement`` and ``kl`` (predictive KL
    at T=1, Stanton et al. 2021).

    For regression (floating-point ``y_test``) ``mse`` replaces ``accuracy``
    and ``errors``, and ``teacher_mse`` replaces ``agreement`` and ``kl``.
    """
    logits = predict(model, data.x_test, device=device)
    y = data.y_test
    result: dict[str, Any] = {"n_test": int(len(y))}
    if y.is_floating_point():
        out = logits.reshape(len(y), -1)[:, 0].double()
        result["mse"] = torch.mean((out - y.to(out.device).double()) ** 2).item()
    else:
        result["accuracy"] = accuracy(logits, y)
        result["errors"] = error_count(logits, y)
    result["params"] = parameter_count(model)
    result["size_bytes"] = size_on_disk(model)
    if latency:
        timing = cpu_latency(model, data.input_shape, batch_size=1, threads=latency_threads)
        result["latency_ms"] = timing["ms_per_sample"]
        result["latency_p10_ms"] = timing["p10_ms_per_sample"]
        result["latency_p90_ms"] = timing["p90_ms_per_sample"]
        result["latency_threads"] = int(timing["threads"])
    if teacher_logits is not None:
        if y.is_floating_point():
            diff = logits.double() - teacher_logits.to(logits.device).double()
            result["teacher_mse"] = torch.mean(diff**2).item()
        else:
            result["agreement"] = top1_agreement(student_logits=logits, teacher_logits=teacher_logits)
            result["kl"] = predictive_kl(teacher_logits=teacher_logits, student_logits=logits)
    return result
