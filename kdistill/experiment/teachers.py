"""Teacher reuse: find, resume or train the teacher of a distillation run.

:func:`get_teacher` takes the configured checkpoint, or the teacher an earlier
run left in the output folder when its model, data and schedule equal the
config's (:func:`compare_teacher`), or trains one; :func:`check_resumable_student`
refuses a resumed student whose teacher or data would change under it.
"""


import logging
from pathlib import Path
from typing import Any

from torch import nn

from kdistill.compress.load import load_model
from kdistill.config import ExperimentConfig, ModelConfig, TrainConfig
from kdistill.data import DataSplits
from kdistill.errors import CheckpointError, ConfigError, RunExistsError
from kdistill.experiment.assembly import build_model, schedule
from kdistill.experiment.execution import train_model
from kdistill.experiment.runs import notes, overwrite_allowed
from kdistill.experiment.saved import check_checkpoint_fits
from kdistill.train.checkpoint import (
    is_torch_pickle,
    load_state_dict_into,
    load_torch_weights,
    read_checkpoint_metadata,
)

log = logging.getLogger("kdistill")


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
