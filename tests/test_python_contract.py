"""The Python contract of Distiller and the fidelity metrics, as docs/PYTHON_API.md states it."""

import math
from pathlib import Path

import pytest
import torch
from helpers import Fixed
from torch import nn

from kdistill.distiller import Distiller
from kdistill.eval import predictive_kl, top1_agreement

ROOT = Path(__file__).resolve().parents[1]
# the loss as both the docstring and docs/PYTHON_API.md write it
FORMULA = [
    "loss = (1 - alpha) * student_loss_fn(student_logits, labels)",
    "+ alpha * T**2 * distillation_loss_fn(log_softmax(student_logits / T), softmax(teacher_logits / T))",
]


def test_positional_models_are_refused():
    with pytest.raises(TypeError):
        Distiller(Fixed([2.0, 1.0]), Fixed([1.0, 2.0]))


def test_metrics_take_keywords_only():
    s, t = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]])
    with pytest.raises(TypeError):
        top1_agreement(s, t)
    with pytest.raises(TypeError):
        predictive_kl(t, s)
    # keywords in either order give the same number
    assert predictive_kl(student_logits=s, teacher_logits=t) == predictive_kl(teacher_logits=t, student_logits=s)
    assert top1_agreement(teacher_logits=t, student_logits=s) == 0.0


def test_documented_formula_matches_a_hand_computation():
    # student [1, 2], teacher [2, 1], label 0, T = 2, alpha = 0.3:
    #   p_s = softmax([0.5, 1.0]), p_t = softmax([1.0, 0.5])
    #   KL(p_t || p_s) = (p_t0 - p_s0) * 0.5;  CE = ln(1 + e)
    p_s0 = 1 / (1 + math.exp(0.5))
    kl = ((1 - p_s0) - p_s0) * 0.5
    ce = math.log(1 + math.e)
    alpha, t = 0.3, 2.0
    seen = {}

    def student_loss_fn(logits, labels):
        seen["student"] = (logits.detach().clone(), labels.clone())
        return nn.functional.cross_entropy(logits, labels)

    def distillation_loss_fn(log_p_student, p_teacher):
        seen["distill"] = (log_p_student.detach().clone(), p_teacher.clone())
        return nn.functional.kl_div(log_p_student, p_teacher, reduction="batchmean")

    distiller = Distiller(teacher=Fixed([2.0, 1.0]), student=Fixed([1.0, 2.0]), alpha=alpha, temperature=t,
                          student_loss_fn=student_loss_fn, distillation_loss_fn=distillation_loss_fn)
    out = distiller(torch.zeros(1, 3), torch.tensor([0]))
    assert out["loss"].item() == pytest.approx((1 - alpha) * ce + alpha * t * t * kl, abs=1e-6)
    assert out["student"].item() == pytest.approx(ce, abs=1e-6)  # unweighted
    assert out["kd"].item() == pytest.approx(t * t * kl, abs=1e-6)  # T^2-scaled, not alpha-weighted
    # student_loss_fn(student_logits, labels); distillation_loss_fn(student log-probs, teacher probs)
    logits, labels = seen["student"]
    assert torch.equal(logits, torch.tensor([[1.0, 2.0]])) and labels.tolist() == [0]
    log_p_s, p_t = seen["distill"]
    assert torch.allclose(log_p_s, torch.log_softmax(torch.tensor([[0.5, 1.0]]), -1))
    assert torch.allclose(p_t, torch.softmax(torch.tensor([[1.0, 0.5]]), -1))


@pytest.mark.parametrize("where", ["docstring", "docs/PYTHON_API.md"])
def test_the_formula_is_written_down_as_implemented(where):
    text = Distiller.__doc__ if where == "docstring" else (ROOT / where).read_text(encoding="utf-8")
    flat = " ".join(text.split())
    for line in FORMULA:
        assert line in flat, line
    assert "Keras" in flat
