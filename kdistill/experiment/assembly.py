"""From a config to a :class:`Run`: data, model, loss terms, objective, schedule and metadata.

:func:`build_run` turns a validated config into a :class:`Run`: the data, the
model (built after seeding), the training objective (for a distillation run the
:class:`~kdistill.distiller.Distiller` of the config's loss terms), the
schedule, the augmentation, the teacher cache, the checkpoint metadata and the
output folder. :func:`kdistill.experiment.execution.execute` trains it.
"""


import inspect
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from torch import nn

from kdistill import detection
from kdistill.compress.load import load_model
from kdistill.compress.variational import make_variational
from kdistill.config import AugmentConfig, ExperimentConfig, MethodConfig, ModelConfig, TrainConfig
from kdistill.data import DataSplits, input_spec
from kdistill.distiller import (
    Distiller,
    LossTerm,
    distiller_from_terms,
    replacement_note,
    resolve_terms,
    term_options,
)
from kdistill.errors import ConfigError
from kdistill.experiment.records import data_meta, load_data, model_spec
from kdistill.methods.variational import check_objective, supervised_objective, variational_methods
from kdistill.models import create_model
from kdistill.registry import MODELS
from kdistill.train import seed_everything
from kdistill.train.objective import TrainingObjective, regression_loss

log = logging.getLogger("kdistill")
loss_log = logging.getLogger("kdistill.loss")  # the resolved loss terms: shown by the CLI without -v

RunKind = Literal["teacher", "student", "distill"]
DEFAULT_OUT = object()  # out_dir not given: <output_dir>/<role>


@dataclass
class Run:
    """Everything one training run needs, assembled from a config by :func:`build_run`."""

    cfg: ExperimentConfig
    kind: RunKind
    role: str                      # "teacher" or "student": the section trained and saved
    data: DataSplits               # in the data's own units (fit standardises regression targets)
    model: nn.Module
    objective: TrainingObjective
    train: TrainConfig
    augment: AugmentConfig
    cache: str
    metadata: dict[str, Any]
    out_dir: Path | None
    teacher: nn.Module | None = None

    @property
    def description(self) -> str:
        return {"teacher": "train teacher", "student": "train student", "distill": "distil student"}[self.kind]


def build_model(model_cfg: ModelConfig, data: DataSplits, teacher: nn.Module | None = None) -> nn.Module:
    """Build a model; a student factory with a ``teacher_model`` parameter receives the teacher.

    Such a factory's ``init_from: FILE.safetensors`` names a checkpoint to initialise from instead:
    it is read here, because the model zoo sits below the checkpoint loader (which rebuilds models
    through the zoo), and handed over as ``teacher_model``.
    """
    options = dict(model_cfg.options)
    if "teacher_model" in inspect.signature(MODELS.get(model_cfg.model)).parameters:
        init_from = options.get("init_from")
        if isinstance(init_from, str) and init_from.endswith(".safetensors"):
            options["teacher_model"], _ = load_model(init_from)
        elif teacher is not None:
            options["teacher_model"] = teacher
    model = create_model(model_cfg.model, tuple(data.input_shape), data.num_classes, **options)
    if model_cfg.variational is not None:  # [variational] Bayesian Linear/Conv2d layers, same module paths
        v = model_cfg.variational
        model = make_variational(model, log_sigma2_init=v.init_log_sigma2, threshold=v.threshold)
    return model


def schedule(cfg: ExperimentConfig, role: str) -> TrainConfig:
    """The training schedule of ``role``: ``teacher_train`` (if given) for the teacher, else ``train``."""
    return cfg.teacher_train if role == "teacher" and cfg.teacher_train is not None else cfg.train


def augmentation(cfg: ExperimentConfig, role: str) -> AugmentConfig:
    return cfg.teacher_augment if role == "teacher" and cfg.teacher_augment is not None else cfg.data.augment


def loss_terms(cfg: ExperimentConfig, student: nn.Module | None = None) -> list[LossTerm]:
    """The distillation loss ``cfg`` asks for, as resolved terms (a variational student's KL term added)."""
    smoothing = schedule(cfg, "student").label_smoothing
    terms = resolve_terms(cfg.distill, label_smoothing=smoothing)
    if student is None:
        return terms
    listed = [MethodConfig(name=t.name, weight=t.weight, options=t.options) for t in terms]
    # [variational] the KL term added, or a listed one completed, from student.variational
    return [LossTerm(m.name, m.weight, term_options(m.name, m.options, cfg.distill.temperature, smoothing))
            for m in variational_methods(listed, cfg.student, student)]


def build_distiller(cfg: ExperimentConfig, teacher: nn.Module, student: nn.Module,
                    regression: bool = False) -> Distiller:
    """The config's :class:`Distiller` for this pair: the loss terms of :func:`loss_terms`."""
    terms = loss_terms(cfg, student)
    if regression:  # kd on one output is the MSE to the teacher's outputs: no temperature
        terms = [LossTerm("kd", t.weight) if t.name == "kd" else t for t in terms]
    if regression and any(t.options.get("label_smoothing") for t in terms if t.name == "ce"):
        raise ConfigError("train.label_smoothing smooths class labels; this data set has a numeric target, "
                          "so set it to 0.")
    distiller = distiller_from_terms(terms, teacher=teacher, student=student,
                                     task="regression" if regression else "classification",
                                     teacher_precision=cfg.distill.teacher_precision,
                                     student_loss_fn=regression_loss if regression else None)
    distiller.loss_terms = terms
    distiller.cache_top_k = cfg.distill.cache_top_k
    return distiller


def describe_terms(terms: list[LossTerm]) -> str:
    """``0.1 * ce + 0.9 * kd(temperature=4.0) + 100 * fitnets(stage1_epochs=3)``."""
    def one(t: LossTerm) -> str:
        options = ", ".join(f"{k}={v!r}" if isinstance(v, str) else f"{k}={v}" for k, v in t.options.items()
                            if not (k == "label_smoothing" and v == 0.0))
        return f"{t.weight:g} * {t.name}" + (f"({options})" if options else "")
    return " + ".join(one(t) for t in terms)


def build_run(
    cfg: ExperimentConfig,
    kind: RunKind = "student",
    *,
    data: DataSplits | None = None,
    teacher: nn.Module | None = None,
    model: nn.Module | None = None,
    out_dir: str | Path | None | object = DEFAULT_OUT,
    make_objective: Callable[[nn.Module], TrainingObjective] | None = None,
) -> Run:
    """Assemble one training run from ``cfg``.

    ``kind`` is ``"teacher"`` or ``"student"`` (that section trained on labels
    alone) or ``"distill"`` (the student taught by ``teacher``, which is
    required: :func:`run_distill` finds or trains it). ``model`` replaces the
    model the config would build (e.g. a pruned net to fine-tune);
    ``make_objective(model)`` replaces the objective (e.g. mutual learning).
    ``out_dir`` defaults to ``<output_dir>/<role>``; ``None`` writes nothing.

    Regression data trains on standardised targets; the model's output layer
    takes the scale back when the run ends (:mod:`kdistill.train.targets`, applied by ``fit``).
    """
    if kind not in ("teacher", "student", "distill"):
        raise ValueError(f"kind must be 'teacher', 'student' or 'distill', got {kind!r}")
    role = "teacher" if kind == "teacher" else "student"
    model_cfg = getattr(cfg, role)
    if model_cfg is None and model is None:
        raise ConfigError(f"The config has no '{role}' section; add one with at least 'model: NAME'.")
    if kind == "distill" and teacher is None:
        raise ValueError("build_run(kind='distill') needs the teacher module; run_distill() finds or trains it")
    data = data if data is not None else load_data(cfg)
    train_cfg, augment = schedule(cfg, role), augmentation(cfg, role)
    if model is None:
        seed_everything(train_cfg.seed)  # the initial weights follow the schedule's seed
        model = build_model(model_cfg, data, teacher)

    if make_objective is not None:
        objective = make_objective(model)
        check_objective(objective, model)  # [variational] its KL term must be in the loss
    elif _detection_run(data, model):  # [detection] box losses, AP for the best epoch
        objective = detection.build_objective(cfg, model, teacher if kind == "distill" else None)
    elif kind == "distill":
        objective = build_distiller(cfg, teacher, model, regression=data.task == "regression")
    else:
        objective = supervised_objective(model, model_cfg,  # [variational] + its KL term
                                         label_smoothing=train_cfg.label_smoothing, role=role)

    spec_cfg = model_cfg if model_cfg is not None else ModelConfig(model=type(model).__name__)
    metadata: dict[str, Any] = {"role": role, "model_spec": model_spec(spec_cfg, data, model),
                                "input_spec": input_spec(data).to_dict(),
                                "model_config": spec_cfg.model_dump(mode="json"), **data_meta(data)}
    if kind == "distill":
        metadata["distill"] = cfg.distill.model_dump(mode="json")
        terms = getattr(objective, "loss_terms", None)
        if terms is not None:
            metadata["loss_terms"] = [t.to_dict() for t in terms]
            loss_log.info("loss: %s", describe_terms(terms))
            note = replacement_note(cfg.distill)
            if note:
                log.warning(note)
    out = cfg.resolved_output_dir() / role if out_dir is DEFAULT_OUT else out_dir
    return Run(cfg=cfg, kind=kind, role=role, data=data, model=model,
               objective=objective, train=train_cfg, augment=augment,
               cache=cfg.distill.cache if kind == "distill" else "off", metadata=metadata,
               out_dir=Path(out) if out is not None else None, teacher=teacher)

def _detection_run(data: DataSplits, model: nn.Module) -> bool:
    """[detection] True when ``data`` is a detection set; a detector on any other data is a ConfigError."""
    if data.task == "detection":
        return True
    if detection.is_detector(model):
        raise ConfigError(f"{type(model).__name__} is an object detector, but data set '{data.name}' is a "
                          f"{data.task} set; detectors train on detection sets (canvas-mnist, "
                          "canvas-fashion-mnist, canvas-digits).")
    return False


def seeded(cfg: ExperimentConfig, seed: int) -> ExperimentConfig:
    """A copy of ``cfg`` with every training schedule's seed set to ``seed``."""
    new = cfg.model_copy(deep=True)
    new.train.seed = seed
    if new.teacher_train is not None:
        new.teacher_train.seed = seed
    return new
