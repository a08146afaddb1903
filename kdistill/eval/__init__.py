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
from kdistill.eval.metrics import (
    accuracy,
    error_count,
    predict,
    predictive_kl,
    top1_agreement,
    top5_accuracy,
)
from kdistill.workers import worker_errors_in_words

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
    "test_predictions",
    "time_calls",
    "top1_agreement",
    "top5_accuracy",
]

#: thread count of the batch-1 latency in reports: one thread is what a single request gets on a
#: busy server, and it does not swing with how many cores other work leaves free
LATENCY_THREADS = 1


@torch.no_grad()
def test_predictions(model: nn.Module, data: Any, device: torch.device | str | None = None,
                     batch_size: int = 256, workers: int = 0) -> tuple[Tensor, Tensor]:
    """``model``'s logits on the test split and its targets, both on the host.

    ``data`` holds the split whole (``x_test`` / ``y_test``) or as a map-style
    data set of ``(x, y)`` items (``data.test``), which is read batch by batch
    by ``workers`` DataLoader worker processes (0: in this process), forked
    once the heap's free pages are handed back; a data error in a worker is
    raised as its own message (:func:`~kdistill.workers.worker_errors_in_words`).
    """
    if hasattr(data, "x_test"):
        return predict(model, data.x_test, device=device), data.y_test
    from torch.utils.data import DataLoader

    if device is None:
        first = next(model.parameters(), None)
        device = first.device if first is not None else "cpu"
    n = len(data.test)
    if n == 0:
        raise ValueError("test_predictions() got an empty test split")
    was_training = model.training
    model.eval()
    logits = targets = None
    done = 0
    try:
        # Decoding in workers keeps the image library's allocations out of this process, and the results
        # go into two tensors allocated once: small per-batch tensors kept alive between a large
        # model's activations pin the C heap, which then grew with every batch after a training run
        # (docs/BENCHMARKS.md, streaming memory).
        loader = DataLoader(data.test, batch_size=batch_size, shuffle=False, num_workers=workers)
        for x, y in worker_errors_in_words(loader):
            x = x.float() if x.dtype == torch.float64 else x
            y = y.float() if y.dtype == torch.float64 else y
            out = model(x.to(device))
            if logits is None:
                logits = torch.empty((n, *out.shape[1:]), dtype=out.dtype)
                targets = torch.empty((n, *y.shape[1:]), dtype=y.dtype)
            logits[done:done + len(out)] = out
            targets[done:done + len(y)] = y
            done += len(out)
    finally:
        model.train(was_training)
    return logits, targets


def evaluate_model(
    model: nn.Module,
    data: Any,
    teacher_logits: Tensor | None = None,
    *,
    device: torch.device | str | None = None,
    latency: bool = True,
    latency_threads: int = LATENCY_THREADS,
    workers: int = 0,
    batch_size: int = 256,
) -> dict[str, Any]:
    """Score ``model`` on the test split of ``data`` (see :func:`test_predictions`).

    ``data`` is anything with ``x_test``, ``y_test`` and ``input_shape`` (a
    :class:`kdistill.data.DataSplits`), or ``test`` and ``input_shape`` (a
    :class:`kdistill.data.streaming.StreamSplits`). Returns ``accuracy``,
    ``top5_accuracy`` (with more than five classes), ``errors``,
    ``n_test``, ``params``, ``size_bytes``; unless ``latency=False``, the CPU
    latency of a batch of 1 (:func:`cpu_latency`: 5 warm-up passes, then the
    median of 30, with ``latency_threads`` torch threads, default 1, restored
    afterwards) as ``latency_ms`` with its spread ``latency_p10_ms`` /
    ``latency_p90_ms`` (10th / 90th percentile) and ``latency_threads``; and,
    given the teacher's test logits, ``agreement`` and ``kl`` (predictive KL
    at T=1, Stanton et al. 2021). ``workers`` read a streamed test split,
    ``batch_size`` samples at a time.

    For regression (floating-point ``y_test``) ``mse`` replaces ``accuracy``
    and ``errors``, and ``teacher_mse`` replaces ``agreement`` and ``kl``.
    """
    logits, y = test_predictions(model, data, device=device, batch_size=batch_size, workers=workers)
    result: dict[str, Any] = {"n_test": int(len(y))}
    if y.is_floating_point():
        out = logits.reshape(len(y), -1)[:, 0].double()
        result["mse"] = torch.mean((out - y.to(out.device).double()) ** 2).item()
    else:
        result["accuracy"] = accuracy(logits, y)
        result["errors"] = error_count(logits, y)
        if logits.shape[-1] > 5:  # with five classes or fewer it is always 1
            result["top5_accuracy"] = top5_accuracy(logits, y)
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
