"""The compression-study file: which models, which compressions, which schedules.

A YAML document validated like experiment files (unknown keys are errors)::

    name: study-fashion-mnist
    data: {dataset: fashion-mnist}
    models: [mlp-simple, mlp-medium, mlp-deep, cnn-simple, ...]
    train: {epochs: 10}                 # baselines
    distill: {alpha: 0.9, temperature: 4, train: {epochs: 10}}
    prune: {sparsities: [0.5, 0.7, 0.9], structured: [0.5], finetune_epochs: 1}
    quick: {models: [mlp-simple, cnn-simple], limit_train: 6000, epochs: 2}   # what --quick changes

``--quick`` replaces the model list (when ``quick.models`` is given), the data
limits, epochs (``quick.epochs`` for ``train``, ``quick.distill_epochs`` for
``distill.train`` and ``variational.train``), pruning levels, the teacher/student choice and the number of
latency repeats by the values in the ``quick`` section (see
:class:`QuickConfig`), so a study fits a CPU budget.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import Field, ValidationError, model_validator

from kdistill.config import DataConfig, DistillConfig, Strict, TrainConfig, _allowed_keys, read_yaml
from kdistill.errors import ConfigError

ZOO = [f"{family}-{size}" for family in ("mlp", "cnn", "resnet") for size in ("simple", "medium", "deep")]
Selection = Literal["all", "largest-per-family", "smallest-per-family"]


class StudyDistill(DistillConfig):
    """The distillation runs of the study: every ``distill.*`` setting of an experiment file
    (loss, temperature, alpha, methods, teacher cache, teacher precision) applies to each pair."""

    teachers: Selection | list[str] = Field(
        "all", description="teacher models: all, largest-per-family or a list of names")
    students: Selection | list[str] = Field(
        "all", description="student models: all, smallest-per-family or a list of names")
    train: TrainConfig | None = Field(None, description="student schedule; default: the study's train")

    @model_validator(mode="after")
    def _one_run_per_pair(self) -> StudyDistill:
        if self.scheme is not None:
            raise ValueError(
                f"the study distils each (teacher, student) pair in one run; the scheme "
                f"'{self.scheme.name}' (several runs) is not run by the study. Remove distill.scheme, or run "
                "the scheme with kdistill distill")
        return self

    def run_settings(self) -> DistillConfig:
        """The ``distill`` section of one pair's experiment (the study-only keys removed).

        An alpha the study file leaves unset stays unset: 0.9 in the run, or no kd term at all beside a
        method that replaces it (dkd, regression).
        """
        study_only = {"teachers", "students", "train"}
        unset = set() if "alpha" in self.model_fields_set else {"alpha"}
        return DistillConfig.model_validate(self.model_dump(exclude=study_only | unset))


class QuantizeConfig(Strict):
    dynamic: bool = True
    static: bool = True
    calibration_samples: int = Field(512, gt=0)


class PruneConfig(Strict):
    sparsities: list[float] = Field(default_factory=lambda: [0.3, 0.5, 0.7, 0.9])
    structured: list[float] = Field(default_factory=lambda: [0.5])
    finetune_epochs: int = Field(1, ge=0, description="short fine-tune after pruning (0: none)")
    finetune_samples: int | None = Field(None, gt=0, description="fine-tune on a random draw of N samples")


class StudyVariational(Strict):
    """The variational-student family (Hegde et al. 2019): distilled students that prune themselves.

    Each selected (teacher, student) pair trains a sparse variational dropout
    student against the teacher (:mod:`kdistill.compress.variational`), then
    sparsifies it once per ``thresholds`` entry: one row per threshold.
    """

    teachers: Selection | list[str] | None = Field(None, description="default: distill.teachers")
    students: Selection | list[str] | None = Field(None, description="default: distill.students")
    thresholds: list[float] = Field(default_factory=lambda: [3.0], min_length=1,
                                    description="log-alpha thresholds, one sparsified model each")
    kl_weight: float = Field(1.0, ge=0)
    anneal_epochs: int = Field(5, ge=0)
    train: TrainConfig | None = Field(None, description="default: distill.train, else train")


class MeasureConfig(Strict):
    batch_sizes: list[int] = Field(default_factory=lambda: [1, 256])
    threads: int = Field(1, gt=0, description="CPU threads for every latency measurement")
    repeats: int = Field(20, gt=0)
    warmup: int = Field(3, ge=0)
    onnx: bool = True


class QuickConfig(Strict):
    models: list[str] | None = Field(
        None, description="models of the quick schedule (default: the study's models)")
    limit_train: int | None = Field(6000, gt=0)
    limit_test: int | None = Field(2000, gt=0)
    epochs: int = Field(2, gt=0)
    distill_epochs: int = Field(3, gt=0)
    finetune_epochs: int = Field(1, ge=0)
    finetune_samples: int | None = Field(2000, gt=0)
    sparsities: list[float] = Field(default_factory=lambda: [0.5, 0.9])
    structured: list[float] = Field(default_factory=lambda: [0.5])
    teachers: Selection | list[str] = "largest-per-family"
    students: Selection | list[str] = "smallest-per-family"
    calibration_samples: int = Field(256, gt=0)
    repeats: int = Field(5, gt=0)
    warmup: int = Field(1, ge=0)


class StudyConfig(Strict):
    name: str = "study"
    output_dir: str | None = None
    data: DataConfig = Field(default_factory=DataConfig)
    models: list[str] = Field(default_factory=lambda: list(ZOO))
    train: TrainConfig = Field(default_factory=TrainConfig)
    distill: StudyDistill = Field(default_factory=StudyDistill)
    quantize: QuantizeConfig = Field(default_factory=QuantizeConfig)
    prune: PruneConfig = Field(default_factory=PruneConfig)
    measure: MeasureConfig = Field(default_factory=MeasureConfig)
    quick: QuickConfig = Field(default_factory=QuickConfig)
    variational: StudyVariational | None = Field(
        None, description="the variational-student family; off unless given (e.g. variational: {})")

    def resolved_output_dir(self) -> Path:
        return Path(self.output_dir or os.path.join("runs", self.name))

    def quick_version(self) -> StudyConfig:
        """A copy with the ``quick`` section's schedule applied."""
        q = self.quick
        new = self.model_copy(deep=True)
        if q.models:
            new.models = list(q.models)
        new.data.limit_train = q.limit_train
        new.data.limit_test = q.limit_test
        new.train.epochs = q.epochs
        new.distill.train = (new.distill.train or new.train).model_copy(update={"epochs": q.distill_epochs})
        if new.variational is not None and new.variational.train is not None:  # its own schedule, shortened too
            new.variational.train = new.variational.train.model_copy(update={"epochs": q.distill_epochs})
        new.distill.teachers, new.distill.students = q.teachers, q.students
        new.prune.sparsities, new.prune.structured = list(q.sparsities), list(q.structured)
        new.prune.finetune_epochs, new.prune.finetune_samples = q.finetune_epochs, q.finetune_samples
        new.quantize.calibration_samples = q.calibration_samples
        new.measure.repeats, new.measure.warmup = q.repeats, q.warmup
        return new


def _describe(error: ValidationError, source: str) -> str:
    messages = []
    for item in error.errors():
        loc = tuple(item["loc"])
        where = ".".join(str(part) for part in loc) or "(top level)"
        if item["type"] == "extra_forbidden":
            allowed = ", ".join(_allowed_keys(StudyConfig, loc))
            messages.append(f"unknown key '{where}' (allowed here: {allowed})")
        else:
            messages.append(f"'{where}': {item['msg']} (got {item.get('input')!r})")
    return f"Invalid study file {source}: " + "; ".join(messages) + "."


def load_study_config(path: str | Path) -> StudyConfig:
    """Read and validate a study file; mistakes raise :class:`ConfigError`."""
    raw = read_yaml(path)
    try:
        cfg = StudyConfig.model_validate(raw)
    except ValidationError as error:
        raise ConfigError(_describe(error, f"'{path}'")) from None
    for t in cfg.variational.thresholds if cfg.variational else []:
        if not -8 < t < 8:
            raise ConfigError(f"Study '{path}': variational thresholds must lie in (-8, 8), got {t}.")
    for s in [*cfg.prune.sparsities, *cfg.prune.structured]:
        if not 0 < s < 1:
            raise ConfigError(f"Study '{path}': pruning levels must be between 0 and 1, got {s}.")
    for key, models in (("models", cfg.models), ("quick.models", cfg.quick.models)):
        if models is not None and (len(set(models)) != len(models) or not models):
            raise ConfigError(f"Study '{path}': '{key}' must list at least one model, each once.")
    return cfg


def family(name: str) -> str:
    """A zoo name's family: ``cnn`` for ``cnn-deep``."""
    return name.split("-", 1)[0]


def select(choice: str | list[str], sizes: dict[str, int]) -> list[str]:
    """Resolve ``all`` / ``largest-per-family`` / ``smallest-per-family`` / a list of names."""
    if isinstance(choice, list):
        unknown = [c for c in choice if c not in sizes]
        if unknown:
            raise ConfigError(f"Distillation names {', '.join(unknown)}, which are not in the study's "
                              f"models ({', '.join(sizes)}).")
        return list(choice)
    if choice == "all":
        return list(sizes)
    by_family: dict[str, list[str]] = {}
    for name in sorted(sizes, key=sizes.get):
        by_family.setdefault(family(name), []).append(name)
    index = -1 if choice == "largest-per-family" else 0
    return [names[index] for names in by_family.values()]
