"""One path from a config to a trained, evaluated model.

:func:`build_run` turns a validated config into a :class:`Run`: the data, the
model (built after seeding), the training objective, the schedule, the
augmentation, the teacher cache, the checkpoint metadata and the output
folder. :func:`execute` trains it with :func:`kdistill.train.fit`, loads the
best epoch and evaluates it. Every command uses these two calls:

=================  ==========================================================
caller             run
=================  ==========================================================
kdistill train     ``build_run(cfg, "teacher")`` / ``build_run(cfg, "student")``
kdistill distill   :func:`run_distill` -> ``build_run(cfg, "distill", teacher=...)``
schemes            the same, with their own teachers, students or objective (DML)
kdistill tune      ``build_run(trial_cfg, "distill", out_dir=None)`` per trial
demo and study     :func:`train_model` and :func:`run_distill`
=================  ==========================================================
"""

from __future__ import annotations

import inspect
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from kdistill import detection
from kdistill.compress.variational import finish_variational, make_variational
from kdistill.config import AugmentConfig, ExperimentConfig, ModelConfig, TrainConfig
from kdistill.data import DataSplits
from kdistill.data.augment import build_transform
from kdistill.distiller import Distiller, build_method
from kdistill.errors import CheckpointError, ConfigError
from kdistill.eval import evaluate_model, test_predictions
from kdistill.experiment.records import data_meta, load_data, model_spec
from kdistill.experiment.saved import check_checkpoint_fits, load_model
from kdistill.experiment.targets import (
    StandardisedOutputs,
    TargetScale,
    can_fold,
    fold,
    standardised,
)
from kdistill.methods.variational import (
    check_methods,
    check_objective,
    supervised_objective,
    variational_methods,
)
from kdistill.models import create_model
from kdistill.registry import MODELS
from kdistill.train import fit, read_checkpoint, seed_everything
from kdistill.train.checkpoint import (
    atomic_write_text,
    is_torch_pickle,
    load_into,
    load_state_dict_into,
    read_checkpoint_metadata,
    weights_prefix,
)
from kdistill.train.distributed import is_main_process
from kdistill.train.lock import folder_lock
from kdistill.train.objective import TrainingObjective

log = logging.getLogger("kdistill")

RunKind = Literal["teacher", "student", "distill"]
_DEFAULT_OUT = object()


@dataclass
class RunResult:
    """A trained model, where it was saved, and its test metrics."""

    model: nn.Module
    metrics: dict[str, Any]
    checkpoint: Path | None = None
    history: list[dict[str, float]] = field(default_factory=list)
    seconds: float = 0.0
    best_score: float = float("-inf")


@dataclass
class Run:
    """Everything one training run needs, assembled from a config by :func:`build_run`."""

    cfg: ExperimentConfig
    kind: RunKind
    role: str                      # "teacher" or "student": the section trained and saved
    data: DataSplits               # what the loop sees (standardised targets for regression)
    eval_data: DataSplits          # what the result is evaluated on (the data's own units)
    model: nn.Module
    objective: TrainingObjective
    train: TrainConfig
    augment: AugmentConfig
    cache: str
    metadata: dict[str, Any]
    out_dir: Path | None
    teacher: nn.Module | None = None
    target_scale: TargetScale | None = None

    @property
    def description(self) -> str:
        return {"teacher": "train teacher", "student": "train student", "distill": "distil student"}[self.kind]


def build_model(model_cfg: ModelConfig, data: DataSplits, teacher: nn.Module | None = None) -> nn.Module:
    """Build a model; a student factory with a ``teacher_model`` parameter receives the teacher."""
    options = dict(model_cfg.options)
    if teacher is not None and "teacher_model" in inspect.signature(MODELS.get(model_cfg.model)).parameters:
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


def _regression_loss(outputs, targets):
    return nn.functional.mse_loss(outputs.squeeze(-1), targets)


def build_distiller(cfg: ExperimentConfig, teacher: nn.Module, student: nn.Module,
                    regression: bool = False) -> Distiller:
    """The config's :class:`Distiller` for this pair (methods built from ``distill.methods``)."""
    d = cfg.distill
    method_cfgs = variational_methods(d.method_list(), cfg.student, student)  # [variational] KL term
    methods = [(build_method(m.name, m.options, d.temperature), m.weight) for m in method_cfgs]
    return Distiller(teacher=teacher, student=student, student_loss_fn=_regression_loss if regression else None,
                     alpha=d.alpha, temperature=d.temperature, methods=methods,
                     teacher_precision=d.teacher_precision,
                     task="regression" if regression else "classification")


def build_run(
    cfg: ExperimentConfig,
    kind: RunKind = "student",
    *,
    data: DataSplits | None = None,
    teacher: nn.Module | None = None,
    model: nn.Module | None = None,
    out_dir: str | Path | None | object = _DEFAULT_OUT,
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
    takes the scale back when the run ends (:mod:`kdistill.experiment.targets`).
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

    scale = None
    if data.task == "regression" and isinstance(data, DataSplits) and len(data.x_train):
        if can_fold(model, data.x_train[:2]):
            scale = TargetScale.of(data.y_train)
        else:
            log.warning("%s does not end in a one-output linear layer: regression targets are used "
                        "unstandardised", type(model).__name__)
    train_data = standardised(data, scale) if scale is not None else data
    teacher_view = StandardisedOutputs(teacher, scale) if teacher is not None and scale is not None else teacher

    if make_objective is not None:
        objective = make_objective(model)
        check_objective(objective, model)  # [variational] its KL term must be in the loss
    elif _detection_run(data, model):  # [detection] box losses, AP for the best epoch
        objective = detection.build_objective(cfg, model, teacher if kind == "distill" else None)
    elif kind == "distill":
        objective = build_distiller(cfg, teacher_view, model, regression=data.task == "regression")
    else:
        objective = supervised_objective(model, model_cfg,  # [variational] + its KL term
                                         loss_fn=_regression_loss if data.task == "regression" else None,
                                         label_smoothing=train_cfg.label_smoothing)

    spec_cfg = model_cfg if model_cfg is not None else ModelConfig(model=type(model).__name__)
    metadata: dict[str, Any] = {"role": role, "model_spec": model_spec(spec_cfg, data, model),
                                "model_config": spec_cfg.model_dump(mode="json"), **data_meta(data)}
    if kind == "distill":
        metadata["distill"] = cfg.distill.model_dump(mode="json")
    if scale is not None:
        metadata["target_scale"] = scale.to_dict()
    out = cfg.resolved_output_dir() / role if out_dir is _DEFAULT_OUT else out_dir
    return Run(cfg=cfg, kind=kind, role=role, data=train_data, eval_data=data, model=model,
               objective=objective, train=train_cfg, augment=augment,
               cache=cfg.distill.cache if kind == "distill" else "off", metadata=metadata,
               out_dir=Path(out) if out is not None else None, teacher=teacher, target_scale=scale)


def execute(
    run: Run,
    *,
    resume: str | Path | None = None,
    on_epoch_end: Callable[[int, dict[str, float]], None] | None = None,
    evaluate: bool = True,
) -> RunResult:
    """Train ``run``, load its best epoch, and (unless ``evaluate=False``) score it on the test split.

    The run folder is locked while training, so a second process writing the
    same folder is refused instead of interleaving checkpoints.
    """
    out = run.out_dir
    with folder_lock(out, "training") if out is not None and is_main_process() else _nothing():
        history = fit(run.objective, run.data, run.train, out_dir=out, resume=resume,
                      augment_jitter=run.augment.jitter, augment_flip=run.augment.flip,
                      cache_teacher=run.cache, metadata=run.metadata, description=run.description,
                      on_epoch_end=on_epoch_end, tracker=run.cfg.tracking if out is not None else None,
                      loader=run.cfg.data.loader, workers=run.cfg.data.workers,
                      transform=build_transform(run.augment.transforms, run.augment.timm, run.data.input_shape))
        _load_best(run.model, history.best_path)
        sparse = finish_variational(run.model, history.last_path, out, run.metadata)  # [variational]
        if sparse is not None:  # the last epoch, sparsified, saved as OUT/sparse.safetensors
            run.model = sparse.model
        if run.target_scale is not None:
            fold(run.model, run.target_scale)  # predictions in the data's own units from here on
        metrics: dict[str, Any] = {}
        if evaluate:
            metrics = {**evaluate_run(run), **(sparse.metrics if sparse else {})}
            if out is not None:
                _write_metrics(out, metrics)
    best = sparse.path if sparse is not None else history.best_path
    return RunResult(run.model, metrics, best, history.epochs, history.seconds,
                     best_score=history.best_score)


def evaluate_run(run: Run) -> dict[str, Any]:
    """Test metrics of the trained model, with fidelity to the teacher of a distillation run."""
    data = run.eval_data
    if data.task == "detection":  # [detection] COCO-style AP, fidelity AP50 to the teacher
        return detection.evaluate_detector(run.model, data, teacher=run.teacher)
    teacher_logits = test_predictions(run.teacher, data)[0] if run.teacher is not None and data.num_test else None
    metrics = evaluate_model(run.model, data, teacher_logits=teacher_logits)
    if data.task == "regression":
        metrics.update(regression_baseline(data, metrics))
    return metrics


def regression_baseline(data: DataSplits, metrics: dict[str, Any]) -> dict[str, float]:
    """The test MSE of always predicting the training mean, and R^2 against it."""
    y = data.y_test.double()
    baseline = torch.mean((y - data.y_train.double().mean()) ** 2).item()
    extra = {"mse_predict_mean": baseline}
    if baseline > 0 and "mse" in metrics:
        extra["r2_vs_mean"] = 1.0 - metrics["mse"] / baseline
    return extra


class _nothing:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


def train_model(
    cfg: ExperimentConfig,
    role: str = "student",
    *,
    data: DataSplits | None = None,
    out_dir: str | Path | None | object = _DEFAULT_OUT,
    resume: str | Path | None = None,
    train_cfg: TrainConfig | None = None,
) -> RunResult:
    """Train the config's ``teacher`` or ``student`` on labels alone (``out_dir``: its run folder)."""
    if role not in ("teacher", "student"):
        raise ConfigError(f"role must be 'teacher' or 'student', got {role!r}.")
    if train_cfg is not None:
        cfg = cfg.model_copy(deep=True)
        if role == "teacher":
            cfg.teacher_train = train_cfg
        else:
            cfg.train = train_cfg
    return execute(build_run(cfg, role, data=data, out_dir=out_dir), resume=resume)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- the teacher


def get_teacher(cfg: ExperimentConfig, data: DataSplits, out_dir: str | Path) -> nn.Module:
    """The teacher of a distillation run whose results go to ``out_dir``.

    In order: the configured checkpoint; the finished teacher an earlier run
    left in ``out_dir/teacher`` (same model, data and schedule); that run's
    unfinished teacher, resumed from its ``last.safetensors``; a new one.
    """
    if cfg.teacher is None:
        raise ConfigError("Distillation needs a 'teacher' section (model, and optionally checkpoint).")
    if cfg.teacher.checkpoint:
        return load_teacher_checkpoint(cfg.teacher, data)
    folder = Path(out_dir) / "teacher"
    state = teacher_state(cfg, data, folder)
    if state == "finished":
        log.info("reusing the finished teacher in %s", folder)
        return load_model(folder / "best.safetensors")[0]
    resume = folder / "last.safetensors" if state == "unfinished" else None
    if resume is not None:
        log.warning("resuming the unfinished teacher in %s", folder)
    elif state == "different":
        log.warning("the teacher in %s was trained with other settings; training a new one", folder)
    else:
        log.info("no teacher checkpoint given: training the teacher first")
    return train_model(cfg, "teacher", data=data, out_dir=folder, resume=resume).model


def load_teacher_checkpoint(teacher_cfg: ModelConfig, data: DataSplits) -> nn.Module:
    """A teacher from ``teacher.checkpoint``: a kdistill checkpoint or a plain PyTorch state dict."""
    path = teacher_cfg.checkpoint
    if is_torch_pickle(path):
        # a plain PyTorch state dict: its architecture comes from the config
        teacher = build_model(teacher_cfg, data)
        from kdistill.train.checkpoint import load_torch_weights

        load_state_dict_into(teacher, load_torch_weights(path), path)
        return teacher.eval()
    teacher, meta = load_model(path)
    check_checkpoint_fits(meta, data, path)
    saved = (meta.get("model_spec") or {}).get("model")
    if saved and teacher_cfg.model and saved != teacher_cfg.model:
        raise ConfigError(f"teacher.model is '{teacher_cfg.model}' but checkpoint '{path}' holds a "
                          f"'{saved}'; set teacher.model: {saved} (or point teacher.checkpoint at a "
                          f"{teacher_cfg.model} checkpoint).")
    return teacher


# settings that change how a run is executed or for how long, not what a finished epoch holds
_RUN_ONLY_KEYS = {"epochs", "progress", "device", "keep_epochs", "compile", "cuda_graphs", "patience"}


def _schedule_key(train: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in train.items() if k not in _RUN_ONLY_KEYS}


def _data_key(record: Any) -> Any:
    return {k: v for k, v in record.items() if k != "files"} if isinstance(record, dict) else record


def _same_settings(saved: Any, current: dict[str, Any], model: type) -> bool:
    """Whether a checkpoint's recorded section equals this config's; a key the older
    record lacks (a setting added since) counts at its default."""
    if not isinstance(saved, dict):
        return False
    defaults = {name: f.get_default(call_default_factory=True) for name, f in model.model_fields.items()
                if not f.is_required()}
    defaults = {k: v.model_dump(mode="json") if hasattr(v, "model_dump") else v for k, v in defaults.items()}
    return all(saved.get(k, defaults.get(k)) == current.get(k, defaults.get(k)) for k in {*saved, *current})


def teacher_state(cfg: ExperimentConfig, data: DataSplits, folder: Path) -> str:
    """What an earlier run left in ``folder``: ``"finished"``, ``"unfinished"``, ``"different"`` or ``"none"``.

    A teacher counts as the same when its model section, data record and
    schedule (all but the number of epochs and how it ran) equal this
    config's; it is finished when its last epoch is the schedule's last.
    """
    last = folder / "last.safetensors"
    if not last.is_file():
        return "none"
    try:
        meta = read_checkpoint_metadata(last)
    except CheckpointError:
        return "different"
    train = schedule(cfg, "teacher")
    same = (meta.get("role") == "teacher"
            and _same_settings(meta.get("model_config"), cfg.teacher.model_dump(mode="json"), ModelConfig)
            and _same_settings(_schedule_key(meta.get("train") or {}),
                               _schedule_key(train.model_dump(mode="json")), TrainConfig)
            and _data_key(meta.get("data")) == _data_key(data.source)
            and (meta.get("model_spec") or {}).get("num_classes") == data.num_classes)
    if not same:
        return "different"
    epoch = meta.get("epoch")
    done = isinstance(epoch, int) and (epoch + 1 >= train.epochs or bool(meta.get("stopped_early")))
    return "finished" if done and (folder / "best.safetensors").is_file() else "unfinished"


# --------------------------------------------------------------------------- distillation


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

    Results go to ``out_dir`` (default: the config's ``output_dir``): the
    teacher, if it is trained here, under ``teacher/``, the student under
    ``student/``. ``teacher`` / ``student`` replace the models the config would
    build (e.g. a teacher ensemble, or a student with noise hooks attached).
    """
    if cfg.student is None and student is None:
        raise ConfigError("Distillation needs a 'student' section with at least 'model: NAME'.")
    if student is None:
        check_methods(cfg.distill.method_list(), cfg.student)  # [variational] before the teacher trains
    data = data if data is not None else load_data(cfg)
    if data.task == "detection":  # [detection] refuse classifier-only settings before training a teacher
        detection.check_config(cfg)
    out = Path(out_dir) if out_dir is not None else cfg.resolved_output_dir()
    teacher = teacher if teacher is not None else get_teacher(cfg, data, out)
    run = build_run(cfg, "distill", data=data, teacher=teacher, model=student, out_dir=out / "student")
    return execute(run, resume=resume)


# --------------------------------------------------------------------------- helpers


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
        load_into(model, tensors, weights_prefix(tensors), f"'{best_path}'")
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
