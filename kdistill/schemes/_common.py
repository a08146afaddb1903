"""Small helpers shared by the schemes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from kdistill.config import ExperimentConfig, ModelConfig
from kdistill.data import DataSplits
from kdistill.experiment import load_data
from kdistill.train.checkpoint import atomic_write_text


def prepare(cfg: ExperimentConfig, data: DataSplits | None, out_dir: str | Path | None) -> tuple[DataSplits, Path]:
    return (data if data is not None else load_data(cfg, whole_for="A scheme")), Path(out_dir or cfg.resolved_output_dir())


def with_student(cfg: ExperimentConfig, model: str | dict[str, Any] | ModelConfig) -> ExperimentConfig:
    """A copy of ``cfg`` whose student is ``model`` (a name, or a ModelConfig mapping)."""
    new = cfg.model_copy(deep=True)
    new.student = as_model_config(model)
    return new


def as_model_config(model: str | dict[str, Any] | ModelConfig) -> ModelConfig:
    if isinstance(model, ModelConfig):
        return model
    return ModelConfig(model=model) if isinstance(model, str) else ModelConfig.model_validate(model)


def write_summary(out: Path, summary: dict[str, Any]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "scheme.json", json.dumps(summary, indent=2, default=float))
