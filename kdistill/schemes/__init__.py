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
import typing
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter, ValidationError

from kdistill.config import ExperimentConfig, SchemeConfig
from kdistill.data import DataSplits
from kdistill.errors import ConfigError
from kdistill.registry import Registry

SCHEMES: Registry = Registry("scheme")


def register_scheme(name: str, *, overwrite: bool = False):
    """Register ``fn(cfg, *, data=None, out_dir=None, **options) -> RunResult`` as a scheme."""
    return SCHEMES.register(name, overwrite=overwrite)


def _load_builtins() -> None:
    from kdistill.schemes import (  # noqa: F401
        born_again,
        dml,
        early_stop,
        multi_teacher,
        noisy_student,
        takd,
        transfer,
    )


def scheme_names() -> list[str]:
    _load_builtins()
    return SCHEMES.names()


def validate_options(name: str, options: dict[str, Any]) -> dict[str, Any]:
    """Check a scheme's options against its function signature (names and types)."""
    _load_builtins()
    fn = SCHEMES.get(name)
    params = {k: p for k, p in inspect.signature(fn).parameters.items()
              if p.kind is p.KEYWORD_ONLY and k not in {"data", "out_dir"}}
    unknown = sorted(set(options) - set(params))
    if unknown:
        raise ConfigError(f"Scheme '{name}' has no option {', '.join(repr(u) for u in unknown)}; "
                          f"its options are: {', '.join(params) or '(none)'}.")
    hints = typing.get_type_hints(fn)
    checked = {}
    for key, value in options.items():
        try:
            checked[key] = TypeAdapter(hints[key]).validate_python(value, strict=False)
        except ValidationError as error:
            problem = error.errors()[0]["msg"]
            raise ConfigError(f"Scheme '{name}': option '{key}' = {value!r} is invalid ({problem}).") from None
    return checked


def run_scheme(cfg: ExperimentConfig, *, data: DataSplits | None = None,
               out_dir: str | Path | None = None):
    """Run the scheme named in ``cfg.distill.scheme``."""
    if cfg.distill.scheme is None:
        raise ConfigError("The config names no scheme (distill.scheme: {name: ..., options: {...}}).")
    name = cfg.distill.scheme.name
    options = validate_options(name, cfg.distill.scheme.options)
    return SCHEMES.get(name)(cfg, data=data, out_dir=out_dir, **options)


def run_experiment(cfg: ExperimentConfig, *, data: DataSplits | None = None,
                   out_dir: str | Path | None = None, resume: str | Path | None = None):
    """What ``kdistill distill`` runs: the configured scheme, or one distillation run.

    Everything that can be checked without training (models, methods, scheme
    members, checkpoints, the output folder) is checked first, so a mistake is
    reported before any teacher trains.
    """
    from kdistill.experiment import load_data, run_distill
    from kdistill.experiment.validate import validate_experiment, validate_output_dir

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
    data = data if data is not None else load_data(cfg, whole_for=f"Scheme '{scheme}'" if scheme else None)
    validate_experiment(cfg, data, scheme=scheme, options=options)
    if scheme is not None:
        return SCHEMES.get(scheme)(cfg, data=data, out_dir=out, **options)
    return run_distill(cfg, data=data, out_dir=out, resume=resume)


__all__ = ["SCHEMES", "register_scheme", "run_experiment", "run_scheme", "scheme_names", "validate_options"]
