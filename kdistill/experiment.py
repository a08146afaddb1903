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

from kdistill.config import DataConfig, ExperimentConfig, ModelConfig, TrainConfig
from kdistill.data import DataSplits, available_datasets, load_dataset
from kdistill.distiller import Distiller, Supervised, build_method
from kdistill.errors import CheckpointError, ConfigError, DataError
from kdistill.eval import evaluate_model, predict
from kdistill.models import create_model
from kdistill.registry import MODELS
from kdistill.train import fit, read_checkpoint, seed_everything
from kdistill.train.checkpoint import (
    atomic_write_text,
    is_torch_pickle,
    load_into,
    load_state_dict_into,
    load_torch_weights,
    read_checkpoint_metadata,
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


def load_data(cfg: ExperimentConfig) -> DataSplits:
    """Load the configured data set, cut to ``limit_train`` / ``limit_test`` if set."""
    d = cfg.data
    data = load_dataset(d.dataset, data_dir=d.data_dir, download=d.download, **d.options)
    if d.limit_train or d.limit_test:
        data = data.subset(d.limit_train, d.limit_test)
    data.source = data_record(d)
    return data


# option names that hold a file or folder: only these are made absolute, so a value
# such as test_split="dev" is never mistaken for a path that happens to exist
_PATH_WORDS = ("path", "dir", "file", "folder", "root", "tokenizer")


def _is_path_option(key: str) -> bool:
    return any(key == word or key.endswith(f"_{word}") for word in _PATH_WORDS)


def data_record(d: DataConfig) -> dict[str, Any]:
    """What reloads a config's data set later: its name, loader options and ``data_dir``.

    Relative paths become absolute (resolved as the loader resolves them: under
    ``data_dir`` first, then from the working folder), and the options naming
    local files are listed under ``files`` so a reader can tell a moved file
    from a bad option. Checkpoints store this record under ``data``.
    """
    data_dir = str(Path(d.data_dir).expanduser().resolve()) if d.data_dir else None
    options: dict[str, Any] = {}
    files: list[str] = []
    for key, value in d.options.items():
        if isinstance(value, str) and value and _is_path_option(key):
            path = Path(value).expanduser()
            under = Path(data_dir) / path if data_dir and not path.is_absolute() else None
            local = under if under is not None and under.exists() else path
            if local.exists():
                value = str(local.resolve())
                files.append(key)
        options[key] = value
    return {"dataset": d.dataset, "options": options, "data_dir": data_dir,
            "download": d.download, "files": files}


def evaluation_data(
    checkpoint: str | Path,
    *,
    dataset: str | None = None,
    data_dir: str | Path | None = None,
    options: dict[str, Any] | None = None,
) -> DataSplits:
    """The data to evaluate a saved model on: by default the data set it was trained on.

    A checkpoint records its config's data set and loader options (see
    :func:`data_record`); they are reused, with ``options`` overriding single
    options (e.g. ``{"path": "moved/reviews.csv"}``) and ``data_dir`` replacing
    the recorded folder (a recorded file that has gone is also looked for by
    name there). ``dataset`` ignores the record and loads that data set
    with ``options`` alone. Checkpoints written before the record existed fall
    back to the data set name in their ``model_spec``. A recorded file that no
    longer exists, or an old checkpoint whose data set cannot be reloaded by
    name, raises :class:`~kdistill.errors.DataError` saying what to pass.
    """
    options = dict(options or {})
    if dataset is not None:
        return load_dataset(dataset, data_dir=data_dir, **options)
    meta = read_checkpoint_metadata(checkpoint)
    record = meta.get("data")
    if isinstance(record, dict) and record.get("dataset"):
        merged = {**record.get("options", {}), **options}
        gone = []
        for key in record.get("files", []):
            if key in options or Path(str(merged[key])).exists():
                continue
            # a data folder that moved as a whole: its files are found by name under data_dir
            moved = Path(data_dir) / Path(str(merged[key])).name if data_dir is not None else None
            if moved is not None and moved.exists():
                merged[key] = str(moved)
            else:
                gone.append(f"{key}={merged[key]}")
        if gone:
            raise DataError(
                f"Checkpoint '{checkpoint}' was trained on data set '{record['dataset']}' read from "
                f"{', '.join(gone)}, which no longer exist{'s' if len(gone) == 1 else ''}. Point to the file's new place with "
                f"--data-option {gone[0].split('=', 1)[0]}=NEW_PATH (options={{...}} in Python) or, if "
                "the whole folder moved, --data-dir NEW_FOLDER; or evaluate on another data set with "
                "--dataset NAME and --data-dir DIR."
            )
        folder = data_dir if data_dir is not None else record.get("data_dir")
        return load_dataset(record["dataset"], data_dir=folder, download=record.get("download", True),
                            **merged)
    name = meta.get("model_spec", {}).get("dataset", "digits")
    if name not in available_datasets():
        raise DataError(
            f"Checkpoint '{checkpoint}' does not record how to reload its data set (it names only "
            f"'{name}', which is no registered data set; checkpoints from older kdistill versions "
            "keep just this name). Pass --dataset NAME and, if its files are elsewhere, --data-dir "
            "DIR (and --data-option KEY=VALUE for loader options such as path)."
        )
    return load_dataset(name, data_dir=data_dir, **options)


def model_spec(model_cfg: ModelConfig, data: DataSplits, model: nn.Module | None = None) -> dict[str, Any]:
    # a model may resolve its options (e.g. a pretrained folder into the config it read) so a
    # checkpoint rebuilds the architecture without the files it was first built from
    options = getattr(model, "rebuild_options", None) or model_cfg.options
    return {
        "model": model_cfg.model,
        "options": options,
        "input_shape": list(data.input_shape),
        "num_classes": data.num_classes,
        "dataset": data.name,
    }


def _data_meta(data: DataSplits) -> dict[str, Any]:
    # only data loaded from a config knows how to reload itself; other data adds no record
    return {"data": data.source} if data.source is not None else {}


def build_model(model_cfg: ModelConfig, data: DataSplits, teacher: nn.Module | None = None) -> nn.Module:
    """Build a model; a student factory with a ``teacher_model`` parameter receives the teacher."""
    options = dict(model_cfg.options)
    if teacher is not None and "teacher_model" in inspect.signature(MODELS.get(model_cfg.model)).parameters:
        options["teacher_model"] = teacher
    return create_model(model_cfg.model, tuple(data.input_shape), data.num_classes, **options)


def load_model(checkpoint: str | Path) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild a model from a kdistill checkpoint (architecture from its metadata)."""
    tensors, meta = read_checkpoint(checkpoint)
    spec = meta.get("model_spec")
    if not spec:
        raise CheckpointError(
            f"Checkpoint '{checkpoint}' does not record which model it holds; load it into your "
            "own module with kdistill.train.checkpoint.load_into()."
        )
    model = create_model(spec["model"], tuple(spec["input_shape"]), spec["num_classes"], **spec.get("options", {}))
    load_into(model, tensors, "model", f"'{checkpoint}'")
    model.eval()
    return model, meta


def _check_checkpoint_fits(meta: dict[str, Any], data: DataSplits, path: str | Path) -> None:
    spec = meta.get("model_spec", {})
    if spec and spec.get("num_classes") != data.num_classes:
        raise ConfigError(
            f"Checkpoint '{path}' predicts {spec.get('num_classes')} classes but data set "
            f"'{data.name}' has {data.num_classes}."
        )


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
    loss_fn = _regression_loss if data.num_classes == 0 else None
    objective = Supervised(model, loss_fn=loss_fn, label_smoothing=train_cfg.label_smoothing)
    meta = {"role": role, "model_spec": model_spec(model_cfg, data, model), **_data_meta(data)}
    augment = cfg.teacher_augment if role == "teacher" and cfg.teacher_augment else cfg.data.augment
    history = fit(objective, data, train_cfg, out_dir=out, resume=resume,
                  augment_jitter=augment.jitter, metadata=meta, description=f"train {role}")
    _load_best(model, history.best_path)
    metrics = evaluate_model(model, data, device=None)
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
        _check_checkpoint_fits(meta, data, cfg.teacher.checkpoint)
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
    out = Path(out_dir) if out_dir is not None else cfg.resolved_output_dir()
    teacher = teacher if teacher is not None else get_teacher(cfg, data, out)
    if student is None:
        seed_everything(cfg.train.seed)  # the initial weights follow train.seed too
        student = build_model(cfg.student, data, teacher)
    distiller = build_distiller(cfg, teacher, student, regression=data.num_classes == 0)
    meta = {"role": "student", "model_spec": model_spec(cfg.student, data, student),
            "distill": cfg.distill.model_dump(mode="json"), **_data_meta(data)}
    history = fit(distiller, data, cfg.train, out_dir=out / "student", resume=resume,
                  augment_jitter=cfg.data.augment.jitter, cache_teacher=cfg.distill.cache,
                  metadata=meta, description="distil student")
    _load_best(student, history.best_path)
    teacher_logits = predict(teacher, data.x_test)
    metrics = evaluate_model(student, data, teacher_logits=teacher_logits)
    _write_metrics(out / "student", metrics)
    return RunResult(student, metrics, history.best_path, history.epochs, history.seconds)


def evaluate_checkpoint(checkpoint: str | Path, data: DataSplits,
                        teacher_checkpoint: str | Path | None = None) -> dict[str, Any]:
    """Test-set metrics of a saved model, with fidelity to a teacher if one is given."""
    model, meta = load_model(checkpoint)
    _check_checkpoint_fits(meta, data, checkpoint)
    teacher_logits = None
    if teacher_checkpoint is not None:
        teacher, teacher_meta = load_model(teacher_checkpoint)
        _check_checkpoint_fits(teacher_meta, data, teacher_checkpoint)
        teacher_logits = predict(teacher, data.x_test)
    return evaluate_model(model, data, teacher_logits=teacher_logits)


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

