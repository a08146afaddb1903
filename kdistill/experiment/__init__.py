"""From a config to a trained, evaluated model: what every ``kdistill`` command calls.

Each function takes a validated :class:`~kdistill.config.ExperimentConfig`
and returns plain results, so everything the ``kdistill`` command does is one
documented Python call::

    from kdistill import load_config, run_distill
    result = run_distill(load_config("examples/digits-kd.yaml"))
    print(result.metrics["accuracy"])
"""

from kdistill.experiment.records import data_record, load_data, model_spec
from kdistill.experiment.run import (
    Run,
    RunResult,
    _load_best,
    _write_metrics,
    build_distiller,
    build_model,
    build_run,
    execute,
    get_teacher,
    run_distill,
    seeded,
    tracked_invocation,
    train_model,
)
from kdistill.experiment.saved import (
    check_checkpoint_fits,
    evaluate_checkpoint,
    evaluation_data,
    load_model,
)

__all__ = [
    "Run",
    "build_run",
    "tracked_invocation",
    "execute",
    "_load_best",
    "_write_metrics",
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
    "seeded",
    "train_model",
]
