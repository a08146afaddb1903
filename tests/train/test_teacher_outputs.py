"""Precomputed teacher outputs: Distiller(teacher_outputs=...) trains without ever running the teacher,
looks the outputs up by training-sample index (the validation hold-out included), and refuses outputs
that cannot stand in for the teacher."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from kdistill import Distiller, fit
from kdistill.config import TrainConfig
from kdistill.data import load_dataset
from kdistill.errors import ConfigError, ModelError
from kdistill.methods.fitnets import FitNets
from kdistill.models import create_model
from kdistill.train import seed_everything

SCHEDULE = TrainConfig(epochs=2, batch_size=32, val_fraction=0.25, seed=3, device="cpu", progress=False)


class RefusingTeacher(nn.Module):
    """A teacher that must never run."""

    def __init__(self) -> None:
        super().__init__()
        self.layer = nn.Linear(64, 10)

    def forward(self, x):
        raise AssertionError("the teacher ran although its outputs were given")


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits").subset(160, 40)


def student(digits):
    seed_everything(0)
    return create_model("mlp-simple", tuple(digits.input_shape), digits.num_classes, hidden=[16])


def teacher_of(digits):
    seed_everything(1)
    return create_model("mlp-simple", tuple(digits.input_shape), digits.num_classes).eval()


def test_the_teacher_never_runs(digits):
    outputs = torch.randn(digits.num_train, digits.num_classes)
    history = fit(Distiller(teacher=RefusingTeacher(), student=student(digits), teacher_outputs=outputs),
                  digits, SCHEDULE)
    assert len(history.epochs) == 2 and history.epochs[-1]["kd"] > 0


@pytest.mark.parametrize("loader", ["memory", "stream"])
def test_precomputed_outputs_train_as_the_live_teacher_does(digits, loader):
    teacher = teacher_of(digits)
    with torch.no_grad():
        outputs = teacher(digits.x_train)
    live = fit(Distiller(teacher=teacher, student=student(digits)), digits, SCHEDULE, cache_teacher=False,
               loader=loader, workers=0)
    given = fit(Distiller(teacher=RefusingTeacher(), student=student(digits), teacher_outputs=outputs),
                digits, SCHEDULE, loader=loader, workers=0)
    # the same rows reach the same batches: a wrong index (e.g. ignoring the hold-out) changes the kd term
    for a, b in zip(live.epochs, given.epochs, strict=True):
        assert b["kd"] == pytest.approx(a["kd"], rel=1e-4)
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-4)


def test_outputs_that_cannot_stand_in_for_the_teacher_are_refused(digits):
    rows = torch.randn(digits.num_train, digits.num_classes)
    with pytest.raises(ConfigError, match="has 160 samples"):
        fit(Distiller(teacher=RefusingTeacher(), student=student(digits), teacher_outputs=rows[:-1]),
            digits, SCHEDULE)
    with pytest.raises(ModelError, match="teacher_outputs has shape"):
        fit(Distiller(teacher=RefusingTeacher(), student=student(digits), teacher_outputs=rows[:, :5]),
            digits, SCHEDULE)
    with pytest.raises(ConfigError, match="augmentation"):
        fit(Distiller(teacher=RefusingTeacher(), student=student(digits), teacher_outputs=rows),
            digits, SCHEDULE, augment_jitter=1)
    with pytest.raises(ConfigError, match="floating-point tensor"):
        Distiller(teacher=RefusingTeacher(), student=student(digits), teacher_outputs=rows.argmax(1))
    with pytest.raises(ConfigError, match="hooked layers"):
        Distiller(teacher=teacher_of(digits), student=student(digits), teacher_outputs=rows,
                  methods=[(FitNets(), 1.0)])
