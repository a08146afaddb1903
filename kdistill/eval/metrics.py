"""Prediction quality and teacher-student fidelity.

Fidelity metrics follow Stanton et al. (2021), "Does Knowledge Distillation
Really Work?": *top-1 agreement* (how often the student's top class equals the
teacher's) and *predictive KL*, the mean over samples of
KL(p_teacher || p_student). A student can match its teacher's accuracy while
agreeing with it poorly, so both are reported next to accuracy.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kdistill.errors import ModelError


@torch.no_grad()
def predict(
    model: nn.Module,
    x: Tensor,
    batch_size: int = 1024,
    device: torch.device | str | None = None,
) -> Tensor:
    """Logits of ``model`` for every row of ``x``, computed in eval mode.

    Batches run on ``device`` (default: where the model's parameters are) and
    the logits come back on ``x``'s device. The model's train/eval mode is
    restored afterwards. ``no_grad`` rather than ``inference_mode`` so cached
    teacher logits can later enter autograd-tracked losses.
    """
    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    if device is None:
        first = next(model.parameters(), None)
        device = first.device if first is not None else x.device
    was_training = model.training
    model.eval()
    try:
        chunks = [
            model(x[i : i + batch_size].to(device)).to(x.device)
            for i in range(0, len(x), batch_size)
        ]
    finally:
        model.train(was_training)
    if not chunks:
        raise ValueError("predict() got an empty input")
    return torch.cat(chunks)


def accuracy(logits: Tensor, y: Tensor) -> float:
    """Fraction of rows whose arg-max logit equals the label."""
    n = _check_labels(logits, y)
    return (n - error_count(logits, y)) / n


def top5_accuracy(logits: Tensor, y: Tensor) -> float:
    """Fraction of rows whose label is among the five highest logits (ImageNet's top-5)."""
    n = _check_labels(logits, y)
    top = logits.topk(min(5, logits.shape[1]), dim=1).indices
    return (top == y.to(logits.device)[:, None]).any(dim=1).sum().item() / n


def error_count(logits: Tensor, y: Tensor) -> int:
    """Number of misclassified rows (Hinton et al. 2015 report MNIST results this way)."""
    _check_labels(logits, y)
    return int((logits.argmax(dim=1) != y.to(logits.device)).sum().item())


def top1_agreement(*, student_logits: Tensor, teacher_logits: Tensor) -> float:
    """Fraction of rows where student and teacher predict the same class (keyword arguments only)."""
    s, t = _pair(student_logits, teacher_logits)
    return (s.argmax(dim=1) == t.argmax(dim=1)).double().mean().item()


def predictive_kl(
    *, teacher_logits: Tensor, student_logits: Tensor, temperature: float = 1.0
) -> float:
    """Mean over rows of KL(softmax(t/T) || softmax(s/T)), in nats (keyword arguments only).

    KL is not symmetric, so swapping the two gives another number; the
    arguments are keywords so that no call can swap them unnoticed.

    Works in float64 on log-probabilities, so large logits neither overflow nor
    lose the small differences that a near-perfect student leaves.
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    s, t = _pair(student_logits, teacher_logits)
    log_p = F.log_softmax(t.double() / temperature, dim=1)
    log_q = F.log_softmax(s.double() / temperature, dim=1)
    p = log_p.exp()
    # Classes the teacher gives zero probability contribute 0, not 0 * inf = nan.
    terms = torch.where(p > 0, p * (log_p - log_q), torch.zeros_like(p))
    # Rounding can leave a tiny negative value for identical inputs.
    return max(0.0, terms.sum(dim=1).mean().item())


def _check_labels(logits: Tensor, y: Tensor) -> int:
    if logits.ndim != 2 or y.ndim != 1 or logits.shape[0] != y.shape[0]:
        raise ValueError(
            f"expected logits (N, C) and labels (N,), got {tuple(logits.shape)} "
            f"and {tuple(y.shape)}"
        )
    if logits.shape[0] == 0:
        raise ValueError("cannot score an empty batch")
    return logits.shape[0]


def _pair(student_logits: Tensor, teacher_logits: Tensor) -> tuple[Tensor, Tensor]:
    s, t = student_logits.detach(), teacher_logits.detach()
    if s.shape != t.shape or s.ndim != 2 or s.shape[0] == 0:
        raise ModelError(
            f"student and teacher outputs must both be non-empty (N, C) tensors of the same "
            f"shape, got {tuple(s.shape)} and {tuple(t.shape)}"
        )
    return s, t.to(s.device)
