"""The schema of the metadata inside a kdistill file, checked before anything follows it.

A checkpoint may come from anywhere (a colleague, a download), so its
metadata is user input: :func:`validate_metadata` checks it against the
pydantic models below once, when the file is read, and a field of the wrong
type or out of bounds (an ``epoch`` that is not a whole number, a ``history``
record without its ``epoch``, a ``model_spec`` naming an absurd input shape,
a ``data`` record whose options are not a mapping, an unknown ``format``)
raises :class:`~kdistill.errors.CheckpointError` naming the field and what it
must be, instead of a ``TypeError`` (or worse, a silent wrong value) later.

Every model allows fields it does not name (they are left alone), so a file
written by a newer kdistill still reads. To record something new, add an
optional field (a default of ``None``) with a ``description`` saying what it
must be: that phrase is what the error message quotes.
"""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from kdistill.errors import CheckpointError, quote

MAX_INPUT_DIMS = 4
MAX_INPUT_SIDE = 1 << 20
MAX_INPUT_SIZE = 1 << 28  # values in one sample: a 3 x 9000 x 9000 image
MAX_CLASSES = 1 << 20
MAX_TENSOR_VALUES = 1 << 32  # a sparse weight's recorded shape: 16 GiB of float32 is no student

#: every ``format`` a kdistill file may declare; no ``format`` is a training checkpoint
FORMATS = ("dense", "state-dict", "sparse-bitmask", "int8-dynamic", "int8-static")


class Record(BaseModel):
    """Base of every section: strict types (no "3" for 3, no true for 1), unknown fields kept."""

    model_config = ConfigDict(extra="allow", strict=True)


class VariationalRecord(Record):
    threshold: float = Field(3.0, gt=-8, lt=8, description="a number between -8 and 8")


class ModelSpec(Record):
    """What the model is rebuilt from (:func:`kdistill.experiment.load_model`)."""

    model: str | None = Field(None, description="a model name (string)")
    options: dict[str, Any] | None = Field(None, description="a mapping of option names to values")
    input_shape: list[int] | None = Field(
        None, description=f"a list of 1 to {MAX_INPUT_DIMS} positive sizes of at most {MAX_INPUT_SIZE:,} "
                          "values in all")
    num_classes: int | None = Field(None, ge=0, le=MAX_CLASSES,
                                    description=f"a whole number from 0 to {MAX_CLASSES:,}")
    dataset: str | None = Field(None, description="a string")
    variational: VariationalRecord | None = Field(None, description="a mapping with a numeric threshold")
    plugin: str | None = Field(None, description="a plugin's module name or file path (string)")

    @field_validator("input_shape")
    @classmethod
    def _shape(cls, value: list[int] | None) -> list[int] | None:
        if value is not None and not (1 <= len(value) <= MAX_INPUT_DIMS and all(1 <= d <= MAX_INPUT_SIDE for d in value)
                                      and math.prod(value) <= MAX_INPUT_SIZE):
            raise ValueError("out of bounds")
        return value


class DataRecord(Record):
    """How the training data was loaded (:func:`kdistill.experiment.records.data_record`)."""

    dataset: str | None = Field(None, description="a data set name (string)")
    options: dict[str, Any] = Field(default_factory=dict, description="a mapping of option names to values")
    data_dir: str | None = Field(None, description="a folder path or null")
    download: bool | None = Field(None, description="true or false")
    files: list[str] = Field(default_factory=list, description="a list of option names")

    @field_validator("options")
    @classmethod
    def _not_reserved(cls, value: dict[str, Any]) -> dict[str, Any]:
        if {"data_dir", "download"} & set(value):  # recorded beside the options, never among them
            raise ValueError("reserved name")
        return value


class EpochRecord(Record):
    """One line of the training history."""

    __pydantic_extra__: dict[str, float | None]  # every other entry is a number (loss, lr, val_score, ...)
    epoch: int = Field(ge=0)


class OptimizerName(Record):
    name: str = Field("", description="a string")


class TrainRecord(Record):
    optimizer: OptimizerName | None = Field(None, description="a mapping with a 'name'")


class ParamGroup(Record):
    params: list[int] = Field(description="a list of parameter ids")

    @field_validator("params")
    @classmethod
    def _ids(cls, value: list[int]) -> list[int]:
        if any(p < 0 for p in value):
            raise ValueError("negative id")
        return value


class OptimizerRecord(Record):
    param_groups: list[ParamGroup] = Field(
        min_length=1, description="a list of parameter groups, each with a list of parameter ids")
    scalars: dict[str, dict[str, Any]] = Field(default_factory=dict,
                                               description="a mapping of parameter ids to mappings")

    @field_validator("scalars")
    @classmethod
    def _ids(cls, value: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        if not all(k.isdigit() for k in value):
            raise ValueError("not parameter ids")
        return value


class TargetScaleRecord(Record):
    mean: float = Field(allow_inf_nan=False, description="a finite number")
    std: float = Field(gt=0, allow_inf_nan=False, description="a positive finite number")


class GradScalerRecord(Record):
    """fp16 training's gradient-scaler state (``torch.amp.GradScaler.state_dict``, renamed)."""

    scale: float = Field(gt=0, allow_inf_nan=False, description="a positive finite number")
    growth_factor: float = Field(gt=1, allow_inf_nan=False, description="a finite number > 1")
    backoff_factor: float = Field(gt=0, lt=1, description="a number between 0 and 1")
    growth_interval: int = Field(ge=1, description="a whole number >= 1")
    growth_tracker: int = Field(ge=0, description="a whole number >= 0")


class CheckpointMeta(Record):
    """The top level of a kdistill file's metadata (the ``kdistill`` entry of its safetensors header)."""

    format_version: int | None = Field(None, description="a whole number")
    role: str | None = Field(None, description="a string")
    epoch: int | None = Field(None, ge=0, description="a whole number >= 0")
    step: int | None = Field(None, ge=0, description="a whole number >= 0")
    best_epoch: int | None = Field(None, ge=-1, description="a whole number >= -1")
    best_score: float | None = Field(None, description="a number")
    initial_loss: float | None = Field(None, description="a number or null")
    history: list[EpochRecord] | None = Field(
        None, description="a list of per-epoch records, each with its 'epoch' (a whole number >= 0) and "
                          "numbers (name -> number)")
    world_size: int | None = Field(None, ge=1, description="a whole number >= 1")
    train: TrainRecord | None = Field(None, description="a mapping")
    distill: dict[str, Any] | None = Field(None, description="a mapping")
    format: Literal[FORMATS] | None = Field(  # type: ignore[valid-type]
        None, description=f"one of {', '.join(FORMATS)} (or absent, for a training checkpoint)")
    model_spec: ModelSpec | None = Field(None, description="a mapping")
    input_spec: dict[str, Any] | None = Field(
        None, description="a mapping (checked field by field by kdistill.data.input_spec)")
    data: DataRecord | None = Field(None, description="a mapping")
    optimizer: OptimizerRecord | None = Field(None, description="a mapping")
    sparse_shapes: dict[str, list[int]] | None = Field(
        None, description=f"a mapping of tensor names to shapes of at most {MAX_TENSOR_VALUES:,} values")
    target_scale: TargetScaleRecord | None = Field(None, description="a mapping with a finite mean and a "
                                                                     "positive std")
    grad_scaler: GradScalerRecord | None = Field(None, description="a mapping of the fp16 gradient scaler's "
                                                                   "state")

    @field_validator("sparse_shapes")
    @classmethod
    def _shapes(cls, value: dict[str, list[int]] | None) -> dict[str, list[int]] | None:
        if value is not None and not all(
                1 <= len(s) <= 8 and all(d >= 0 for d in s) and math.prod(s) <= MAX_TENSOR_VALUES
                for s in value.values()):
            raise ValueError("out of bounds")
        return value


def _fail(label: str, field: str, wanted: str, value: Any) -> CheckpointError:
    return CheckpointError(
        f"{label} has malformed kdistill metadata: '{field}' must be {wanted}, got {quote(value, 60)}. "
        "The file was edited or written by another tool; use a checkpoint kdistill wrote.")


def _blame(meta: dict[str, Any], loc: tuple[Any, ...]) -> tuple[str, str, Any]:
    """The declared field a pydantic error location falls in: its dotted name, description and value."""
    model: Any = CheckpointMeta
    names: list[str] = []
    wanted, value = "valid", meta
    for part in loc:
        fields = getattr(model, "model_fields", None)
        if not isinstance(part, str) or not fields or part not in fields:
            break
        info = fields[part]
        names.append(part)
        wanted = info.description or wanted
        value = value.get(part) if isinstance(value, dict) else None
        nested = [t for t in _types(info.annotation) if isinstance(t, type) and issubclass(t, BaseModel)]
        model = nested[0] if nested else None
    return ".".join(names) or "(top level)", wanted, value


def _types(annotation: Any) -> list[Any]:
    args = getattr(annotation, "__args__", None)
    return [annotation] if not args else [t for arg in args for t in _types(arg)]


def require_model_spec(meta: dict[str, Any], label: str) -> dict[str, Any]:
    """The ``model_spec`` with every entry a model is rebuilt from (``model``, ``input_shape``, ...)."""
    spec = meta.get("model_spec") or {}
    for key in ("model", "input_shape", "num_classes"):
        if spec.get(key) is None:
            raise _fail(label, f"model_spec.{key}", ModelSpec.model_fields[key].description or "given", None)
    return spec


def validate_metadata(meta: dict[str, Any], label: str) -> dict[str, Any]:
    """Return ``meta`` (unchanged) once it fits :class:`CheckpointMeta`; else a :class:`CheckpointError`."""
    try:
        CheckpointMeta.model_validate(meta)
    except ValidationError as error:
        field, wanted, value = _blame(meta, tuple(error.errors()[0]["loc"]))
        raise _fail(label, field, wanted, value) from None
    except RecursionError:
        raise CheckpointError(f"{label} has kdistill metadata nested too deeply to read.") from None
    record = meta.get("data")
    if isinstance(record, dict):
        missing = [k for k in record.get("files", []) if k not in record.get("options", {})]
        if missing:
            raise _fail(label, "data.files", "names of entries in data.options", missing)
    return meta
