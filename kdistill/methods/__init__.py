"""Distillation methods, one module each, registered by name (``method: kd``)."""

from kdistill.methods import (  # noqa: F401  (transformer methods)
    attention_maps,
    hidden_states,
    kd,  # noqa: F401  (registers the method)
)
from kdistill.methods.base import DistillationMethod, StepContext, soft_kl
from kdistill.methods.hooks import FeatureHooks, module_paths, resolve_module

__all__ = [
    "DistillationMethod",
    "FeatureHooks",
    "StepContext",
    "module_paths",
    "resolve_module",
    "soft_kl",
]
