"""Teacher-assistant KD (Mirzadeh et al. 2020, "Improved Knowledge Distillation via Teacher Assistant", AAAI).

When the teacher is much larger than the student, distilling through one or
more intermediate-size *assistants* narrows each gap::

    teacher -> assistant_1 -> ... -> assistant_n -> student

every arrow being one ordinary distillation run with the config's method(s).
Outputs: ``OUT/assistant-1/student``, ..., ``OUT/student``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kdistill.config import ExperimentConfig
from kdistill.data import DataSplits
from kdistill.errors import ConfigError
from kdistill.experiment import RunResult, get_teacher, run_distill
from kdistill.experiment.validate import (
    check_pair,
    member_configs,
    meta_model,
    teacher_for_validation,
)
from kdistill.schemes._common import prepare, with_student, write_summary
from kdistill.schemes.registry import register_scheme


def check_takd(cfg: ExperimentConfig, data: DataSplits, options: dict[str, Any]) -> None:
    """Before any training: every link of teacher -> assistant(s) -> student bound to the loss terms."""
    if cfg.teacher is None:
        raise ConfigError("Distillation needs a 'teacher' section (model, and optionally checkpoint).")
    teacher = teacher_for_validation(cfg.teacher, data)
    for assistant_cfg in member_configs(options.get("assistants"), "takd: assistants"):
        assistant = meta_model(assistant_cfg, data, "takd assistant")
        check_pair(cfg, teacher, assistant, data)
        teacher = assistant
    check_pair(cfg, teacher, meta_model(cfg.student, data, "student", teacher), data)


@register_scheme("takd", check=check_takd)
def run_takd(cfg: ExperimentConfig, *, data: DataSplits | None = None, out_dir: str | Path | None = None,
             assistants: list[Any] | None = None) -> RunResult:
    """Distil teacher -> each assistant in turn -> student, in one call."""
    if not assistants:
        raise ConfigError("takd: name at least one assistant model in options.assistants, e.g. [cnn-medium].")
    data, out = prepare(cfg, data, out_dir)
    teacher = get_teacher(cfg, data, out)
    chain = []
    for i, assistant in enumerate(assistants, start=1):
        result = run_distill(with_student(cfg, assistant), data=data, teacher=teacher,
                             out_dir=out / f"assistant-{i}")
        chain.append(result.metrics)
        teacher = result.model
    result = run_distill(cfg, data=data, teacher=teacher, out_dir=out)
    write_summary(out, {"scheme": "takd", "assistants": chain, "student": result.metrics})
    return result
