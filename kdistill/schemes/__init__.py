"""Training schemes: distillation procedures made of several training runs.

A *method* (``kdistill.methods``) is one loss term; a *scheme* decides which
models teach which, in what order, on what data. Each scheme is one function
``run_NAME(cfg, *, data=None, out_dir=None, **options) -> RunResult`` built on
:func:`kdistill.experiment.run_distill` / :func:`~kdistill.experiment.train_model`,
registered by name and selected in a config::

    distill:
      scheme: {name: born-again, options: {generations: 3}}

or on the command line with ``kdistill distill CONFIG --method born-again``.

============== ================================================ ===============================
name           what                                             paper
============== ================================================ ===============================
born-again     student of generation k teaches generation k+1    Furlanello et al. 2018
multi-teacher  distil from an ensemble (arithmetic / geometric)  Hinton et al. 2015; You et al. 2017
takd           teacher -> assistant(s) -> student                Mirzadeh et al. 2020
dml            peers learn from each other, no fixed teacher     Zhang et al. 2018
early-stop     distil from an early teacher checkpoint           Cho & Hariharan 2019
noisy-student  equal/larger noised student, iterated             Xie et al. 2020
transfer       distil on unlabeled / synthetic (MUNGE) inputs    Bucila et al. 2006
============== ================================================ ===============================
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kdistill.config import ExperimentConfig, SchemeConfig
from kdistill.data import DataSplits
from kdistill.errors import ConfigError
from kdistill.experiment import load_data, run_distill
from kdistill.experiment.runs import overwriting, refuse_earlier_runs, student_folders
from kdistill.experiment.validate import (
    check_teacher_student,
    validate_experiment,
    validate_output_dir,
)
from kdistill.options import check_options
from kdistill.schemes import (  # registers the built-in schemes
    born_again,
    dml,
    early_stop,
    multi_teacher,
    noisy_student,
    takd,
    transfer,
)
from kdistill.schemes.registry import _CHECKS, SCHEMES, register_scheme


def scheme_names() -> list[str]:
    return SCHEMES.names()


def _not_options(fn: Callable[..., Any]) -> list[str]:
    """The parameters of a scheme function that are not its options: the config, data and out_dir."""
    return [k for k, p in inspect.signature(fn).parameters.items()
            if p.kind is not p.KEYWORD_ONLY or k in {"data", "out_dir"}]


def validate_options(name: str, options: dict[str, Any]) -> dict[str, Any]:
    """Check a scheme's options against its function signature (names and types)."""
    fn = SCHEMES.get(name)
    return check_options(f"Scheme '{name}'", fn, options, skip=_not_options(fn))


def check_scheme(name: str, cfg: ExperimentConfig, data: DataSplits, options: dict[str, Any]) -> None:
    """Run scheme ``name``'s own check with ``options`` (already validated) and its defaults."""
    check = _CHECKS.get(name)
    if check is None:
        check_teacher_student(cfg, data)
        return
    fn = SCHEMES.get(name)
    defaults = {k: p.default for k, p in inspect.signature(fn).parameters.items()
                if k not in _not_options(fn) and p.default is not p.empty}
    check(cfg, data, {**defaults, **options})



def run_scheme(cfg: ExperimentConfig, *, data: DataSplits | None = None,
               out_dir: str | Path | None = None):
    """Run the scheme named in ``cfg.distill.scheme``."""
    if cfg.distill.scheme is None:
        raise ConfigError("The config names no scheme (distill.scheme: {name: ..., options: {...}}).")
    name = cfg.distill.scheme.name
    options = validate_options(name, cfg.distill.scheme.options)
    return SCHEMES.get(name)(cfg, data=data, out_dir=out_dir, **options)


def run_experiment(cfg: ExperimentConfig, *, data: DataSplits | None = None,
                   out_dir: str | Path | None = None, resume: str | Path | None = None,
                   overwrite: bool = False):
    """What ``kdistill distill`` runs: the configured scheme, or one distillation run.

    Everything that can be checked without training (models, methods, scheme
    members, checkpoints, the output folder) is checked first, so a mistake is
    reported before any teacher trains. An output folder that already holds a
    student run is refused (:class:`~kdistill.errors.RunExistsError`) unless
    ``resume`` continues it or ``overwrite`` replaces it; ``overwrite`` also
    lets a teacher trained with other settings be replaced
    (:mod:`kdistill.experiment.runs`).
    """
    if cfg.distill.scheme is None and not cfg.distill.methods and cfg.distill.method in scheme_names():
        # `method: born-again` reads naturally; treat it as the scheme with default options
        cfg = cfg.model_copy(deep=True)
        cfg.distill.scheme = SchemeConfig(name=cfg.distill.method)
        cfg.distill.method = "kd"
    scheme = cfg.distill.scheme.name if cfg.distill.scheme is not None else None
    options = validate_options(scheme, cfg.distill.scheme.options) if scheme is not None else {}
    if scheme is not None and resume is not None:
        raise ConfigError("--resume continues one training run; schemes (several runs) cannot be resumed. "
                          "Run the same command again without --resume: finished teachers are reused.")
    out = Path(out_dir) if out_dir is not None else cfg.resolved_output_dir()
    validate_output_dir(out)
    refuse_earlier_runs(student_folders(out), resume=resume, overwrite=overwrite)
    data = data if data is not None else load_data(cfg, whole_for=f"Scheme '{scheme}'" if scheme else None)
    validate_experiment(cfg, data, scheme=scheme, options=options,
                        check_scheme=(lambda c, d, o: check_scheme(scheme, c, d, o)) if scheme is not None else None)
    with overwriting(overwrite):
        if scheme is not None:
            return SCHEMES.get(scheme)(cfg, data=data, out_dir=out, **options)
        return run_distill(cfg, data=data, out_dir=out, resume=resume)


__all__ = ["SCHEMES", "born_again", "check_scheme", "dml", "early_stop", "multi_teacher", "noisy_student",
           "takd", "transfer", "register_scheme", "run_experiment", "run_scheme", "scheme_names",
           "validate_options"]
