"""The experiment file: a YAML document validated by a pydantic schema.

Configs are data, never code: they are parsed with ``yaml.safe_load`` (so tags
such as ``!!python/object`` are refused) and every key is checked against the
schema below. A misspelled key or a value outside the allowed set raises
:class:`~kdistill.errors.ConfigError` naming the key and what is allowed.

A minimal distillation experiment::

    data: {dataset: digits}
    teacher: {model: resnet-medium}
    student: {model: cnn-simple}
    distill: {alpha: 0.9, temperature: 4}
    train: {epochs: 20, batch_size: 64}
"""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any, Literal, get_args

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from kdistill.errors import ConfigError


class Strict(BaseModel):
    """Base for every section: unknown keys are errors, not silently ignored."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class AugmentConfig(Strict):
    jitter: int = Field(0, ge=0, le=8, description="max random translation in pixels (Hinton: 2); "
                        "a random crop of the image padded by this many pixels")
    flip: bool = Field(False, description="random left-right mirror of each image (garments, natural "
                       "images; not digits)")

    @property
    def active(self) -> bool:
        """Whether inputs change from epoch to epoch (then a teacher cannot be cached)."""
        return bool(self.jitter or self.flip)


class DataConfig(Strict):
    dataset: str = "digits"
    data_dir: str | None = None
    download: bool = True
    options: dict[str, Any] = Field(default_factory=dict)
    augment: AugmentConfig = Field(default_factory=AugmentConfig)
    limit_train: int | None = Field(None, gt=0, description="use only the first N training samples")
    limit_test: int | None = Field(None, gt=0, description="use only the first N test samples")


class VariationalConfig(Strict):
    """A Bayesian version of the model (sparse variational dropout); see kdistill.compress.variational."""

    threshold: float = Field(3.0, gt=-8, lt=8, description="weights with log alpha at or above it are pruned")
    kl_weight: float = Field(1.0, ge=0, description="weight of the KL term (1: the ELBO)")
    anneal_epochs: int = Field(5, ge=0, description="linear warm-up of the KL weight over N epochs (0: none)")
    init_log_sigma2: float = Field(-10.0, lt=0, description="initial log sigma^2 of every weight")


class ModelConfig(Strict):
    model: str
    options: dict[str, Any] = Field(default_factory=dict)
    checkpoint: str | None = Field(None, description="load these weights instead of training")
    variational: VariationalConfig | None = Field(
        None, description="train a sparse variational version, e.g. {threshold: 3.0, kl_weight: 1.0}")


OptimizerName = Literal["sgd", "adam", "adamw"]
SchedulerName = Literal["constant", "cosine", "onecycle", "step"]
AmpMode = Literal["auto", "bf16", "off"]
BatchScope = Literal["global", "per_rank"]
LrScaling = Literal["none", "linear", "sqrt"]
TeacherCache = Literal["auto", "device", "memmap", "off"]


class OptimizerConfig(Strict):
    name: OptimizerName = "adamw"
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    nesterov: bool = False


class SchedulerConfig(Strict):
    name: SchedulerName = "cosine"
    warmup_epochs: float = Field(0.0, ge=0)
    step_epochs: int = Field(30, gt=0, description="for 'step': decay every N epochs")
    gamma: float = Field(0.1, gt=0, le=1, description="for 'step': decay factor")
    final_lr_fraction: float = Field(0.0, ge=0, le=1)


class TrainConfig(Strict):
    epochs: int = Field(10, gt=0)
    batch_size: int = Field(128, gt=0)
    optimizer: OptimizerConfig = Field(default_factory=OptimizerConfig)
    scheduler: SchedulerConfig = Field(default_factory=SchedulerConfig)
    seed: int = 0
    device: str = "auto"
    amp: AmpMode = "auto"
    val_fraction: float = Field(0.1, ge=0, lt=1, description="held out of train to pick the best epoch")
    grad_clip: float | None = Field(None, gt=0)
    label_smoothing: float = Field(0.0, ge=0, lt=1)
    progress: bool = True
    batch_scope: BatchScope = Field(
        "global", description="under torchrun: batch_size is the global batch, or per process")
    lr_scaling: LrScaling = Field("none", description="under torchrun: scale lr by world size")
    keep_epochs: bool = Field(False, description="also keep every epoch's checkpoint as epoch-XXX.safetensors")
    compile: bool = Field(False, description="torch.compile the student and teacher")
    cuda_graphs: bool = Field(False, description="CUDA only: compile with CUDA graphs (reduce-overhead)")
    base_batch_size: int | None = Field(
        None, gt=0, description="batch size the lr was tuned for; if set, lr *= batch_size / base_batch_size")

    def scaled_lr(self) -> float:
        """The base learning rate after the linear scaling rule (Goyal et al. 2017) for large batches."""
        if self.base_batch_size:
            return self.optimizer.lr * self.batch_size / self.base_batch_size
        return self.optimizer.lr

    @field_validator("device")
    @classmethod
    def _device(cls, value: str) -> str:
        base = value.split(":", 1)[0]
        if base not in {"auto", "cpu", "cuda", "mps"}:
            raise ValueError("device must be one of auto, cpu, cuda, cuda:N, mps")
        return value


class MethodConfig(Strict):
    name: str
    weight: float = Field(1.0, ge=0)
    options: dict[str, Any] = Field(default_factory=dict)


class SchemeConfig(Strict):
    """A training scheme (born-again, multi-teacher, ...) instead of one distillation run."""

    name: str
    options: dict[str, Any] = Field(default_factory=dict)


class DistillConfig(Strict):
    alpha: float = Field(0.9, ge=0, le=1, description="weight of the soft-target term")
    temperature: float = Field(4.0, gt=0)
    method: str = Field("kd", description="shorthand for methods: [{name: METHOD}]")
    methods: list[MethodConfig] = Field(default_factory=list)
    scheme: SchemeConfig | None = Field(None, description="e.g. {name: born-again, options: {generations: 3}}")
    cache: TeacherCache = Field(
        "auto", description="teacher outputs without augmentation: auto (device), device, memmap, off")
    teacher_precision: Literal["same", "bf16"] = Field(
        "same", description="bf16: run the frozen teacher under bf16 autocast while the student keeps "
        "train.amp (a cheaper live teacher on CPUs with AVX512-BF16)")

    @model_validator(mode="after")
    def _one_way_to_say_it(self) -> DistillConfig:
        if self.methods and self.method != "kd":
            raise ValueError(
                f"distill.method ({self.method!r}) and distill.methods (a list) are two ways to choose the "
                "loss terms; give one: method: NAME for a single method, or methods: [{name: NAME, weight: W}, "
                "...] to combine several")
        for m in self.methods:
            if m.name == "kd" and (m.weight != 1.0 or m.options):
                raise ValueError(
                    "distill.methods: 'kd' names the built-in soft-target term, which is weighted by "
                    "distill.alpha at distill.temperature; set those instead of a weight or options on the "
                    "kd entry (or drop the entry: the term is always there while alpha > 0)")
        return self

    def method_list(self) -> list[MethodConfig]:
        """The extra loss terms, beyond the built-in Hinton KD term (weighted by ``alpha``)."""
        if self.methods:
            return [m for m in self.methods if m.name != "kd"]
        return [] if self.method == "kd" else [MethodConfig(name=self.method)]


class SearchParam(Strict):
    """One searched value: a float/int range (optionally log-scaled) or a list of choices."""

    low: float | None = None
    high: float | None = None
    log: bool = False
    integer: bool = Field(False, description="sample whole numbers")
    choices: list[str | float | bool] | None = None

    @model_validator(mode="after")
    def _range(self) -> SearchParam:
        if self.choices is not None:
            if not self.choices:
                raise ValueError("choices must list at least one value")
            return self
        if self.low is None or self.high is None:
            raise ValueError("give low and high, or choices")
        if not self.low < self.high:
            raise ValueError(f"low ({self.low}) must be below high ({self.high})")
        if self.log and self.low <= 0:
            raise ValueError("a log-scaled range needs low > 0")
        return self


class TuneConfig(Strict):
    """``kdistill tune``: what to search and how to prune (plain data, no code)."""

    search: dict[str, SearchParam] | None = Field(
        None, description="dotted config keys to search; default: temperature, alpha, lr, method weights")
    pruner: Literal["median", "none"] = "median"
    startup_trials: int = Field(2, ge=0, description="trials never pruned while the median forms")
    warmup_epochs: int = Field(1, ge=0, description="epochs of a trial never pruned")
    seed: int = 0


class TrackingConfig(Strict):
    """Per-epoch metrics to TensorBoard / MLflow (``history.csv`` is always written)."""

    tensorboard: bool = Field(False, description="event files under DIR/tensorboard (kdistill[tracking])")
    mlflow: bool = Field(False, description="one MLflow run per training (kdistill[mlflow])")
    dir: str | None = Field(None, description="where tensorboard/ and mlflow.db go; default: the output folder")
    mlflow_uri: str | None = Field(None, description="MLflow tracking URI; default: sqlite:///DIR/mlflow.db")
    experiment: str | None = Field(None, description="MLflow experiment name; default: kdistill")


class ExperimentConfig(Strict):
    name: str = "experiment"
    output_dir: str | None = None
    data: DataConfig = Field(default_factory=DataConfig)
    teacher: ModelConfig | None = None
    student: ModelConfig | None = None
    distill: DistillConfig = Field(default_factory=DistillConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    teacher_train: TrainConfig | None = Field(None, description="schedule for the teacher; default: train")
    teacher_augment: AugmentConfig | None = Field(
        None, description="augmentation while training the teacher; default: data.augment")
    tune: TuneConfig = Field(default_factory=TuneConfig)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)

    def resolved_output_dir(self) -> Path:
        return Path(self.output_dir or os.path.join("runs", self.name))


def _describe_location(loc: tuple[Any, ...]) -> str:
    return ".".join(str(part) for part in loc) or "(top level)"


def _allowed_keys(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    """Walk the schema along ``loc`` (minus the bad key) and list the keys allowed there."""
    current: Any = model
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        fields = getattr(current, "model_fields", None)
        if not fields or part not in fields:
            return []
        annotation = fields[part].annotation
        candidates = [annotation, *get_args(annotation)]
        nested = [c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)]
        if not nested:
            inner = [a for c in candidates for a in get_args(c)]
            nested = [c for c in inner if isinstance(c, type) and issubclass(c, BaseModel)]
        if not nested:
            return []
        current = nested[0]
    return sorted(getattr(current, "model_fields", {}))


def format_validation_error(error: ValidationError, source: str) -> str:
    """Turn pydantic's report into sentences a user can act on."""
    messages = []
    for item in error.errors():
        loc = tuple(item["loc"])
        where = _describe_location(loc)
        if item["type"] == "extra_forbidden":
            allowed = _allowed_keys(ExperimentConfig, loc)
            messages.append(f"unknown key '{where}' (allowed here: {', '.join(allowed)})")
        elif item["type"] == "literal_error":
            expected = item.get("ctx", {}).get("expected", "")
            messages.append(f"'{where}' is {item['input']!r}; allowed values: {expected}")
        else:
            messages.append(f"'{where}': {item['msg']} (got {item.get('input')!r})")
    return f"Invalid config {source}: " + "; ".join(messages) + "."


def parse_config(data: Any, source: str = "<dict>") -> ExperimentConfig:
    """Validate a mapping (e.g. parsed YAML) into an :class:`ExperimentConfig`."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"Invalid config {source}: the top level must be a mapping of keys to values.")
    try:
        return ExperimentConfig.model_validate(data)
    except ValidationError as error:
        raise ConfigError(format_validation_error(error, source)) from None


def parse_override(text: str) -> tuple[list[str], Any]:
    """Parse ``train.epochs=3`` into (["train", "epochs"], 3); the value is read as YAML."""
    if "=" not in text:
        raise ConfigError(f"Override '{text}' must look like KEY=VALUE, e.g. train.epochs=3.")
    key, raw = text.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw else ""
    except yaml.YAMLError:
        value = raw
    return [part for part in key.strip().split(".") if part], value


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    data = copy.deepcopy(data)
    for text in overrides:
        path, value = parse_override(text)
        node = data
        for part in path[:-1]:
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise ConfigError(f"Override '{text}': '{part}' is not a section.")
            node = child
        node[path[-1]] = value
    return data


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML file safely (no tags that construct objects or run code)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"Config file '{path}' does not exist.")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.constructor.ConstructorError as error:
        if "constructor" not in str(error.problem):  # e.g. an unhashable key, not a tag
            raise ConfigError(f"Config file '{path}' is not valid YAML: {error}") from None
        raise ConfigError(
            f"Config file '{path}' uses a YAML tag that kdistill refuses ({error.problem}); "
            "configs are plain data and can never construct objects or import code."
        ) from None
    except (yaml.YAMLError, UnicodeDecodeError) as error:
        raise ConfigError(f"Config file '{path}' is not valid YAML: {error}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"Config file '{path}': the top level must be a mapping of keys to values.")
    return data


def load_config(path: str | Path, overrides: list[str] | None = None) -> ExperimentConfig:
    """Read, override (``["train.epochs=3"]``) and validate an experiment file."""
    data = apply_overrides(read_yaml(path), overrides or [])
    return parse_config(data, source=f"'{path}'")


def dump_config(config: ExperimentConfig) -> str:
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)
