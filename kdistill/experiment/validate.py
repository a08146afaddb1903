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
from pathlib import Path
from typing import Any

import torch
from torch import nn

from kdistill.config import ExperimentConfig, ModelConfig
from kdistill.data import DataSplits
from kdistill.errors import ConfigError, KDistillError
from kdistill.io import check_writable_dir
from kdistill.train.checkpoint import is_torch_pickle, read_checkpoint_metadata

log = logging.getLogger("kdistill")

# scheme options that list models (names or {model, options, checkpoint} mappings)
MEMBER_OPTIONS = {"multi-teacher": "teachers", "takd": "assistants", "dml": "peers"}


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


def validate_experiment(cfg: ExperimentConfig, data: DataSplits, *, scheme: str | None = None,
                        options: dict[str, Any] | None = None) -> None:
    """Raise a :class:`~kdistill.errors.KDistillError` for anything that would fail later in the run."""
    from kdistill.distiller import build_method

    options = options or {}
    if cfg.student is None:
        raise ConfigError("Distillation needs a 'student' section with at least 'model: NAME'.")
    if cfg.student.checkpoint:
        raise ConfigError("student.checkpoint is not read by kdistill distill or train: to continue a run use "
                          "--resume .../student/last.safetensors, and to score a saved student use "
                          "kdistill evaluate CHECKPOINT. Remove student.checkpoint.")
    for m in cfg.distill.method_list():
        build_method(m.name, m.options, cfg.distill.temperature)
    _check_fitnets_stages(cfg)
    if data.task == "detection":  # detectors: detection methods only, no classifier-output checks
        _validate_detection(cfg, data, scheme)
        return
    regression = data.task == "regression"
    if regression and scheme in {"dml", "multi-teacher"}:
        raise ConfigError(f"Scheme '{scheme}' mixes class distributions and cannot train a regressor "
                          "(the data set has a numeric target); use plain distillation or born-again.")
    if scheme == "dml":
        if cfg.teacher is not None and cfg.teacher.checkpoint:
            raise ConfigError("dml trains peers that teach each other, without a teacher: remove --teacher "
                              "(teacher.checkpoint) or choose another scheme.")
        meta_model(cfg.student, data, "student")
        for peer in member_configs(options.get("peers"), "dml: peers"):
            meta_model(peer, data, "dml peer")
        return
    if cfg.teacher is None:
        raise ConfigError("Distillation needs a 'teacher' section (model, and optionally checkpoint).")
    if scheme == "multi-teacher":
        members = member_configs(options.get("teachers"), "multi-teacher: teachers")
        if not members and cfg.teacher.checkpoint:
            raise ConfigError("multi-teacher builds its ensemble from options.teachers; with one teacher "
                              "checkpoint (--teacher) it would average two copies of the same model. List "
                              "the members: distill.scheme.options.teachers: [{checkpoint: A}, {model: B}].")
        teachers = [teacher_for_validation(m, data) for m in members or [cfg.teacher]]
        from kdistill.schemes.multi_teacher import TeacherEnsemble

        ensemble = TeacherEnsemble(teachers, temperature=cfg.distill.temperature) \
            if all(t is not None for t in teachers) else None
        check_pair(cfg, ensemble, meta_model(cfg.student, data, "student", ensemble), data)
        return
    teacher = teacher_for_validation(cfg.teacher, data)
    student = meta_model(cfg.student, data, "student", teacher)
    if scheme == "takd":
        chain = member_configs(options.get("assistants"), "takd: assistants")
        for assistant_cfg in chain:
            assistant = meta_model(assistant_cfg, data, "takd assistant")
            check_pair(cfg, teacher, assistant, data)
            teacher = assistant
    if scheme == "noisy-student" and float(options.get("dropout", 0.3)) > 0:
        meta_model(cfg.student.model_copy(update={"options": {**cfg.student.options, "dropout": 0.3}}),
                   data, "noisy student (with its dropout option)")
    check_pair(cfg, teacher, student, data)


def _validate_detection(cfg: ExperimentConfig, data: DataSplits, scheme: str | None) -> None:
    from kdistill.detection.objective import check_config, check_detector

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

    from kdistill.experiment.run import build_model
    from kdistill.registry import MODELS

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
    return meta_model(ModelConfig(model=name, options=spec.get("options") or {}), data, "teacher")


def check_pair(cfg: ExperimentConfig, teacher: nn.Module | None, student: nn.Module | None,
               data: DataSplits) -> None:
    """Bind the configured methods to this teacher and student: layer paths, shapes, adapters."""
    if teacher is None or student is None or not isinstance(data, DataSplits) or not len(data.x_train):
        return
    from kdistill.experiment.run import build_distiller

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


def _check_fitnets_stages(cfg: ExperimentConfig) -> None:
    for m in cfg.distill.method_list():
        stage1 = m.options.get("stage1_epochs", 0) if m.name == "fitnets" else 0
        if isinstance(stage1, int) and stage1 >= cfg.train.epochs:
            raise ConfigError(
                f"fitnets: stage1_epochs is {stage1} but the student trains {cfg.train.epochs} epochs, so the "
                "hint loss alone would train it for the whole run and the labels and soft targets would never "
                "be used. Set stage1_epochs below train.epochs (the paper's schedule: a hint stage, then KD).")
