"""From a config to a trained, evaluated model: what every ``kdistill`` command calls.

Each function takes a validated :class:`~kdistill.config.ExperimentConfig`
and returns plain results, so everything the ``kdistill`` command does is one
documented Python call::

    from kdistill import load_config, run_distill
    result = run_distill(load_config("examples/digits-kd.yaml"))
    print(result.metrics["accuracy"])

The modules, by responsibility: :mod:`~kdistill.experiment.assembly` (config to
run), :mod:`~kdistill.experiment.execution` (train, reload the best epoch,
record), :mod:`~kdistill.experiment.teachers` (teacher reuse),
:mod:`~kdistill.experiment.evaluation` (the one evaluation),
:mod:`~kdistill.experiment.run` (:func:`run_distill`),
:mod:`~kdistill.experiment.saved` (checkpoints read back) and
:mod:`~kdistill.experiment.records` (what a checkpoint records).
"""

from kdistill.experiment.assembly import Run, build_distiller, build_model, build_run, seeded
from kdistill.experiment.evaluation import score_model
from kdistill.experiment.execution import RunResult, execute, tracked_invocation, train_model
from kdistill.experiment.records import data_record, load_data, model_spec
from kdistill.experiment.run import run_distill
from kdistill.experiment.saved import (
    check_checkpoint_fits,
    evaluate_checkpoint,
    evaluation_data,
    load_model,
)
from kdistill.experiment.teachers import get_teacher, teacher_state

__all__ = [
    "Run",
    "build_run",
    "tracked_invocation",
    "execute",
    "RunResult",
    "build_distiller",
    "build_model",
    "check_checkpoint_fits",
    "data_record",
    "evaluate_checkpoint",
    "evaluation_data",
    "get_teacher",
    "load_data",
    "load_model",
    "model_spec",
    "run_distill",
    "score_model",
    "seeded",
    "teacher_state",
    "train_model",
]
