"""High-level calls behind the CLI: train a model, distil a student, evaluate a checkpoint.

Each function takes a validated :class:`~kdistill.config.ExperimentConfig`
and returns plain results, so everything the ``kdistill`` command does is one
documented Python call::

    from kdistill import load_config, run_distill
    result = run_distill(load_config("examples/digits-kd.yaml"))
    print(result.metrics["accuracy"])
"""

from __future__ import annotations

import inspect
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from kdistill import detection
from kdistill.config import ExperimentConfig, ModelConfig, TrainConfig
from kdistill.data import DataSplits
from kdistill.distiller import Distiller, Supervised, build_method
from kdistill.errors import ConfigError
from kdistill.eval import evaluate_model, predict
from kdistill.experiment.records import _data_meta, load_data, model_spec
from kdistill.experiment.saved import check_checkpoint_fits, load_model
from kdistill.models import create_model
from kdistill.registry import MODELS
from kdistill.train import fit, read_checkpoint, seed_everything
from kdistill.train.checkpoint import (
    atomic_write_text,
    is_torch_pickle,
    load_into,
    load_state_dict_into,
    load_torch_weights,
)
from kdistill.train.distributed import is_main_process

log = logging.getLogger("kdistill")


@dataclass
class RunResult:
    """A trained model, where it was saved, and its test metrics."""

    model: nn.Module
    metrics: dict[str, Any]
    checkpoint: Path | None = None
    history: list[dict[str, float]] = field(default_factory=list)
    seconds: float = 0.0


def build_model(model_cfg: ModelConfig, data: DataSplits, teacher: nn.Module | None = None) -> nn.Module:
    """Build a model; a student factory with a ``teacher_model`` parameter receives the teacher."""
    options = dict(model_cfg.options)
    if teacher is not None and "teacher_model" in inspect.signature(MODELS.get(model_cfg.model)).parameters:
        options["teacher_model"] = teacher
    return create_model(model_cfg.model, tuple(data.input_shape), data.num_classes, **options)


def train_model(
    cfg: ExperimentConfig,
    role: str = "student",
    *,
    data: DataSplits | None = None,
    out_dir: str | Path | None = None,
    resume: str | Path | None = None,
    train_cfg: TrainConfig | None = None,
) -> RunResult:
    """Train the config's ``teacher`` or ``student`` model on labels alone."""
    model_cfg = getattr(cfg, role)
    if model_cfg is None:
        raise ConfigError(f"The config has no '{role}' section; add one with at least 'model: NAME'.")
    data = data if data is not None else load_data(cfg)
    train_cfg = train_cfg or (cfg.teacher_train if role == "teacher" and cfg.teacher_train else cfg.train)
    out = Path(out_dir) if out_dir is not None else cfg.resolved_output_dir() / role
    seed_everything(train_cfg.seed)  # the initial weights follow train.seed too
    model = build_model(model_cfg, data)
    detecting = _detection_run(data, model)  # [detection] objective and metrics from kdistill.detection
    if detecting:
        objective = detection.build_objective(cfg, model)
    else:
        loss_fn = _regression_loss if data.num_classes == 0 else None
        objective = Supervised(model, loss_fn=loss_fn, label_smoothing=train_cfg.label_smoothing)
    meta = {"role": role, "model_spec": model_spec(model_cfg, data, model), **_data_meta(data)}
    augment = cfg.teacher_augment if role == "teacher" and cfg.teacher_augment else cfg.data.augment
    history = fit(objective, data, train_cfg, out_dir=out, resume=resume,
                  augment_jitter=augment.jitter, metadata=meta, description=f"train {role}")
    _load_best(model, history.best_path)
    metrics = detection.evaluate_detector(model, data) if detecting else evaluate_model(model, data, device=None)
    _write_metrics(out, metrics)
    return RunResult(model, metrics, history.best_path, history.epochs, history.seconds)


def get_teacher(cfg: ExperimentConfig, data: DataSplits, out_dir: Path) -> nn.Module:
    """Load the teacher from its checkpoint, or train it when none is given."""
    if cfg.teacher is None:
        raise ConfigError("Distillation needs a 'teacher' section (model, and optionally checkpoint).")
    if cfg.teacher.checkpoint and is_torch_pickle(cfg.teacher.checkpoint):
        # a plain PyTorch state dict: its architecture comes from the config
        teacher = build_model(cfg.teacher, data)
        load_state_dict_into(teacher, load_torch_weights(cfg.teacher.checkpoint), cfg.teacher.checkpoint)
        return teacher.eval()
    if cfg.teacher.checkpoint:
        teacher, meta = load_model(cfg.teacher.checkpoint)
        check_checkpoint_fits(meta, data, cfg.teacher.checkpoint)
        return teacher
    log.info("no teacher checkpoint given: training the teacher first")
    return train_model(cfg, "teacher", data=data, out_dir=out_dir / "teacher").model


def build_distiller(cfg: ExperimentConfig, teacher: nn.Module, student: nn.Module,
                    regression: bool = False) -> Distiller:
    d = cfg.distill
    methods = [(build_method(m.name, m.options, d.temperature), m.weight) for m in d.method_list()]
    student_loss = _regression_loss if regression else None
    return Distiller(teacher, student, student_loss_fn=student_loss, alpha=d.alpha, temperature=d.temperature,
                     methods=methods, teacher_precision=d.teacher_precision)


def _regression_loss(outputs, targets):
    return nn.functional.mse_loss(outputs.squeeze(-1), targets)


def run_distill(
    cfg: ExperimentConfig,
    *,
    data: DataSplits | None = None,
    teacher: nn.Module | None = None,
    out_dir: str | Path | None = None,
    resume: str | Path | None = None,
    student: nn.Module | None = None,
) -> RunResult:
    """Distil the config's student from its teacher and evaluate it on the test set.

    ``teacher`` / ``student`` replace the models the config would build (e.g. a
    teacher ensemble, or a student with noise hooks attached).
    """
    if cfg.student is None:
        raise ConfigError("Distillation needs a 'student' section with at least 'model: NAME'.")
    data = data if data is not None else load_data(cfg)
    if data.task == "detection":  # [detection] refuse classifier-only settings before training a teacher
        detection.check_config(cfg)
    out = Path(out_dir) if out_dir is not None else cfg.resolved_output_dir()
    teacher = teacher if teacher is not None else get_teacher(cfg, data, out)
    if student is None:
        seed_everything(cfg.train.seed)  # the initial weights follow train.seed too
        student = build_model(cfg.student, data, teacher)
    detecting = _detection_run(data, student)  # [detection]
    if detecting:
        distiller = detection.build_objective(cfg, student, teacher)
    else:
        distiller = build_distiller(cfg, teacher, student, regression=data.num_classes == 0)
    meta = {"role": "student", "model_spec": model_spec(cfg.student, data, student),
            "distill": cfg.distill.model_dump(mode="json"), **_data_meta(data)}
    history = fit(distiller, data, cfg.train, out_dir=out / "student", resume=resume,
                  augment_jitter=cfg.data.augment.jitter, cache_teacher=cfg.distill.cache,
                  metadata=meta, description="distil student")
    _load_best(student, history.best_path)
    if detecting:  # [detection]
        metrics = detection.evaluate_detector(student, data, teacher=teacher)
    else:
        teacher_logits = predict(teacher, data.x_test)
        metrics = evaluate_model(student, data, teacher_logits=teacher_logits)
    _write_metrics(out / "student", metrics)
    return RunResult(student, metrics, history.best_path, history.epochs, history.seconds)


def _detection_run(data: DataSplits, model: nn.Module) -> bool:
    """[detection] True when ``data`` is a detection set; a detector on any other data is a ConfigError."""
    if data.task == "detection":
        return True
    if detection.is_detector(model):
        raise ConfigError(f"{type(model).__name__} is an object detector, but data set '{data.name}' is a "
                          f"{data.task} set; detectors train on detection sets (canvas-mnist, "
                          "canvas-fashion-mnist, canvas-digits).")
    return False


def _load_best(model: nn.Module, best_path: Path | None) -> None:
    if best_path is not None and Path(best_path).exists():
        tensors, _ = read_checkpoint(best_path)
        load_into(model, tensors, "model", f"'{best_path}'")
    model.eval()


def _write_metrics(out: Path, metrics: dict[str, Any]) -> None:
    if not is_main_process():  # under torchrun only rank 0 writes results
        return
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "metrics.json", json.dumps(metrics, indent=2, default=float))


def seeded(cfg: ExperimentConfig, seed: int) -> ExperimentConfig:
    """A copy of ``cfg`` with every training schedule's seed set to ``seed``."""
    new = cfg.model_copy(deep=True)
    new.train.seed = seed
    if new.teacher_train is not None:
        new.teacher_train.seed = seed
    return new

