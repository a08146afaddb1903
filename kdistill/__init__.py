"""kdistill: knowledge distillation for PyTorch.

Train a small student on a large teacher's softened outputs (Hinton et al.
2015) and measure what the compression bought and cost: accuracy, size,
latency and fidelity to the teacher.
"""

from __future__ import annotations

__version__ = "0.1.0"

from kdistill.registry import (  # noqa: E402
    DATASETS,
    METHODS,
    MODELS,
    Registry,
    register_dataset,
    register_method,
    register_model,
)

__all__ = [
    "DATASETS",
    "METHODS",
    "MODELS",
    "Registry",
    "__version__",
    "register_dataset",
    "register_method",
    "register_model",
]


def __getattr__(name: str):
    # heavy parts load on first use so `import kdistill` stays fast
    lazy = {
        "Distiller": "kdistill.distiller",
        "Supervised": "kdistill.distiller",
        "load_config": "kdistill.config",
        "ExperimentConfig": "kdistill.config",
        "fit": "kdistill.train",
        "load_dataset": "kdistill.data",
        "create_model": "kdistill.models",
        "run_distill": "kdistill.experiment",
        "train_model": "kdistill.experiment",
        "evaluate_checkpoint": "kdistill.experiment",
        "load_model": "kdistill.experiment",
        "run_demo": "kdistill.study.demo",
    }
    if name in lazy:
        import importlib

        return getattr(importlib.import_module(lazy[name]), name)
    raise AttributeError(f"module 'kdistill' has no attribute {name!r}")
