"""Metrics on inputs small enough to check by hand."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from kdistill.errors import ModelError
from kdistill.eval import accuracy, error_count, predict, predictive_kl, top1_agreement


def test_accuracy_and_errors() -> None:
    logits = torch.tensor([[2.0, 1.0], [0.0, 3.0], [1.0, 0.0], [0.0, 1.0]])
    y = torch.tensor([0, 1, 1, 1])
    assert accuracy(logits, y) == 0.75
    assert error_count(logits, y) == 1
    assert isinstance(error_count(logits, y), int)


def test_label_shape_mismatch() -> None:
    with pytest.raises(ValueError):
        accuracy(torch.zeros(3, 2), torch.zeros(4, dtype=torch.long))


def test_top1_agreement() -> None:
    student = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
    teacher = torch.tensor([[5.0, 1.0], [0.0, 2.0], [3.0, 1.0], [0.0, 9.0]])
    assert top1_agreement(student_logits=student, teacher_logits=teacher) == 0.5


def test_kl_of_identical_logits_is_zero() -> None:
    logits = torch.randn(16, 10) * 20
    assert predictive_kl(teacher_logits=logits, student_logits=logits.clone()) == pytest.approx(0.0, abs=1e-12)


def test_kl_two_class_by_hand() -> None:
    # Teacher p = (0.8, 0.2), student q = (0.5, 0.5) on the first row; a second
    # identical row contributes 0, so the mean is half the first row's KL.
    teacher = torch.tensor([[math.log(0.8), math.log(0.2)], [0.0, 0.0]])
    student = torch.tensor([[0.0, 0.0], [0.0, 0.0]])
    expected = 0.5 * (0.8 * math.log(0.8 / 0.5) + 0.2 * math.log(0.2 / 0.5))
    assert predictive_kl(teacher_logits=teacher, student_logits=student) == pytest.approx(expected, abs=1e-6)


def test_kl_temperature_and_direction() -> None:
    teacher = torch.tensor([[2.0, 0.0]])
    student = torch.tensor([[0.0, 0.0]])
    p = 1.0 / (1.0 + math.exp(-1.0))  # softmax([2, 0] / 2)[0]
    expected = p * math.log(p / 0.5) + (1 - p) * math.log((1 - p) / 0.5)
    assert predictive_kl(teacher_logits=teacher, student_logits=student, temperature=2.0) == pytest.approx(expected, abs=1e-9)
    # KL is asymmetric: swapping the arguments gives a different number.
    assert predictive_kl(teacher_logits=student, student_logits=teacher) != pytest.approx(
        predictive_kl(teacher_logits=teacher, student_logits=student))


def test_kl_is_stable_for_huge_logits() -> None:
    teacher = torch.tensor([[1e4, 0.0, -1e4]])
    student = torch.tensor([[0.0, 1e4, -1e4]])
    value = predictive_kl(teacher_logits=teacher, student_logits=student)
    assert math.isfinite(value) and value == pytest.approx(1e4, rel=1e-6)
    teacher_inf = torch.tensor([[0.0, -math.inf]])
    assert predictive_kl(teacher_logits=teacher_inf, student_logits=torch.zeros(1, 2)) == pytest.approx(math.log(2))


def test_mismatched_teacher_raises_model_error() -> None:
    with pytest.raises(ModelError):
        top1_agreement(student_logits=torch.zeros(4, 10), teacher_logits=torch.zeros(4, 5))
    with pytest.raises(ModelError):
        predictive_kl(teacher_logits=torch.zeros(3, 10), student_logits=torch.zeros(4, 10))


def test_predict_batches_and_restores_mode() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.Dropout(0.5), nn.Linear(8, 3)).train()
    x = torch.randn(10, 4)
    out = predict(model, x, batch_size=3)
    assert model.training
    assert out.shape == (10, 3) and not out.requires_grad
    model.eval()
    with torch.no_grad():
        assert torch.allclose(out, model(x))
