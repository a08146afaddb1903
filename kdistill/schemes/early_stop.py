"""Distil from an early-stopped teacher (Cho & Hariharan 2019, "On the Efficacy of Knowledge Distillation", ICCV).

A fully trained, very accurate teacher can be a worse teacher than the same
network stopped early, whose softer outputs are easier for a small student to
match. This scheme trains the teacher keeping every epoch's checkpoint
(``teacher/epoch-XXX.safetensors``, ``train.keep_epochs``) and distils from
epoch ``teacher_epoch`` (0-based). With ``teacher_dir`` it reuses a folder of
such checkpoints from an earlier run instead of training.
"""

from __future__ import annotations

import logging
from pathlib import Path

from kdistill.config import ExperimentConfig
from kdistill.data import DataSplits
from kdistill.errors import CheckpointError, ConfigError
from kdistill.experiment import RunResult, load_model, run_distill, train_model
from kdistill.experiment.teachers import teacher_state
from kdistill.schemes._common import prepare, write_summary
from kdistill.schemes.registry import register_scheme

log = logging.getLogger("kdistill")


@register_scheme("early-stop")
def run_early_stopped_teacher(cfg: ExperimentConfig, *, data: DataSplits | None = None,
                              out_dir: str | Path | None = None, teacher_epoch: int = 0,
                              teacher_dir: str | None = None) -> RunResult:
    """Distil the student from the teacher's checkpoint after epoch ``teacher_epoch``."""
    if teacher_epoch < 0:
        raise ConfigError(f"early-stop: teacher_epoch must be >= 0, got {teacher_epoch}.")
    data, out = prepare(cfg, data, out_dir)
    if teacher_dir is None and cfg.teacher is not None and cfg.teacher.checkpoint:
        # a teacher trained with train.keep_epochs leaves its epochs beside its best checkpoint
        given = Path(cfg.teacher.checkpoint)
        if not list(given.parent.glob("epoch-*.safetensors")):
            raise ConfigError(
                f"early-stop distils from an early epoch of the teacher's training, but '{given}' is one "
                "finished checkpoint with no kept epochs beside it. Give options.teacher_dir, a folder of "
                "epoch-XXX.safetensors (train the teacher with train.keep_epochs: true), or drop --teacher "
                "to let the scheme train the teacher.")
        teacher_dir = str(given.parent)
    folder = Path(teacher_dir) if teacher_dir else out / "teacher"
    path = folder / f"epoch-{teacher_epoch:03d}.safetensors"
    if teacher_dir is None:
        teacher_cfg = cfg.model_copy(deep=True)
        schedule = (teacher_cfg.teacher_train or teacher_cfg.train).model_copy(update={"keep_epochs": True})
        if teacher_epoch >= schedule.epochs:
            raise ConfigError(f"early-stop: teacher_epoch {teacher_epoch} is past the teacher's "
                              f"{schedule.epochs} epochs (they count from 0).")
        teacher_cfg.teacher_train = schedule
        state = teacher_state(teacher_cfg, data, folder)
        if state == "finished" and path.exists():
            log.info("reusing the finished teacher and its kept epochs in %s", folder)
        else:
            resume = folder / "last.safetensors" if state == "unfinished" else None
            train_model(teacher_cfg, "teacher", data=data, out_dir=folder, resume=resume)
    if not path.exists():
        kept = sorted(p.name for p in folder.glob("epoch-*.safetensors"))
        raise CheckpointError(f"early-stop: no teacher checkpoint '{path}'. Kept epochs there: "
                              f"{', '.join(kept) or 'none (train the teacher with train.keep_epochs: true)'}.")
    log.info("distilling from the early-stopped teacher %s", path)
    teacher, _ = load_model(path)
    result = run_distill(cfg, data=data, teacher=teacher, out_dir=out)
    write_summary(out, {"scheme": "early-stop", "teacher_checkpoint": str(path), "student": result.metrics})
    return result
