"""The variational student's KL term (Hegde et al. 2019, "Variational Student: Learning Compact
and Sparser Networks in Knowledge Distillation Framework").

A student built with sparse variational dropout layers
(:mod:`kdistill.compress.variational`, Molchanov et al. 2017) is trained on the
evidence lower bound, whose data term is the distillation loss and whose
regulariser is the KL divergence of the weight posterior to the log-uniform
prior, spread over the ``N`` training samples as in the per-sample ELBO::

    loss = (1 - alpha) * CE(z_s, y) + alpha * T^2 * KL(p_t || p_s)          (Distiller)
         + kl_weight * a(epoch) * (1 / N) * sum_w KL(q(w) || p(w))          (this method)

    KL(q(w) || p(w)) ~= k1 - k1 * sigmoid(k2 + k3 * log alpha_w) + 0.5 * log(1 + 1 / alpha_w)
    a(epoch) = min(1, (epoch + 1) / anneal_epochs)    (1 when anneal_epochs = 0)

The linear warm-up ``a`` lets the student fit the soft targets before the
prior starts pushing weights to zero. The method returns
``{"variational_kl": <the weighted term>}``.

A config whose student has ``variational: {...}`` gets this method added
automatically (:func:`variational_methods`); listing ``variational`` for a
dense student is a :class:`~kdistill.errors.ConfigError`. Without a teacher,
:class:`VariationalSupervised` is :class:`~kdistill.distiller.Supervised` plus
the same term (what ``kdistill train --role student`` uses)::

    from kdistill.compress.variational import make_variational
    from kdistill.methods.variational import VariationalSupervised
    student = make_variational(create_model("mlp-medium", (1, 28, 28), 10))
    history = fit(VariationalSupervised(student, kl_weight=1.0, anneal_epochs=5), data, train_cfg)
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from torch import Tensor, nn

from kdistill.compress.variational import is_variational, kl_divergence
from kdistill.config import MethodConfig, ModelConfig
from kdistill.distiller import Supervised
from kdistill.errors import ConfigError
from kdistill.methods.base import DistillationMethod, StepContext
from kdistill.registry import register_method
from kdistill.train.objective import FitContext, LabelLoss, TrainingObjective

log = logging.getLogger("kdistill")

NAME = "variational"


def anneal_factor(epoch: int, anneal_epochs: int) -> float:
    """Linear warm-up of the KL weight: ``(epoch + 1) / anneal_epochs``, capped at 1."""
    if anneal_epochs <= 0:
        return 1.0
    return min(1.0, (epoch + 1) / anneal_epochs)


@register_method(NAME)
class VariationalKL(DistillationMethod):
    """The annealed, 1/N-scaled KL of a variational student's weights (see the module docstring)."""

    def __init__(self, kl_weight: float = 1.0, anneal_epochs: int = 5) -> None:
        super().__init__()
        if kl_weight < 0:
            raise ValueError(f"kl_weight must be non-negative, got {kl_weight}")
        if int(anneal_epochs) != anneal_epochs or anneal_epochs < 0:
            raise ValueError(f"anneal_epochs must be a whole number >= 0, got {anneal_epochs}")
        self.kl_weight = float(kl_weight)
        self.anneal_epochs = int(anneal_epochs)
        self.num_train: int | None = None
        # a plain attribute, not a submodule: the student's parameters belong to the student alone
        object.__setattr__(self, "_student", None)

    def bind(self, student: nn.Module, teacher: nn.Module | None = None) -> None:
        if not is_variational(student):
            raise ConfigError(
                "The 'variational' method adds the KL term of a variational student, but the student "
                f"({type(student).__name__}) has no variational layers. Set student.variational "
                "(e.g. variational: {threshold: 3.0}) in the config, or remove 'variational' from "
                "distill.methods.")
        object.__setattr__(self, "_student", student)

    def setup(self, student: nn.Module, teacher: nn.Module | None, sample: Tensor, num_train: int) -> None:
        if self._student is None:
            self.bind(student, teacher)
        self.num_train = int(num_train)

    def weight_at(self, epoch: int) -> float:
        """What multiplies ``sum KL / N`` in ``epoch``."""
        return self.kl_weight * anneal_factor(epoch, self.anneal_epochs)

    def term(self, epoch: int) -> Tensor:
        if self._student is None or not self.num_train:
            raise ConfigError("The 'variational' method was used before setup(): it needs the student "
                              "and the number of training samples (the Distiller and fit() provide both).")
        return self.weight_at(epoch) * kl_divergence(self._student) / self.num_train

    def forward(self, ctx: StepContext) -> dict[str, Tensor]:
        return {"variational_kl": self.term(ctx.epoch)}


class VariationalSupervised(TrainingObjective):
    """Training on labels alone for a variational model: cross-entropy (or ``loss_fn``) plus the KL term.

    :class:`~kdistill.distiller.Supervised` with the ELBO's regulariser:
    ``forward`` returns the data term under ``role`` (``student`` or
    ``teacher``), ``variational_kl`` and their sum as ``loss``.
    """

    def __init__(self, model: nn.Module, *, kl_weight: float = 1.0, anneal_epochs: int = 5,
                 loss_fn: Callable[[Tensor, Tensor], Tensor] | None = None, label_smoothing: float = 0.0,
                 role: str = "student") -> None:
        super().__init__()
        self.student = model
        self.role = role
        self.loss_fn = loss_fn or LabelLoss(label_smoothing)
        self.kl = VariationalKL(kl_weight, anneal_epochs)
        self.kl.bind(model)
        self.epoch = 0

    def prepare(self, x_train: Tensor, context: FitContext) -> None:
        self.kl.setup(self.kl._student, None, x_train[:2], context.num_train or len(x_train))

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def forward(self, inputs: Tensor, labels: Tensor, indices: Tensor | None = None) -> dict[str, Tensor]:
        data_term = self.loss_fn(self.student(inputs), labels)
        kl = self.kl.term(self.epoch)
        return {"loss": data_term + kl, self.role: data_term, "variational_kl": kl}


# ------------------------------------------------------------------ what a run adds


def method_options(model_cfg: ModelConfig | None) -> dict[str, Any]:
    """The method's options taken from ``model_cfg.variational`` (kl_weight, anneal_epochs)."""
    v = model_cfg.variational if model_cfg is not None else None
    return {} if v is None else {"kl_weight": v.kl_weight, "anneal_epochs": v.anneal_epochs}


def check_methods(methods: list[MethodConfig], model_cfg: ModelConfig | None) -> None:
    """Fail before any training when ``variational`` is listed for a dense student."""
    if any(m.name == NAME for m in methods) and (model_cfg is None or model_cfg.variational is None):
        raise ConfigError(
            "distill.methods lists 'variational' (the KL term of a variational student) but the "
            "student is not variational. Add student.variational, e.g. variational: {threshold: 3.0, "
            "kl_weight: 1.0, anneal_epochs: 5}, or remove 'variational' from distill.methods.")


def variational_methods(methods: list[MethodConfig], model_cfg: ModelConfig | None,
                        student: nn.Module) -> list[MethodConfig]:
    """``methods`` with the KL term added for a variational student that does not list it.

    A listed ``variational`` method keeps its own options; those it leaves out
    come from ``student.variational``. A dense student listing it raises
    :class:`~kdistill.errors.ConfigError`.
    """
    if not is_variational(student):
        check_methods(methods, model_cfg)
        return methods
    defaults = method_options(model_cfg)
    out = [m.model_copy(update={"options": {**defaults, **m.options}}) if m.name == NAME else m
           for m in methods]
    if not any(m.name == NAME for m in out):
        on_meta = any(p.is_meta for p in student.parameters())  # the config check before training
        (log.debug if on_meta else log.info)("the student is variational: adding the 'variational' KL term to the loss (%s)",
                 ", ".join(f"{k}={v}" for k, v in defaults.items()) or "default options")
        out.append(MethodConfig(name=NAME, options=defaults))
    return out


def supervised_objective(model: nn.Module, model_cfg: ModelConfig | None, **kwargs: Any) -> TrainingObjective:
    """:class:`~kdistill.distiller.Supervised`, or :class:`VariationalSupervised` for a variational model."""
    if model_cfg is None or model_cfg.variational is None or not is_variational(model):

        return Supervised(model, **kwargs)
    return VariationalSupervised(model, **method_options(model_cfg), **kwargs)


def check_objective(objective: nn.Module, model: nn.Module) -> None:
    """Refuse to train a variational model with an objective that leaves its KL term out.

    Without the term the noise is learnt but nothing pulls weights to zero, so
    the sparsified model would be silently denser than asked for.
    """
    if not is_variational(model):
        return
    methods = getattr(objective, "methods", None) or []
    if isinstance(objective, VariationalSupervised) or any(isinstance(m, VariationalKL) for m in methods):
        return
    raise ConfigError(
        f"This run trains a variational student with a {type(objective).__name__} objective, which has no "
        "place for the variational KL term (the prior that prunes the weights). Use plain distillation "
        "(kdistill distill), a scheme built on it (born-again, takd, multi-teacher, early-stop, "
        "noisy-student, transfer) or kdistill train; or remove student.variational.")
