"""Everything about a config that can be checked before the first training step.

A misspelled student, a method option its models cannot satisfy or a scheme
member that does not exist should be reported in seconds, not after the
teacher has trained for an hour. :func:`validate_experiment` builds every
model the run will build — on PyTorch's ``meta`` device, so no memory is
allocated and no weights are initialised for real — binds the configured
methods to each teaching pair (layer paths, feature shapes, adapters) and
checks the schedule, the checkpoints and the output folder.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from kdistill.compress.load import missing_model
from kdistill.config import ExperimentConfig, ModelConfig
from kdistill.data import DataSplits
from kdistill.detection.objective import check_config, check_detector
from kdistill.distiller import term_class
from kdistill.errors import CheckpointError, ConfigError, KDistillError, UnknownNameError
from kdistill.experiment.assembly import build_distiller, build_model, loss_terms
from kdistill.io import check_writable_dir
from kdistill.registry import MODELS
from kdistill.train.checkpoint import is_torch_pickle, read_checkpoint_metadata

log = logging.getLogger("kdistill")

def member_configs(values: list[Any] | None, what: str) -> list[ModelConfig]:
    """Scheme members as model sections; a malformed entry is a ConfigError naming it."""
    configs = []
    for i, value in enumerate(values or []):
        try:
            configs.append(ModelConfig(model=value) if isinstance(value, str) else ModelConfig.model_validate(value))
        except Exception as error:  # pydantic's ValidationError, or a non-mapping value
            raise ConfigError(f"{what}[{i}] = {str(value)[:80]!r} is not a model name or a mapping "
                              f"{{model: NAME, options: {{...}}, checkpoint: PATH}} ({str(error).splitlines()[0]}).") \
                from None
    return configs


SchemeCheck = Callable[[ExperimentConfig, DataSplits, dict[str, Any]], None]


def validate_experiment(cfg: ExperimentConfig, data: DataSplits, *, scheme: str | None = None,
                        options: dict[str, Any] | None = None, check_scheme: SchemeCheck | None = None) -> None:
    """Raise a :class:`~kdistill.errors.KDistillError` for anything that would fail later in the run.

    Every loss term's options are type-checked and passed to its
    ``check_config`` hook. ``check_scheme(cfg, data, options)`` is the
    scheme's own check (its options, with their defaults, and the models it
    will build); without one the config's teacher and student are checked as
    one distillation pair.
    """
    if cfg.student is None:
        raise ConfigError("Distillation needs a 'student' section with at least 'model: NAME'.")
    if cfg.student.checkpoint:
        raise ConfigError("student.checkpoint is not read by kdistill distill or train: to continue a run use "
                          "--resume .../student/last.safetensors, and to score a saved student use "
                          "kdistill evaluate CHECKPOINT. Remove student.checkpoint.")
    check_terms(cfg)
    if data.task == "detection":  # detectors: detection methods only, no classifier-output checks
        _validate_detection(cfg, data, scheme)
        return
    if check_scheme is not None:
        check_scheme(cfg, data, options or {})
    else:
        check_teacher_student(cfg, data)


def check_terms(cfg: ExperimentConfig) -> None:
    """Resolve the loss terms (names, option types) and run each term's own ``check_config`` hook."""

    for term in loss_terms(cfg):
        term_class(term.name).check_config(term.options, cfg)


def check_teacher_student(cfg: ExperimentConfig, data: DataSplits) -> tuple[nn.Module | None, nn.Module | None]:
    """The config's teacher and student built on the meta device and bound to the loss terms."""
    if cfg.teacher is None:
        raise ConfigError("Distillation needs a 'teacher' section (model, and optionally checkpoint).")
    teacher = teacher_for_validation(cfg.teacher, data)
    student = meta_model(cfg.student, data, "student", teacher)
    check_pair(cfg, teacher, student, data)
    return teacher, student


def _validate_detection(cfg: ExperimentConfig, data: DataSplits, scheme: str | None) -> None:

    if scheme is not None:
        raise ConfigError(f"Scheme '{scheme}' trains classifiers; a detector distils with kdistill distill and "
                          "a detection method (crosskd, pred-mimic, feat-imitation).")
    check_config(cfg)
    for role, model_cfg in (("student", cfg.student), ("teacher", cfg.teacher)):
        if model_cfg is not None and not (role == "teacher" and model_cfg.checkpoint):
            check_detector(meta_model(model_cfg, data, role), role)


def validate_output_dir(folder: str | Path) -> None:
    """Check that ``folder`` can be created and written, leaving nothing behind.

    The nearest existing ancestor must be a folder in which a scratch folder
    can be made (and removed again); anything else is an
    :class:`~kdistill.errors.OutputError` naming the path and the reason.
    """
    check_writable_dir(folder, "results folder")


def meta_model(model_cfg: ModelConfig, data: DataSplits, role: str,
               teacher: nn.Module | None = None) -> nn.Module | None:
    """Build ``model_cfg`` on the meta device (no memory); ``None`` if the model cannot be built there.

    ``teacher`` goes to student factories that take one (e.g. ``hf-distil``).
    """
    import inspect


    if teacher is None and "teacher_model" in inspect.signature(MODELS.get(model_cfg.model)).parameters:
        return None  # built from its teacher, which could not be checked here
    try:
        with torch.device("meta"):
            return build_model(model_cfg, data, teacher)
    except KDistillError:
        raise
    except Exception as error:  # a factory that reads files or real tensors; checked when it is built
        log.debug("could not check the %s on the meta device: %s", role, error)
        return None


def teacher_for_validation(teacher_cfg: ModelConfig, data: DataSplits) -> nn.Module | None:
    """The teacher's architecture on the meta device; a checkpoint is checked for existence and fit."""
    if not teacher_cfg.checkpoint:
        return meta_model(teacher_cfg, data, "teacher")
    path = Path(teacher_cfg.checkpoint)
    if is_torch_pickle(path):
        if not path.is_file():
            raise ConfigError(f"Teacher checkpoint '{path}' does not exist.")
        return meta_model(teacher_cfg, data, "teacher")
    meta = read_checkpoint_metadata(path)
    spec = meta.get("model_spec") or {}
    classes = spec.get("num_classes")
    if classes is not None and classes != data.num_classes:
        raise ConfigError(f"Checkpoint '{path}' predicts {classes} classes but data set '{data.name}' has "
                          f"{data.num_classes}.")
    name = spec.get("model")
    if name and teacher_cfg.model and name != teacher_cfg.model:
        raise ConfigError(f"teacher.model is '{teacher_cfg.model}' but checkpoint '{path}' holds a '{name}'; "
                          f"set teacher.model: {name} (or point teacher.checkpoint at a {teacher_cfg.model} "
                          "checkpoint).")
    if not name:
        return None
    try:
        MODELS.get(name)
    except UnknownNameError:
        raise CheckpointError(missing_model(path, spec)) from None
    return meta_model(ModelConfig(model=name, options=spec.get("options") or {}), data, "teacher")


def check_pair(cfg: ExperimentConfig, teacher: nn.Module | None, student: nn.Module | None,
               data: DataSplits) -> None:
    """Bind the configured methods to this teacher and student: layer paths, shapes, adapters."""
    if teacher is None or student is None or not isinstance(data, DataSplits) or not len(data.x_train):
        return

    try:
        with torch.device("meta"):
            distiller = build_distiller(cfg, teacher, student, regression=data.task == "regression")
            sample = data.x_train[:2].to("meta")
            distiller.check_compatible(sample)
            distiller.setup_methods(sample, len(data.x_train))
    except KDistillError:
        raise
    except Exception as error:  # an operation the meta device lacks; the real run checks again
        log.debug("could not check the methods on the meta device: %s", error)
