"""The scheme registry: ``SCHEMES`` and :func:`register_scheme` (re-exported by :mod:`kdistill.schemes`).

Apart from the package so that each built-in scheme registers itself from
its own module while the package imports them all.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from kdistill.config import ExperimentConfig
from kdistill.data import DataSplits
from kdistill.registry import Registry

SCHEMES: Registry = Registry("scheme")
# scheme name -> check(cfg, data, options): the scheme's own validation before any training
_CHECKS: dict[str, Callable[[ExperimentConfig, DataSplits, dict[str, Any]], None]] = {}


def register_scheme(name: str, *, overwrite: bool = False,
                    check: Callable[[ExperimentConfig, DataSplits, dict[str, Any]], None] | None = None):
    """Register ``fn(cfg, *, data=None, out_dir=None, **options) -> RunResult`` as a scheme.

    ``check(cfg, data, options)`` (``options`` complete with the function's
    defaults) validates what the scheme will do before any model trains,
    raising :class:`~kdistill.errors.ConfigError`; the helpers of
    :mod:`kdistill.experiment.validate` build models on the meta device. A
    scheme without one is checked as one teacher-student pair.
    """
    def decorator(fn):
        SCHEMES.register(name, overwrite=overwrite)(fn)
        if check is not None:
            _CHECKS[name] = check
        else:
            _CHECKS.pop(name, None)
        return fn

    return decorator


__all__ = ["SCHEMES", "register_scheme"]
