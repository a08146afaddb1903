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
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml
from torch import nn

from kdistill import detection
from kdistill.compress.export import export_model
from kdistill.compress.variational import finish_variational, make_variational
from kdistill.config import AugmentConfig, ExperimentConfig, MethodConfig, ModelConfig, TrainConfig
from kdistill.data import DataSplits, input_spec
from kdistill.data.augment import build_transform
from kdistill.distiller import (
    Distiller,
    LossTerm,
    distiller_from_terms,
    replacement_note,
    resolve_terms,
    term_options,
)
from kdistill.errors import CheckpointError, ConfigError, KDistillError, RunExistsError
from kdistill.experiment.evaluation import score_model
from kdistill.experiment.records import data_meta, load_data, model_spec
from kdistill.experiment.runs import notes, overwrite_allowed, recorded_run
from kdistill.experiment.saved import check_checkpoint_fits, load_model
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
from kdistill.train.objective import TrainingObjective, regression_loss
from kdistill.train.targets import fold
from kdistill.train.tracking import Experiment, Tracker, active_experiment, tracked

log = logging.getLogger("kdistill")
loss_log = logging.getLogger("kdistill.loss")  # the resolved loss terms: shown by the CLI without -v

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
    out = cfg.resolved_output_dir() / role if out_dir is _DEFAULT_OUT else out_dir
    return Run(cfg=cfg, kind=kind, role=role, data=data, model=model,
               objective=objective, train=train_cfg, augment=augment,
               cache=cfg.distill.cache if kind == "distill" else "off", metadata=metadata,
               out_dir=Path(out) if out is not None else None, teacher=teacher)


def execute(
    run: Run,
    *,
    resume: str | Path | None = None,
    on_epoch_end: Callable[[int, dict[str, float]], None] | None = None,
    evaluate: bool = True,
    tracker: Tracker | None = None,
) -> RunResult:
    """Train ``run``, load its best epoch, and (unless ``evaluate=False``) score it on the test split.

    The run folder is locked while training, so a second process writing the
    same folder is refused instead of interleaving checkpoints; it receives the
    resolved ``config.yaml`` and ``train.log`` (:mod:`kdistill.experiment.runs`). Epoch records go
    to ``tracker`` when one is given, else to the config's ``tracking`` writers
    in the run folder (a run written nowhere is tracked only through ``tracker``).
    """
    out = run.out_dir
    tracking = tracker if tracker is not None else run.cfg.tracking if out is not None else None
    writes = out is not None and is_main_process()
    with folder_lock(out, "training") if writes else _nothing(), \
            recorded_run(out, run.cfg, append=resume is not None) if writes else _nothing():
        history = fit(run.objective, run.data, run.train, out_dir=out, resume=resume,
                      augment_jitter=run.augment.jitter, augment_flip=run.augment.flip,
                      cache_teacher=run.cache, metadata=run.metadata, description=run.description,
                      on_epoch_end=on_epoch_end, tracker=tracking,
                      loader=run.cfg.data.loader, workers=run.cfg.data.workers,
                      transform=build_transform(run.augment.transforms, run.augment.timm, run.data.input_shape))
        # [regression] fit leaves the last epoch in the data's units; checkpoints hold standardised weights
        scale = history.target_scale
        reloaded = _load_best(run.model, history.best_path)
        metadata = dict(run.metadata, target_scale=scale.to_dict()) if scale is not None else run.metadata
        sparse = finish_variational(run.model, history.last_path, out, metadata)  # [variational]
        if sparse is not None:  # the last epoch, sparsified, saved as OUT/sparse.safetensors
            run.model = sparse.model
            reloaded = history.last_path is not None and Path(history.last_path).exists()
        if scale is not None and reloaded:
            fold(run.model, scale)  # predictions in the data's own units from here on
        metrics: dict[str, Any] = {}
        if evaluate:
            # the evaluation `kdistill evaluate` makes of the saved checkpoint
            metrics = score_model(run.model, run.data, run.teacher, sparse=sparse is not None,
                                  sparse_file=sparse.path if sparse is not None else None)
            if out is not None:
                _write_metrics(out, metrics)
    best = sparse.path if sparse is not None else history.best_path
    if out is not None and is_main_process():
        _track_result(run.role, metrics, best)
    return RunResult(run.model, metrics, best, history.epochs, history.seconds,
                     best_score=history.best_score)


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
    unfinished teacher, resumed from its ``last.safetensors``; a new one. A
    teacher trained there with other settings is refused with
    :class:`~kdistill.errors.RunExistsError` unless the command runs under
    :func:`~kdistill.experiment.runs.overwriting` (``--overwrite``).
    """
    if cfg.teacher is None:
        raise ConfigError("Distillation needs a 'teacher' section (model, and optionally checkpoint).")
    if cfg.teacher.checkpoint:
        return load_teacher_checkpoint(cfg.teacher, data)
    folder = Path(out_dir) / "teacher"
    state, difference = compare_teacher(cfg, data, folder)
    if state == "finished":
        notes.info("reusing the finished teacher in %s (same model, data and schedule)", folder)
        return load_model(folder / "best.safetensors")[0]
    resume = folder / "last.safetensors" if state == "unfinished" else None
    if resume is not None:
        notes.info("resuming the unfinished teacher in %s", folder)
    elif state == "different":
        if not overwrite_allowed():
            raise RunExistsError(
                f"'{folder}' holds a teacher that this config would not train: {difference}. kdistill never "
                "writes over a run: pass --overwrite to train a new teacher there, --output-dir (-o) "
                "NEW_FOLDER to keep both, or --teacher FOLDER/best.safetensors to distil from it as it is.",
                path=folder)
        log.warning("replacing the teacher in %s (--overwrite): %s", folder, difference)
    else:
        notes.info("no teacher checkpoint given: training the teacher first (%s)", folder)
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

    See :func:`compare_teacher`, which also says what differs.
    """
    return compare_teacher(cfg, data, folder)[0]


def compare_teacher(cfg: ExperimentConfig, data: DataSplits, folder: Path) -> tuple[str, str]:
    """:func:`teacher_state` and, for ``"different"``, which setting differs.

    A teacher counts as the same when its model section, data record and
    schedule (all but how it ran) equal this config's, the number of epochs
    included; it is finished when its last epoch is the schedule's last. A
    teacher that finished a shorter schedule is different, not unfinished:
    resuming it would stretch a finished schedule (its learning-rate decay
    already done) instead of training the configured one.
    """
    last = folder / "last.safetensors"
    if not last.is_file():
        return "none", ""
    try:
        meta = read_checkpoint_metadata(last)
    except CheckpointError as error:
        return "different", f"its checkpoint cannot be read ({error})"
    train = schedule(cfg, "teacher")
    saved_train = meta.get("train") if isinstance(meta.get("train"), dict) else {}
    section = "teacher_train" if cfg.teacher_train is not None else "train"
    if meta.get("role") != "teacher":
        return "different", f"it holds a {meta.get('role') or 'model'} run, not a teacher"
    if not _same_settings(meta.get("model_config"), cfg.teacher.model_dump(mode="json"), ModelConfig):
        return "different", "its teacher section (model or options) differs from this config's"
    if _data_key(meta.get("data")) != _data_key(data.source) or \
            (meta.get("model_spec") or {}).get("num_classes") != data.num_classes:
        return "different", "it was trained on other data (data set, options or limits)"
    if not _same_settings(_schedule_key(saved_train), _schedule_key(train.model_dump(mode="json")), TrainConfig):
        return "different", f"its schedule ({section}) differs from this config's in more than the epochs"
    epoch, epochs = meta.get("epoch"), saved_train.get("epochs", train.epochs)
    if epochs != train.epochs:
        done = isinstance(epoch, int) and isinstance(epochs, int) and epoch + 1 >= epochs
        ran = f"finished a {epochs}-epoch schedule" if done else f"stopped part-way through a {epochs}-epoch schedule"
        return "different", (f"it {ran}, and this config trains the teacher for {train.epochs} epochs "
                             f"({section}.epochs); a finished schedule is never stretched")
    done = isinstance(epoch, int) and (epoch + 1 >= train.epochs or bool(meta.get("stopped_early")))
    return ("finished" if done and (folder / "best.safetensors").is_file() else "unfinished"), ""


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
        # the terms' names and options, and [variational] the KL term's student, before the teacher trains
        check_methods([MethodConfig(name=t.name, weight=t.weight) for t in loss_terms(cfg)], cfg.student)
    data = data if data is not None else load_data(cfg)
    if data.task == "detection":  # [detection] refuse classifier-only settings before training a teacher
        detection.check_config(cfg)
    out = Path(out_dir) if out_dir is not None else cfg.resolved_output_dir()
    if resume is not None:
        check_resumable_student(cfg, data, out, resume, teacher_given=teacher is not None)
    teacher = teacher if teacher is not None else get_teacher(cfg, data, out)
    run = build_run(cfg, "distill", data=data, teacher=teacher, model=student, out_dir=out / "student")
    return execute(run, resume=resume)


def check_resumable_student(cfg: ExperimentConfig, data: DataSplits, out: Path, resume: str | Path,
                            teacher_given: bool = False) -> None:
    """Refuse a distillation resume whose student would continue under other data or a new teacher.

    A student checkpoint holds what it learnt from one teacher on one data set. Continuing it on
    other data, or under a teacher trained anew because its recorded settings no longer match
    this config, mixes two runs into one without a trace; both are refused before anything trains.
    """
    meta = read_checkpoint_metadata(resume)
    saved = meta.get("data")
    if isinstance(saved, dict) and data.source is not None and _data_key(saved) != _data_key(data.source):
        changes = sorted(k for k in set(_data_key(saved)) | set(_data_key(data.source))
                         if _data_key(saved).get(k) != _data_key(data.source).get(k))
        raise ConfigError(
            f"--resume '{resume}': that student was trained on other data than this config loads "
            f"(data record differs in: {', '.join(changes)}; the checkpoint has {_data_key(saved)!r}, this "
            f"config {_data_key(data.source)!r}). Continuing it would train on other data, and its teacher "
            "would be retrained on that data under the half-trained student. Resume with the data settings "
            "that wrote the checkpoint, or start a new run without --resume.")
    if teacher_given or cfg.teacher is None or cfg.teacher.checkpoint:
        return
    folder = out / "teacher"
    if teacher_state(cfg, data, folder) == "different":
        raise ConfigError(
            f"--resume '{resume}': the teacher in {folder} was trained with other settings than this config's "
            "teacher, teacher_train (or train) schedule and data, so a new teacher would be trained under the "
            "half-trained student. Resume with the settings that trained the teacher, name it with "
            "teacher.checkpoint, or start a new run without --resume.")


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


def _load_best(model: nn.Module, best_path: Path | None) -> bool:
    """Load the best epoch's weights into ``model`` (eval mode); whether there was one to load."""
    loaded = best_path is not None and Path(best_path).exists()
    if loaded:
        tensors, meta = read_checkpoint(best_path)
        load_into(model, tensors, weights_prefix(tensors, meta), f"'{best_path}'")
    model.eval()
    return loaded


def _track_result(role: str, metrics: dict[str, Any], best: Path | None) -> None:
    """The tracked experiment's record of a finished run: its test metrics and its exported model."""
    experiment = active_experiment()
    if experiment is None:
        return
    experiment.log_results(role, metrics)
    if best is not None and experiment.keeps_artifacts:
        with tempfile.TemporaryDirectory(prefix="kdistill-export-") as folder:
            try:
                exported = export_model(best, "safetensors", Path(folder) / "model.safetensors").path
            except (KDistillError, RuntimeError) as error:  # e.g. tied weights safetensors cannot store twice
                log.warning("the %s's model was not logged to MLflow: %s", role, error)
                return
            experiment.log_artifact(role, exported)


@contextmanager
def tracked_invocation(cfg: ExperimentConfig, command: str) -> Iterator[Experiment]:
    """Track one command on ``cfg`` as one experiment (see :class:`~kdistill.train.tracking.Experiment`).

    The parent run is named ``COMMAND NAME`` and holds the resolved config
    (as params and as ``config.yaml``); its files go under ``tracking.dir``
    or the config's output folder. Under ``torchrun`` only rank 0 tracks.
    """
    tracking = cfg.tracking if is_main_process() else None
    config = cfg.model_dump(mode="json")
    with tracked(tracking, cfg.resolved_output_dir(), name=f"{command} {cfg.name}", params=config,
                 config_text=yaml.safe_dump(config, sort_keys=False)) as experiment:
        yield experiment


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
