"""The KD loss against values worked out by hand (Hinton et al. 2015)."""

import math

import pytest
import torch
from helpers import Fixed
from torch import nn

from kdistill.distiller import Distiller, Supervised
from kdistill.errors import ConfigError, ModelError

# student logits [1, 2], teacher [2, 1], T = 2, label 0:
#   p_s = softmax([0.5, 1.0]) = [0.3775406688, 0.6224593312]
#   p_t = softmax([1.0, 0.5]) = [0.6224593312, 0.3775406688]
#   KL(p_t || p_s) = (0.6224593312 - 0.3775406688) * 0.5 = 0.1224593312
#   T^2 * KL = 0.4898373248;  CE = ln(1 + e) = 1.3132616875
KL_T2 = 0.4898373248
CE = 1.3132616875


def make(alpha, temperature=2.0):
    return Distiller(teacher=Fixed([2.0, 1.0]), student=Fixed([1.0, 2.0]), alpha=alpha, temperature=temperature)


def test_kd_loss_matches_hand_computed_value():
    losses = make(alpha=0.5)(torch.zeros(1, 3), torch.tensor([0]))
    assert losses["kd"].item() == pytest.approx(KL_T2, abs=1e-6)
    assert losses["student"].item() == pytest.approx(CE, abs=1e-6)
    assert losses["loss"].item() == pytest.approx(0.5 * CE + 0.5 * KL_T2, abs=1e-6)


@pytest.mark.parametrize("alpha", [0.0, 0.25, 1.0])
def test_alpha_weights_the_two_terms(alpha):
    losses = make(alpha=alpha)(torch.zeros(1, 3), torch.tensor([0]))
    assert losses["loss"].item() == pytest.approx((1 - alpha) * CE + alpha * KL_T2, abs=1e-6)


def test_soft_target_gradient_is_rescaled_by_t_squared():
    # d(T^2 KL)/dz_s = T * (p_s - p_t): independent of the 1/T^2 shrinkage
    distiller = make(alpha=1.0, temperature=2.0)
    distiller(torch.zeros(1, 3), torch.tensor([0]))["loss"].backward()
    p_s0 = 1 / (1 + math.exp(0.5))
    expected = 2.0 * (p_s0 - (1 - p_s0))
    grad = distiller.student.logits.grad
    assert grad[0].item() == pytest.approx(expected, abs=1e-6)
    assert grad[1].item() == pytest.approx(-expected, abs=1e-6)


def test_teacher_is_frozen_and_stays_in_eval_mode():
    teacher = nn.Sequential(nn.Linear(3, 2), nn.Dropout(0.5))
    distiller = Distiller(teacher=teacher, student=nn.Linear(3, 2))
    distiller.train()
    assert not teacher.training
    assert all(not p.requires_grad for p in teacher.parameters())
    distiller(torch.randn(4, 3), torch.tensor([0, 1, 0, 1]))["loss"].backward()
    assert all(p.grad is None for p in teacher.parameters())


def test_shape_mismatch_is_a_model_error():
    distiller = Distiller(teacher=nn.Linear(3, 10), student=nn.Linear(3, 5))
    with pytest.raises(ModelError, match="10.*5"):
        distiller.check_compatible(torch.randn(2, 3))


def test_cached_teacher_gives_identical_losses():
    torch.manual_seed(0)
    x, y = torch.randn(8, 3), torch.randint(0, 2, (8,))
    live = Distiller(teacher=nn.Linear(3, 2), student=nn.Linear(3, 2))
    cached = Distiller(teacher=live.teacher, student=live.student)
    cached.cache_teacher(x)
    idx = torch.tensor([3, 1, 7])
    a, b = live(x[idx], y[idx], idx), cached(x[idx], y[idx], idx)
    assert torch.equal(a["loss"], b["loss"])


def test_invalid_alpha_and_temperature():
    with pytest.raises(ConfigError):
        make(alpha=1.5)
    with pytest.raises(ConfigError):
        make(alpha=0.5, temperature=0)


def test_supervised_objective_is_cross_entropy():
    model = Fixed([1.0, 2.0])
    losses = Supervised(model)(torch.zeros(1, 3), torch.tensor([0]))
    assert losses["loss"].item() == pytest.approx(CE, abs=1e-6)


def test_supervised_reads_its_task_for_the_loss_the_checks_and_the_validation_score():
    import torch
    from torch import nn

    from kdistill.distiller import Supervised
    from kdistill.task import Task
    from kdistill.train.objective import FitContext

    class Counting(Task):
        name = "counting"

        def prepare_model(self, model, sample, context):
            self.checked = tuple(sample.shape)

        def label_losses(self, model, inputs, labels):
            loss = (model(inputs).sum(1) - labels).abs().mean()
            return {"loss": loss, "count": loss}

        def validation_score(self, student, x, y):
            with torch.no_grad():
                return -float((student(x).sum(1) - y).abs().mean())

    torch.manual_seed(0)
    model = nn.Linear(3, 2)
    task = Counting()
    objective = Supervised(model, task=task)
    x, y = torch.randn(5, 3), torch.arange(5.0)
    objective.prepare(x, FitContext(device=torch.device("cpu")))
    assert task.checked == (2, 3)  # two training samples
    losses = objective(x, y)
    assert set(losses) == {"loss", "count"}
    torch.testing.assert_close(losses["loss"], (model(x).sum(1) - y).abs().mean())
    with torch.no_grad():
        assert objective.validation_score(x, y) == -float((model(x).sum(1) - y).abs().mean())
    # without a task: the label loss under the model's role, and accuracy
    plain = Supervised(model, role="teacher")
    labels = torch.tensor([0, 1, 1, 0, 1])
    out = plain(x, labels)
    assert set(out) == {"loss", "teacher"}
    torch.testing.assert_close(out["loss"], nn.functional.cross_entropy(model(x), labels))
    assert plain.validation_score(x, labels) == float((model(x).argmax(1) == labels).float().mean())
