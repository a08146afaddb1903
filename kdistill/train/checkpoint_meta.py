"""Checks on the metadata inside a kdistill file, before anything trusts it.

A checkpoint may come from anywhere (a colleague, a download), so every
field the code reads later is checked here once: an ``epoch`` that is not a
whole number, a ``history`` that is not a list, a ``model_spec`` naming an
absurd input shape, a ``data`` record whose options are not a mapping, a
malformed optimiser section. Each raises
:class:`~kdistill.errors.CheckpointError` naming the field and what it must
be, instead of a ``TypeError`` (or worse, a silent wrong value) later. Fields
kdistill does not read are left alone.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from kdistill.errors import CheckpointError, quote

MAX_INPUT_DIMS = 4
MAX_INPUT_SIDE = 1 << 20
MAX_INPUT_SIZE = 1 << 28  # values in one sample: a 3 x 9000 x 9000 image
MAX_CLASSES = 1 << 20


def _int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _str(value: Any) -> bool:
    return isinstance(value, str)


def _dict(value: Any) -> bool:
    return isinstance(value, dict)


def _input_shape(value: Any) -> bool:
    return (isinstance(value, list) and 1 <= len(value) <= MAX_INPUT_DIMS
            and all(_int(d) and 1 <= d <= MAX_INPUT_SIDE for d in value)
            and math.prod(value) <= MAX_INPUT_SIZE)


def _history(value: Any) -> bool:
    return isinstance(value, list) and all(
        _dict(r) and all(_str(k) and (_number(v) or v is None) for k, v in r.items()) for r in value)


Check = tuple[Callable[[Any], bool], str]

TOP: dict[str, Check] = {
    "format_version": (_int, "a whole number"),
    "role": (_str, "a string"),
    "epoch": (lambda v: _int(v) and v >= 0, "a whole number >= 0"),
    "step": (lambda v: _int(v) and v >= 0, "a whole number >= 0"),
    "best_epoch": (lambda v: _int(v) and v >= -1, "a whole number >= -1"),
    "best_score": (_number, "a number"),
    "initial_loss": (lambda v: v is None or _number(v), "a number or null"),
    "history": (_history, "a list of per-epoch records (name -> number)"),
    "world_size": (lambda v: _int(v) and v >= 1, "a whole number >= 1"),
    "train": (_dict, "a mapping"),
    "distill": (_dict, "a mapping"),
    "format": (_str, "a string"),
    "model_spec": (_dict, "a mapping"),
    "input_spec": (_dict, "a mapping (checked field by field by kdistill.data.input_spec)"),
    "data": (_dict, "a mapping"),
    "optimizer": (_dict, "a mapping"),
}

MODEL_SPEC: dict[str, Check] = {
    "model": (_str, "a model name (string)"),
    "options": (lambda v: _dict(v) and all(_str(k) for k in v), "a mapping of option names to values"),
    "input_shape": (_input_shape, f"a list of 1 to {MAX_INPUT_DIMS} positive sizes of at most "
                                  f"{MAX_INPUT_SIZE:,} values in all"),
    "num_classes": (lambda v: _int(v) and 0 <= v <= MAX_CLASSES, f"a whole number from 0 to {MAX_CLASSES:,}"),
    "dataset": (_str, "a string"),
}

DATA: dict[str, Check] = {
    "dataset": (_str, "a data set name (string)"),
    "options": (lambda v: _dict(v) and all(_str(k) for k in v), "a mapping of option names to values"),
    "data_dir": (lambda v: v is None or _str(v), "a folder path or null"),
    "download": (lambda v: isinstance(v, bool), "true or false"),
    "files": (lambda v: isinstance(v, list) and all(_str(k) for k in v), "a list of option names"),
}


def require_model_spec(meta: dict[str, Any], label: str) -> dict[str, Any]:
    """The ``model_spec`` with every entry a model is rebuilt from (``model``, ``input_shape``, ...)."""
    spec = meta.get("model_spec") or {}
    for key in ("model", "input_shape", "num_classes"):
        if key not in spec:
            raise _fail(label, f"model_spec.{key}", MODEL_SPEC[key][1], None)
    return spec


def _fail(label: str, field: str, wanted: str, value: Any) -> CheckpointError:
    return CheckpointError(
        f"{label} has malformed kdistill metadata: '{field}' must be {wanted}, got {quote(value, 60)}. "
        "The file was edited or written by another tool; use a checkpoint kdistill wrote.")


def _check_fields(meta: dict[str, Any], checks: dict[str, Check], label: str, prefix: str = "") -> None:
    for key, (ok, wanted) in checks.items():
        if key in meta and not ok(meta[key]):
            raise _fail(label, prefix + key, wanted, meta[key])


def validate_metadata(meta: dict[str, Any], label: str) -> dict[str, Any]:
    """Return ``meta`` once every field kdistill reads has the right type and a sane value."""
    _check_fields(meta, TOP, label)
    spec = meta.get("model_spec")
    if spec is not None:
        _check_fields(spec, MODEL_SPEC, label, "model_spec.")
    record = meta.get("data")
    if record is not None:
        _check_fields(record, DATA, label, "data.")
        missing = [k for k in record.get("files", []) if k not in record.get("options", {})]
        if missing:
            raise _fail(label, "data.files", "names of entries in data.options", missing)
    optimizer_name = (meta.get("train") or {}).get("optimizer")
    if optimizer_name is not None and not (_dict(optimizer_name) and _str(optimizer_name.get("name", ""))):
        raise _fail(label, "train.optimizer", "a mapping with a 'name'", optimizer_name)
    optim = meta.get("optimizer")
    if optim is not None:
        groups = optim.get("param_groups")
        if not (isinstance(groups, list) and groups and all(
                _dict(g) and isinstance(g.get("params"), list) and all(_int(p) and p >= 0 for p in g["params"])
                for g in groups)):
            raise _fail(label, "optimizer.param_groups",
                        "a list of parameter groups, each with a list of parameter ids", groups)
        scalars = optim.get("scalars", {})
        if not (_dict(scalars) and all(_str(k) and k.isdigit() and _dict(v) for k, v in scalars.items())):
            raise _fail(label, "optimizer.scalars", "a mapping of parameter ids to mappings", scalars)
    return meta
