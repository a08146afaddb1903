"""Noisy student (Xie et al. 2020, "Self-training with Noisy Student improves ImageNet classification", CVPR).

The student is *equal to or larger than* its teacher and is trained under
noise (Gaussian input noise with std ``input_noise`` and dropout before the
classifier, ``dropout``), while the teacher labels clean inputs. The trained
student then becomes the teacher of the next round (``rounds`` in all). The
noise is added by a forward pre-hook, so the saved student is an ordinary
zoo model. A student with fewer parameters than its teacher is refused:
that is plain distillation, not noisy student training.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated, Any

import torch
from pydantic import Field
from torch import nn

from kdistill.config import ExperimentConfig
from kdistill.data import DataSplits
from kdistill.errors import ConfigError
from kdistill.experiment import RunResult, build_model, get_teacher, run_distill
from kdistill.experiment.validate import check_teacher_student, meta_model
from kdistill.schemes._common import prepare, write_summary
from kdistill.schemes.registry import register_scheme

log = logging.getLogger("kdistill")


def add_input_noise(model: nn.Module, std: float) -> torch.utils.hooks.RemovableHandle:
    """Add N(0, std^2) noise to the model's input while it is in training mode."""
    def pre_hook(module: nn.Module, args: tuple):
        if module.training and std > 0:
            return (args[0] + std * torch.randn_like(args[0]), *args[1:])
        return None
    return model.register_forward_pre_hook(pre_hook)


def _size(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _noised_student(cfg: ExperimentConfig, dropout: float) -> ExperimentConfig:
    """``cfg`` whose student has the ``dropout`` model option (the noise before its classifier)."""
    noised = cfg.model_copy(deep=True)
    if dropout > 0:
        noised.student.options = {**noised.student.options, "dropout": dropout}
    return noised


def _check_sizes(student: nn.Module, teacher: nn.Module) -> None:
    if _size(student) < _size(teacher):
        raise ConfigError(f"noisy-student: the student ({_size(student):,} parameters) is smaller than its "
                          f"teacher ({_size(teacher):,}); noisy student training needs an equal or larger "
                          "student. Use plain distillation for compression.")


def _check_numbers(rounds: int, input_noise: float, dropout: float) -> None:
    if rounds < 1 or input_noise < 0 or not 0 <= dropout < 1:
        raise ConfigError("noisy-student: rounds >= 1, input_noise >= 0 and dropout in [0, 1) are required.")


def check_noisy_student(cfg: ExperimentConfig, data: DataSplits, options: dict[str, Any]) -> None:
    """Before the teacher trains: the options, the noised student's model, and its size against the teacher's."""
    _check_numbers(options["rounds"], options["input_noise"], options["dropout"])
    teacher, _ = check_teacher_student(cfg, data)
    noised = _noised_student(cfg, options["dropout"])
    student = meta_model(noised.student, data, "noisy student (with its dropout option)", teacher)
    if student is not None and teacher is not None:
        _check_sizes(student, teacher)


@register_scheme("noisy-student", check=check_noisy_student)
def run_noisy_student(cfg: ExperimentConfig, *, data: DataSplits | None = None,
                      out_dir: str | Path | None = None, rounds: Annotated[int, Field(ge=1, le=100)] = 2,
                      input_noise: float = 0.1,
                      dropout: float = 0.3) -> RunResult:
    """Iterate: noised student (>= teacher size) learns from the teacher, then becomes the teacher."""
    _check_numbers(rounds, input_noise, dropout)
    data, out = prepare(cfg, data, out_dir)
    student_cfg = _noised_student(cfg, dropout)
    teacher = get_teacher(cfg, data, out)
    results = []
    for r in range(1, rounds + 1):
        student = build_model(student_cfg.student, data)
        _check_sizes(student, teacher)  # also when called directly, without the check before training
        handle = add_input_noise(student, input_noise)
        log.info("noisy student round %d of %d", r, rounds)
        try:
            result = run_distill(student_cfg, data=data, teacher=teacher, out_dir=out / f"round-{r}",
                                 student=student)
        finally:
            handle.remove()
        results.append(result)
        teacher = result.model
    write_summary(out, {"scheme": "noisy-student", "rounds": [x.metrics for x in results]})
    return results[-1]


__all__ = ["add_input_noise", "run_noisy_student"]
