"""One path from a config to a trained, evaluated model.

The path is split by responsibility:

==============================================  ==========================================
module                                          does
==============================================  ==========================================
:mod:`~kdistill.experiment.assembly`            config -> :class:`Run` (:func:`build_run`,
                                                loss terms, the distiller)
:mod:`~kdistill.experiment.execution`           train a run, load its best epoch, write
                                                ``metrics.json`` (:func:`execute`)
:mod:`~kdistill.experiment.teachers`            find, resume or train the teacher
:mod:`~kdistill.experiment.evaluation`          the test metrics of a model, for ``execute``
                                                and ``kdistill evaluate`` alike
this module                                     :func:`run_distill`: the three together
==============================================  ==========================================

Every command uses :func:`build_run` and :func:`execute`:

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


from pathlib import Path

from torch import nn

from kdistill import detection
from kdistill.config import ExperimentConfig, MethodConfig
from kdistill.data import DataSplits
from kdistill.errors import ConfigError
from kdistill.experiment.assembly import build_run, loss_terms
from kdistill.experiment.execution import RunResult, execute
from kdistill.experiment.records import load_data
from kdistill.experiment.teachers import check_resumable_student, get_teacher
from kdistill.methods.variational import check_methods


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
