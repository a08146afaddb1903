"""Romero et al. 2015, "FitNets: Hints for Thin Deep Nets" (ICLR).

A *guided* student layer learns to predict a *hint* teacher layer through a
small trainable regressor r (a 1x1 conv, or a linear layer for flat features)::

    L_HT = 1/2 * mean || r(F_s) - F_t ||^2

(the mean over elements instead of the paper's sum keeps the scale independent
of the feature size). The paper trains in two stages: first only the student
up to the guided layer plus r on L_HT, then the whole student with KD. Set
``stage1_epochs: N`` for that schedule: during the first N epochs the hint
loss alone trains the student; afterwards the usual losses join in.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from torch import Tensor, nn

from kdistill.errors import ConfigError
from kdistill.methods.base import StepContext
from kdistill.methods.features import FeaturePairMethod, make_adapter
from kdistill.registry import register_method

if TYPE_CHECKING:
    from kdistill.config import ExperimentConfig


@register_method("fitnets")
class FitNets(FeaturePairMethod):
    def __init__(self, student_layer: str | None = None, teacher_layer: str | None = None,
                 stage1_epochs: int = 0) -> None:
        super().__init__(student_layer, teacher_layer)
        if stage1_epochs < 0:
            raise ValueError("stage1_epochs must be >= 0")
        self.stage1_epochs = int(stage1_epochs)
        self.regressor: nn.Module | None = None

    @classmethod
    def check_config(cls, options: dict[str, Any], cfg: ExperimentConfig) -> None:
        stage1 = options.get("stage1_epochs", 0)
        if stage1 >= cfg.train.epochs:
            raise ConfigError(
                f"fitnets: stage1_epochs is {stage1} but the student trains {cfg.train.epochs} epochs, so the "
                "hint loss alone would train it for the whole run and the labels and soft targets would never "
                "be used. Set stage1_epochs below train.epochs (the paper's schedule: a hint stage, then KD).")

    def setup(self, student: nn.Module, teacher: nn.Module, sample: Tensor, num_train: int) -> None:
        if self.regressor is None:
            s, t = self.probe(student, teacher, sample)
            self.regressor = make_adapter(s.shape, t.shape)

    def exclusive(self, epoch: int) -> bool:
        return epoch < self.stage1_epochs

    def forward(self, ctx: StepContext) -> dict[str, Tensor]:
        s, t = self.features(ctx)
        if self.regressor is None:
            self.regressor = make_adapter(s.shape, t.shape).to(s.device)
        return {"fitnets": 0.5 * (self.regressor(s).float() - t.float()).pow(2).mean()}
