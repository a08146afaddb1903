"""The experiment file: a YAML document validated by a pydantic schema.

Configs are data, never code: they are parsed with a bounded ``yaml.SafeLoader``
(:mod:`kdistill.safe_yaml`: tags such as ``!!python/object`` are refused, and so
are alias bombs and files over 1 MiB) and every key is checked against the
schema below. A misspelled key or a value outside the allowed set raises
:class:`~kdistill.errors.ConfigError` naming the key and what is allowed; the
user's value is quoted at most a line long.

A minimal distillation experiment::

    data: {dataset: digits}
    teacher: {model: resnet-medium}
    student: {model: cnn-simple}
    distill: {alpha: 0.9, temperature: 4}
    train: {epochs: 20, batch_size: 64}
"""

from __future__ import annotations

import copy
import functools
import os
import re
import stat
from pathlib import Path
from typing import Any, Literal, get_args

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from kdistill.errors import ConfigError, quote, shorten
from kdistill.io import check_input_path
from kdistill.safe_yaml import MAX_CONFIG_BYTES, load_yaml


def _flat_types(annotation: Any) -> set[Any]:
    args = get_args(annotation)
    return {annotation} if not args else {t for arg in args for t in _flat_types(arg)}


@functools.cache
def _number_only(model: type[BaseModel], field: str) -> bool:
    """Whether ``model.field`` takes a number (int or float) but not a boolean."""
    info = model.model_fields.get(field)
    types = _flat_types(info.annotation) if info is not None else set()
    return bool(types & {int, float}) and bool not in types


class Strict(BaseModel):
    """Base for every section: unknown keys are errors, not silently ignored."""

    # inf and nan are never a sane learning rate, temperature or fraction
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)

    @field_validator("*", mode="before")
    @classmethod
    def _no_boolean_for_a_number(cls, value: Any, info: ValidationInfo) -> Any:
        # pydantic would read true as 1 and false as 0: `epochs: true` must not train one epoch
        if isinstance(value, bool) and info.field_name is not None and _number_only(cls, info.field_name):
            raise ValueError(f"must be a number, not {str(value).lower()} (YAML reads unquoted "
                             "yes/no/on/off/true/false as booleans)")
        return value


# Bounds on numbers that reach torch: beyond them a run would not finish, would exhaust memory
# or overflow a seed long before it could report anything useful.
MAX_EPOCHS = 100_000
MAX_BATCH_SIZE = 1 << 24
MAX_SAMPLES = 1 << 40
# every seed kdistill derives (NumPy's, the per-epoch shuffles') stays inside torch's 64-bit range
SEED_LIMIT = 1 << 32
# far above any rate or decay that trains; beyond them torch's float32 updates overflow with a RuntimeError
MAX_LR = 1e3
MAX_WEIGHT_DECAY = 1e3
# log sigma^2 below this is a variance of 0 in float32 arithmetic (exp(-50) is about 2e-22)
MIN_LOG_SIGMA2 = -50.0
_DEVICE = re.compile(r"(auto|cpu|mps|cuda)(:(0|[1-9][0-9]{0,3}))?")


def _word_for_bool(value: Any, true: str | None, false: str | None) -> Any:
    """YAML 1.1 reads unquoted off/no/on/yes as booleans: map them back to the documented word."""
    if value is True and true is not None:
        return true
    if value is False and false is not None:
        return false
    return value


class TransformConfig(Strict):
    """One torchvision.transforms.v2 transform, by class name, with its keyword arguments."""

    name: str = Field(description="e.g. RandomResizedCrop, RandomHorizontalFlip, TrivialAugmentWide, RandAugment")
    options: dict[str, Any] = Field(default_factory=dict, description="its keyword arguments, e.g. {size: 32}")


class MixConfig(Strict):
    """Mixup / CutMix on every training batch (torchvision.transforms.v2's MixUp and CutMix)."""

    mixup_alpha: float = Field(0.8, ge=0, le=100, description="Beta(a, a) of the Mixup weight; 0: no Mixup")
    cutmix_alpha: float = Field(1.0, ge=0, le=100, description="Beta(a, a) of the CutMix box area; 0: no CutMix")
    switch_prob: float = Field(0.5, ge=0, le=1, description="with both on, the chance a batch gets CutMix "
                               "rather than Mixup")
    prob: float = Field(1.0, ge=0, le=1, description="the chance a batch is mixed at all")

    @model_validator(mode="after")
    def _something_to_mix(self) -> MixConfig:
        if self.mixup_alpha == 0 and self.cutmix_alpha == 0:
            raise ValueError("data.augment.mix: mixup_alpha and cutmix_alpha are both 0, so nothing is mixed; "
                             "set one of them, or remove mix")
        return self


class AugmentConfig(Strict):
    jitter: int = Field(0, ge=0, le=8, description="max random translation in pixels (Hinton: 2); "
                        "a random crop of the image padded by this many pixels")
    flip: bool = Field(False, description="random left-right mirror of each image (garments, natural "
                       "images; not digits)")
    transforms: list[TransformConfig] = Field(
        default_factory=list, description="torchvision transforms v2 applied to each training image in "
        "DataLoader workers (kdistill[vision]); the teacher sees the same augmented batch")
    timm: dict[str, Any] | None = Field(
        None, description="keyword arguments of timm.data.create_transform for training images, e.g. "
        "{auto_augment: rand-m9-mstd0.5, scale: [0.5, 1.0]} (kdistill[vision])")
    mix: MixConfig | None = Field(
        None, description="Mixup/CutMix of every training batch, e.g. {mixup_alpha: 0.8, cutmix_alpha: 1.0} "
        "(kdistill[vision]); the teacher sees the mixed batch and the label term takes the mixed targets")

    @property
    def active(self) -> bool:
        """Whether inputs change from epoch to epoch (then a teacher cannot be cached)."""
        return bool(self.jitter or self.flip or self.transforms or self.timm is not None or self.mix is not None)


class DataConfig(Strict):
    dataset: str = "digits"
    data_dir: str | None = None
    download: bool = True
    options: dict[str, Any] = Field(default_factory=dict)
    augment: AugmentConfig = Field(default_factory=AugmentConfig)
    limit_train: int | None = Field(None, gt=0, le=MAX_SAMPLES, description="use only the first N training samples")
    limit_test: int | None = Field(None, gt=0, le=MAX_SAMPLES, description="use only the first N test samples")
    loader: Literal["auto", "memory", "stream"] = Field(
        "auto", description="memory: the whole set as tensors on the device (fastest); stream: read sample by "
        "sample by DataLoader workers (any size); auto: memory when the set fits comfortably, else stream")
    workers: int | None = Field(None, ge=0, le=256, description="DataLoader worker processes when streaming "
                                "(default: up to 4)")


class VariationalConfig(Strict):
    """A Bayesian version of the model (sparse variational dropout); see kdistill.compress.variational."""

    threshold: float = Field(3.0, gt=-8, lt=8, description="weights with log alpha at or above it are pruned")
    kl_weight: float = Field(1.0, ge=0, le=1e6, description="weight of the KL term (1: the ELBO)")
    anneal_epochs: int = Field(5, ge=0, description="linear warm-up of the KL weight over N epochs (0: none)")
    init_log_sigma2: float = Field(-10.0, ge=MIN_LOG_SIGMA2, lt=0, description="initial log sigma^2 of every weight")


class ModelConfig(Strict):
    model: str
    options: dict[str, Any] = Field(default_factory=dict)
    checkpoint: str | None = Field(None, description="load these weights instead of training")
    variational: VariationalConfig | None = Field(
        None, description="train a sparse variational version, e.g. {threshold: 3.0, kl_weight: 1.0}")


OptimizerName = Literal["sgd", "adam", "adamw"]
SchedulerName = Literal["constant", "cosine", "onecycle", "step"]
AmpMode = Literal["auto", "bf16", "fp16", "off"]
BatchScope = Literal["global", "per_rank"]
LrScaling = Literal["none", "linear", "sqrt"]
TeacherCache = Literal["auto", "device", "memmap", "off"]


class OptimizerConfig(Strict):
    name: OptimizerName = "adamw"
    lr: float = Field(1e-3, gt=0, le=MAX_LR)
    weight_decay: float = Field(0.0, ge=0, le=MAX_WEIGHT_DECAY)
    momentum: float = Field(0.9, ge=0, lt=1)
    nesterov: bool = False
    decay_bias_and_norm: bool = Field(
        False, description="also apply weight_decay to biases and normalisation layers (off: only weight "
        "matrices and kernels decay)")


class SchedulerConfig(Strict):
    name: SchedulerName = "cosine"
    warmup_epochs: float = Field(0.0, ge=0, le=MAX_EPOCHS)
    step_epochs: int = Field(30, gt=0, le=MAX_EPOCHS, description="for 'step': decay every N epochs")
    gamma: float = Field(0.1, gt=0, le=1, description="for 'step': decay factor")
    final_lr_fraction: float = Field(0.0, ge=0, le=1)

    @field_validator("name", mode="before")
    @classmethod
    def _name_word(cls, value: Any) -> Any:
        return _word_for_bool(value, None, "constant")  # "scheduler: {name: off}": no schedule


class TrainConfig(Strict):
    epochs: int = Field(10, gt=0, le=MAX_EPOCHS)
    batch_size: int = Field(128, gt=0, le=MAX_BATCH_SIZE)
    optimizer: OptimizerConfig = Field(default_factory=OptimizerConfig)
    scheduler: SchedulerConfig = Field(default_factory=SchedulerConfig)
    seed: int = Field(0, ge=0, lt=SEED_LIMIT)
    device: str = "auto"
    amp: AmpMode = Field("auto", description="auto: bf16 autocast on CUDA; bf16; fp16 (CUDA, with a gradient "
                         "scaler); off")
    val_fraction: float = Field(0.1, ge=0, lt=1, description="held out of train to pick the best epoch")
    grad_clip: float | None = Field(None, gt=0, le=1e6)
    max_norm: float | None = Field(
        None, gt=0, le=1e6, description="after every step, clip each unit's incoming weight vector (a row of a "
        "Linear weight, one filter of a conv) to this L2 norm (max-norm constraint, Hinton et al. 2012)")
    label_smoothing: float = Field(0.0, ge=0, lt=1)
    accumulate: int = Field(1, ge=1, le=4096, description="micro-batches of batch_size per optimiser step "
                            "(gradient accumulation: the step sees batch_size * accumulate samples)")
    ema: float | None = Field(None, gt=0, lt=1, description="decay of an exponential moving average of the "
                              "student (e.g. 0.999), updated every step; it is validated, saved and kept")
    patience: int | None = Field(None, ge=1, le=MAX_EPOCHS, description="stop after this many epochs without "
                                 "a better validation score (early stopping)")
    progress: bool = True
    batch_scope: BatchScope = Field(
        "global", description="under torchrun: batch_size is the global batch, or per process")
    lr_scaling: LrScaling = Field("none", description="under torchrun: scale lr by world size")
    sync_batchnorm: bool = Field(
        False, description="under torchrun: BatchNorm layers of the trained model normalise with the statistics "
        "of the whole global batch, so N processes follow the single-process run")
    keep_epochs: bool = Field(False, description="also keep every epoch's checkpoint as epoch-XXX.safetensors")
    compile: bool = Field(False, description="torch.compile the student and teacher")
    cuda_graphs: bool = Field(False, description="CUDA only: compile with CUDA graphs (reduce-overhead)")
    base_batch_size: int | None = Field(
        None, gt=0, le=MAX_BATCH_SIZE, description="batch size the lr was tuned for; if set, lr *= batch_size / base_batch_size")

    def scaled_lr(self) -> float:
        """The base learning rate after the linear scaling rule (Goyal et al. 2017) for large batches."""
        if self.base_batch_size:
            return self.optimizer.lr * self.batch_size / self.base_batch_size
        return self.optimizer.lr

    @field_validator("device")
    @classmethod
    def _device(cls, value: str) -> str:
        # the spelling is checked here; whether the device exists is checked when a run starts
        if not _DEVICE.fullmatch(value):
            raise ValueError("device must be auto, cpu, cuda, cuda:N (N = 0, 1, ...: the GPU's index) "
                             "or mps")
        return value

    @field_validator("amp", mode="before")
    @classmethod
    def _amp_word(cls, value: Any) -> Any:
        return _word_for_bool(value, "auto", "off")

    @field_validator("lr_scaling", mode="before")
    @classmethod
    def _lr_scaling_word(cls, value: Any) -> Any:
        return _word_for_bool(value, None, "none")


class MethodConfig(Strict):
    """One loss term: a registered method's name, its weight in the sum, and its constructor options."""

    name: str
    weight: float = Field(1.0, ge=0)
    options: dict[str, Any] = Field(default_factory=dict)


class SchemeConfig(Strict):
    """A training scheme (born-again, multi-teacher, ...) instead of one distillation run."""

    name: str
    options: dict[str, Any] = Field(default_factory=dict)


class DistillConfig(Strict):
    alpha: float = Field(0.9, ge=0, le=1, description="weight of the soft-target term")
    temperature: float = Field(4.0, gt=0, description="passed to every term that uses a temperature (kd, dkd, "
                               "...) unless the term's options set one")
    method: str = Field("kd", description="shorthand for methods: [{name: METHOD}]")
    methods: list[MethodConfig] = Field(default_factory=list)
    terms: list[MethodConfig] | None = Field(
        None, description="the whole loss spelled out, e.g. [{name: ce, weight: 0.1}, {name: kd, weight: 0.9}]; "
        "replaces alpha, method and methods")
    scheme: SchemeConfig | None = Field(None, description="e.g. {name: born-again, options: {generations: 3}}")
    cache: TeacherCache = Field(
        "auto", description="teacher outputs without augmentation: auto (device), device, memmap, off")
    cache_top_k: int | None = Field(
        None, ge=1, le=1_000_000, description="keep only each sample's K largest teacher logits in the cache, "
        "renormalising the softmax over them (for many classes); the truncation's error against the full "
        "softmax is measured and logged")
    teacher_precision: Literal["same", "bf16"] = Field(
        "same", description="bf16: run the frozen teacher under bf16 autocast while the student keeps "
        "train.amp (a cheaper live teacher on CPUs with AVX512-BF16)")

    @field_validator("cache", mode="before")
    @classmethod
    def _cache_word(cls, value: Any) -> Any:
        return _word_for_bool(value, "auto", "off")

    @field_validator("teacher_precision", mode="before")
    @classmethod
    def _precision_word(cls, value: Any) -> Any:
        return _word_for_bool(value, None, "same")  # "bf16: off" means the teacher keeps its precision

    @model_validator(mode="after")
    def _one_way_to_say_it(self) -> DistillConfig:
        if self.methods and self.method != "kd":
            raise ValueError(
                f"distill.method ({self.method!r}) and distill.methods (a list) are two ways to choose the "
                "loss terms; give one: method: NAME for a single method, or methods: [{name: NAME, weight: W}, "
                "...] to combine several")
        if self.terms is not None:
            # a key at its default is tolerated: a config dumped and read back spells every key out
            given = [key for key in ("alpha", "method", "methods")
                     if key in self.model_fields_set and getattr(self, key) != type(self).model_fields[key].get_default(
                         call_default_factory=True)]
            if given:
                raise ValueError(
                    f"distill.terms lists the whole loss, so {', '.join('distill.' + k for k in given)} "
                    "(which choose terms or their weights) cannot be given beside it; move every term into "
                    "terms, e.g. terms: [{name: ce, weight: 0.1}, {name: kd, weight: 0.9}]")
            if not self.terms:
                raise ValueError("distill.terms is empty: list at least one term, e.g. [{name: ce}]")
        for m in self.methods:
            if m.name == "kd" and (m.weight != 1.0 or m.options):
                raise ValueError(
                    "distill.methods: 'kd' names the built-in soft-target term, which is weighted by "
                    "distill.alpha at distill.temperature; set those instead of a weight or options on the "
                    "kd entry, or list the whole loss in distill.terms to give kd its own weight and options")
        return self

    def method_list(self) -> list[MethodConfig]:
        """The terms ``method`` / ``methods`` add beside the built-in ce and kd terms (which ``alpha`` weights).

        With ``terms`` the whole loss is listed there and this is empty; the
        complete, resolved list is :func:`kdistill.distiller.resolve_terms`.
        """
        if self.terms is not None:
            return []
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
    startup_trials: int = Field(2, ge=0, le=1_000_000, description="trials never pruned while the median forms")
    warmup_epochs: int = Field(1, ge=0, le=MAX_EPOCHS, description="epochs of a trial never pruned")
    seed: int = Field(0, ge=0, lt=SEED_LIMIT)

    @field_validator("pruner", mode="before")
    @classmethod
    def _pruner_word(cls, value: Any) -> Any:
        return _word_for_bool(value, "median", "none")


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

    @field_validator("output_dir")
    @classmethod
    def _output_dir(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise ValueError("is empty; give a folder (or leave output_dir out for runs/NAME)")
        return value

    def resolved_output_dir(self) -> Path:
        return Path(self.output_dir or os.path.join("runs", self.name))


def _describe_location(loc: tuple[Any, ...]) -> str:
    return ".".join(shorten(part, 40) for part in loc) or "(top level)"


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


_BOOL_HINT = ("YAML reads unquoted yes/no/on/off/true/false as booleans; quote the value "
              "(e.g. 'off') to give the word")
_MAX_PROBLEMS = 8


def format_validation_error(error: ValidationError, source: str,
                            schema: type[BaseModel] | None = None) -> str:
    """Turn pydantic's report into sentences a user can act on (user values cut to a line)."""
    messages = []
    items = error.errors()
    for item in items[:_MAX_PROBLEMS]:
        loc = tuple(item["loc"])
        where = _describe_location(loc)
        given = item.get("input")
        if item["type"] == "extra_forbidden":
            allowed = _allowed_keys(schema or ExperimentConfig, loc)
            messages.append(f"unknown key '{where}' (allowed here: {', '.join(allowed)})")
        elif item["type"] == "literal_error":
            expected = item.get("ctx", {}).get("expected", "")
            hint = f" ({_BOOL_HINT})" if isinstance(given, bool) else ""
            messages.append(f"'{where}' is {quote(given)}; allowed values: {expected}{hint}")
        else:
            hint = f"; {_BOOL_HINT}" if isinstance(given, bool) and item["type"] == "string_type" else ""
            text = item["msg"].removeprefix("Value error, ")
            messages.append(f"'{where}': {shorten(text, 200)} (got {quote(given)}{hint})")
    if len(items) > _MAX_PROBLEMS:
        messages.append(f"and {len(items) - _MAX_PROBLEMS} more problem(s)")
    return f"Invalid config {shorten(source, 200)}: " + "; ".join(messages) + "."


def _check_text(data: Any, source: str) -> None:
    """Refuse strings no file name, log or JSON file can hold: NUL characters and lone surrogates."""
    stack, seen = [(data, ())], 0
    while stack and seen < 200_000:
        value, where = stack.pop()
        seen += 1
        if isinstance(value, dict):
            for key, item in value.items():
                stack.append((key, where))
                stack.append((item, (*where, key)))
        elif isinstance(value, list | tuple):
            stack.extend((item, (*where, i)) for i, item in enumerate(value))
        elif isinstance(value, str) and ("\x00" in value or any("\ud800" <= c <= "\udfff" for c in value)):
            raise ConfigError(
                f"Invalid config {shorten(source, 200)}: '{_describe_location(where)}' holds "
                f"{quote(value)}, which contains a NUL character or a lone surrogate (not text a "
                "file name or a JSON file can hold); remove it.")


def parse_config(data: Any, source: str = "<dict>") -> ExperimentConfig:
    """Validate a mapping (e.g. parsed YAML) into an :class:`ExperimentConfig`."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"Invalid config {shorten(source, 200)}: the top level must be a mapping of "
                          "keys to values.")
    _check_text(data, source)
    try:
        return ExperimentConfig.model_validate(data)
    except ValidationError as error:
        raise ConfigError(format_validation_error(error, source)) from None


def parse_override(text: str) -> tuple[list[str], Any]:
    """Parse ``train.epochs=3`` into (["train", "epochs"], 3); the value is read as YAML."""
    shown = shorten(text)
    if "=" not in text:
        raise ConfigError(f"Override '{shown}' must look like KEY=VALUE, e.g. train.epochs=3.")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"Override '{shown}' has no key before '='; write KEY=VALUE, e.g. train.epochs=3.")
    parts = [part.strip() for part in key.split(".")]
    if any(not part for part in parts):
        raise ConfigError(
            f"Override '{shown}': the key '{shorten(key)}' has an empty part; keys are names joined "
            "by single dots, e.g. train.epochs or data.options.path.")
    if not raw.strip():
        return parts, ""
    try:
        value = load_yaml(raw, "its value")
    except ConfigError as error:
        raise ConfigError(
            f"Override '{shown}': {error} Quote a value that is meant as text, e.g. "
            "--set 'name=\"a: b\"'.") from None
    return parts, value


def apply_overrides(data: dict[str, Any], overrides: list[str | tuple[list[str], Any]]) -> dict[str, Any]:
    """``data`` with each override applied in turn (``"KEY=VALUE"`` text, or ``(key parts, value)``).

    A ``(["output_dir"], "runs/#1")`` pair sets the value as given, without
    reading it as YAML: what command-line flags that take a path want.
    """
    data = copy.deepcopy(data)
    for item in overrides:
        if isinstance(item, str):
            text, (path, value) = item, parse_override(item)
        else:
            path, value = list(item[0]), item[1]
            text = f"{'.'.join(map(str, path))}={value}"
            if not path:
                raise ConfigError("An override needs a key.")
        node = data
        for depth, part in enumerate(path[:-1]):
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                section = ".".join(path[: depth + 1])
                raise ConfigError(
                    f"Override '{shorten(text)}': '{shorten(section)}' is {quote(child)} (from the config "
                    f"or an earlier override), not a section of keys, so '{shorten(path[depth + 1])}' "
                    f"cannot be set inside it. Drop the other value, or set the whole section at once, "
                    f"e.g. --set '{shorten(section)}={{{shorten(path[depth + 1])}: VALUE}}'.")
            node = child
        node[path[-1]] = value
    return data


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML file safely (no tags that construct objects or run code) and boundedly.

    Refused with a :class:`ConfigError`: a missing, unreadable or non-UTF-8
    file, a folder, one over :data:`~kdistill.safe_yaml.MAX_CONFIG_BYTES`
    (also an endless one such as ``/dev/zero``), and every document
    :func:`kdistill.safe_yaml.load_yaml` refuses.
    """
    path = Path(path)
    name = f"Config file '{shorten(path, 200)}'"
    check_input_path(path, "Config file", ConfigError)  # a FIFO would block the read below forever
    try:
        info = path.stat()
        if stat.S_ISDIR(info.st_mode):
            raise ConfigError(f"{name} is a folder; give the YAML file inside it (see examples/).")
        if stat.S_ISREG(info.st_mode) and info.st_size > MAX_CONFIG_BYTES:
            raise ConfigError(f"{name} is {info.st_size:,} bytes; kdistill reads config files of at most "
                              f"{MAX_CONFIG_BYTES:,} bytes (an experiment file is a few hundred).")
        with path.open("rb") as handle:
            raw = handle.read(MAX_CONFIG_BYTES + 1)
    except FileNotFoundError:
        raise ConfigError(f"{name} does not exist.") from None
    except NotADirectoryError:
        raise ConfigError(f"{name} does not exist (a part of its path is a file, not a folder).") from None
    except PermissionError:
        raise ConfigError(f"{name} cannot be read: permission denied. Check its permissions "
                          f"(ls -l), or copy it somewhere readable.") from None
    except OSError as error:
        raise ConfigError(f"{name} cannot be read: {error.strerror or type(error).__name__}.") from None
    except ValueError:  # e.g. an embedded NUL character
        raise ConfigError(f"{name} is not a valid file name.") from None
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigError(f"{name} holds more than {MAX_CONFIG_BYTES:,} bytes (it may never end, like "
                          "/dev/zero); kdistill reads config files of at most that size.")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise ConfigError(f"{name} is not UTF-8 text (byte 0x{raw[error.start]:02x} at offset "
                          f"{error.start} cannot be decoded); save it as UTF-8 YAML.") from None
    data = load_yaml(text, name)
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{name}: the top level must be a mapping of keys to values.")
    return data


def load_config(path: str | Path, overrides: list[str | tuple[list[str], Any]] | None = None) -> ExperimentConfig:
    """Read, override (``["train.epochs=3"]``) and validate an experiment file."""
    data = apply_overrides(read_yaml(path), overrides or [])
    return parse_config(data, source=f"'{path}'")


def dump_config(config: ExperimentConfig) -> str:
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)
