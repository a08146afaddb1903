"""What a model reads: the input spec a trained model carries to wherever it is deployed.

A model trained by kdistill never sees raw pixels or raw table cells: loaders
scale 8-bit pixels to [0, 1] and standardise them, and tables are standardised
column by column. An exported model is useless without those numbers, so every
checkpoint and export records them, with the names of the classes and of the
table's columns, as one JSON mapping (key ``input_spec``):

=================  ============================================================
key                meaning
=================  ============================================================
``shape``          one sample's shape, e.g. ``[1, 28, 28]`` or ``[10]``
``layout``         ``NCHW`` (images, channels first), ``features`` (a table's
                   columns) or ``tokens`` (token ids)
``dtype``          the input's dtype: ``float32`` (images, tables), ``int64`` (tokens)
``task``           ``classification``, ``regression`` or ``detection``
``pixel_scale``    images: raw 8-bit values are divided by this (255) first
``mean`` / ``std`` what was then subtracted and divided by: per channel (images)
                   or per column (tables); ``null`` when not standardised
``class_names``    the name of each output class, in output order (or ``null``)
``feature_names``  tables: the column each input position reads (or ``null``)
``kdistill_version`` the kdistill that wrote the file
=================  ============================================================

:func:`input_spec` builds it from a :class:`~kdistill.data.DataSplits`;
:meth:`InputSpec.from_dict` reads it back, refusing malformed values with a
:class:`~kdistill.errors.CheckpointError`, since the file may come from anyone.
A file written before the spec existed reads as ``None`` (see
:func:`read_input_spec`). :func:`prepare_images` and :func:`prepare_rows`
turn raw image files and table rows into the model's input exactly as the
loaders did.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from kdistill import __version__
from kdistill.data.datasets.image_folder import read_image
from kdistill.data.datasets.tabular import column_label, read_table, to_numeric
from kdistill.data.splits import DataSplits
from kdistill.data.streaming import StreamSplits
from kdistill.errors import CheckpointError, DataError, quote, shorten

LAYOUTS = ("NCHW", "features", "tokens")
TASKS = ("classification", "regression", "detection")
DTYPES = ("float32", "float64", "float16", "bfloat16", "int64", "int32")
#: what the built-in image loaders divide 8-bit pixels by before standardising
PIXEL_SCALE = 255.0
MAX_NAMES = 1 << 20
MAX_DIMS = 4


@dataclass(frozen=True)
class InputSpec:
    """One sample's shape, layout and dtype, its preprocessing, and the names of classes and columns."""

    shape: tuple[int, ...]
    layout: str
    dtype: str = "float32"
    task: str = "classification"
    pixel_scale: float | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    class_names: tuple[str, ...] | None = None
    feature_names: tuple[str, ...] | None = None
    kdistill_version: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The JSON mapping stored in checkpoints and exported files."""
        out = asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in out.items()}

    @classmethod
    def from_dict(cls, record: Any, label: str) -> InputSpec:
        """Read a recorded spec back; ``label`` names the file in the error of a malformed one."""
        if not isinstance(record, dict):
            raise _bad(label, "input_spec", "a mapping", record)
        shape = record.get("shape")
        if not (isinstance(shape, list) and 1 <= len(shape) <= MAX_DIMS
                and all(_whole(d) and d >= 1 for d in shape)):
            raise _bad(label, "input_spec.shape", f"a list of 1 to {MAX_DIMS} positive sizes", shape)
        layout = record.get("layout")
        if layout not in LAYOUTS:
            raise _bad(label, "input_spec.layout", f"one of {', '.join(LAYOUTS)}", layout)
        dtype = record.get("dtype", "float32")
        if dtype not in DTYPES:
            raise _bad(label, "input_spec.dtype", f"one of {', '.join(DTYPES)}", dtype)
        task = record.get("task", "classification")
        if task not in TASKS:
            raise _bad(label, "input_spec.task", f"one of {', '.join(TASKS)}", task)
        scale = record.get("pixel_scale")
        if scale is not None and not (_real(scale) and scale > 0):
            raise _bad(label, "input_spec.pixel_scale", "a positive number or null", scale)
        stats_len = shape[0] if layout in ("NCHW", "features") else None
        mean = _numbers(record.get("mean"), stats_len, label, "input_spec.mean", positive=False)
        std = _numbers(record.get("std"), stats_len, label, "input_spec.std", positive=True)
        if (mean is None) != (std is None):
            raise _bad(label, "input_spec.mean/std", "both given or both null", [mean, std])
        classes = _names(record.get("class_names"), label, "input_spec.class_names")
        features = _names(record.get("feature_names"), label, "input_spec.feature_names")
        if features is not None and (layout != "features" or len(features) != shape[0]):
            raise _bad(label, "input_spec.feature_names", f"one name per column ({shape[0]})",
                       len(features))
        version = record.get("kdistill_version")
        if version is not None and not (isinstance(version, str) and len(version) <= 100):
            raise _bad(label, "input_spec.kdistill_version", "a version string", version)
        return cls(shape=tuple(shape), layout=layout, dtype=dtype, task=task, pixel_scale=scale,
                   mean=mean, std=std, class_names=classes, feature_names=features,
                   kdistill_version=version)


def input_spec(data: DataSplits | StreamSplits) -> InputSpec:
    """The input spec of a model trained on ``data`` (what its loader did to the raw inputs)."""
    shape = tuple(int(d) for d in data.input_shape)
    # a streamed set shows its input type in its first training sample
    sample = data.x_train if isinstance(data, DataSplits) else torch.as_tensor(data.train[0][0])
    dtype = str(sample.dtype).removeprefix("torch.")
    if data.task == "detection" or (len(shape) == 3 and sample.is_floating_point()):
        layout = "NCHW"
    elif not sample.is_floating_point():
        layout = "tokens"
    else:
        layout = "features"
    stats = data.mean is not None and data.std is not None and layout != "tokens"
    mean = tuple(float(v) for v in data.mean) if stats else None  # type: ignore[union-attr]
    std = tuple(float(v) for v in data.std) if stats else None  # type: ignore[union-attr]
    if stats and layout in ("NCHW", "features") and len(mean) == 1 and shape[0] > 1:  # type: ignore[arg-type]
        # one statistic for every channel (digits, MNIST): spelt out per channel
        mean, std = mean * shape[0], std * shape[0]  # type: ignore[operator]
    names = getattr(data, "feature_names", None)
    features = names if layout == "features" and names is not None else None
    return InputSpec(
        shape=shape, layout=layout, dtype=dtype, task=data.task,
        pixel_scale=PIXEL_SCALE if layout == "NCHW" else None,
        mean=mean, std=std,
        class_names=tuple(str(c) for c in data.class_names) if data.class_names else None,
        feature_names=tuple(str(f) for f in features) if features is not None else None,
        kdistill_version=__version__,
    )


def prepare_images(spec: InputSpec, files: list[Path]) -> np.ndarray:
    """Raw image files as the model's input batch: decoded, converted, resized, scaled, standardised.

    The steps of the ``image-folder`` loader (:func:`~kdistill.data.datasets.image_folder.read_image`:
    grey or RGB by the recorded channels, bilinear resize to the recorded size),
    then division by ``pixel_scale`` and the recorded per-channel standardisation.
    """
    if spec.layout != "NCHW" or len(spec.shape) != 3 or spec.shape[0] not in (1, 3):
        raise DataError(f"This model reads {spec.layout} inputs of shape {list(spec.shape)}, not grey or "
                        "RGB images; give it what it was trained on.")
    channels, height, width = spec.shape
    images = [read_image(Path(f), (height, width), grayscale=channels == 1) for f in files]
    x = np.stack(images).astype(np.float32) / np.float32(spec.pixel_scale or PIXEL_SCALE)
    x = x[:, None] if channels == 1 else x.transpose(0, 3, 1, 2)
    if spec.mean is not None and spec.std is not None:
        shape = (1, channels, 1, 1)
        x = (x - np.asarray(spec.mean, np.float32).reshape(shape)) / np.asarray(spec.std, np.float32).reshape(shape)
    return np.ascontiguousarray(x, dtype=np.float32)


def prepare_rows(spec: InputSpec, path: Path) -> np.ndarray:
    """The rows of a CSV/TSV/Parquet table as the model's input batch, scaled as in training.

    Columns are taken by the recorded feature names (others, such as the
    label, are ignored); without recorded names the table must hold exactly
    the model's columns, in order.
    """
    if spec.layout != "features":
        raise DataError(f"This model reads {spec.layout} inputs of shape {list(spec.shape)}, not table "
                        f"rows; give it {'image files' if spec.layout == 'NCHW' else 'what it was trained on'}.")
    table = read_table(path)
    if spec.feature_names is not None:
        missing = [name for name in spec.feature_names if name not in table]
        if missing:
            raise DataError(f"Table {path} lacks {len(missing)} of the {len(spec.feature_names)} columns the "
                            f"model reads: {shorten(', '.join(missing), 200)}. Its header must name them.")
        names = list(spec.feature_names)
    else:
        names = list(table)
        if len(names) != spec.shape[0]:
            raise DataError(f"Table {path} has {len(names)} columns but the model reads {spec.shape[0]} and "
                            "its file records no column names; give exactly its columns, in training order.")
    position = {c: i for i, c in enumerate(table, start=1)}
    x = np.stack([to_numeric(table[c], column_label(position[c], c), path) for c in names], axis=1)
    if spec.mean is not None and spec.std is not None:
        x = (x - np.asarray(spec.mean)) / np.asarray(spec.std)
    return np.ascontiguousarray(x, dtype=np.float32)


def read_input_spec(meta: dict[str, Any], label: str) -> InputSpec | None:
    """The spec recorded in a file's kdistill metadata, or ``None`` when it predates the spec."""
    record = meta.get("input_spec")
    return None if record is None else InputSpec.from_dict(record, label)


def _whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _real(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _numbers(value: Any, length: int | None, label: str, field: str, *,
             positive: bool) -> tuple[float, ...] | None:
    if value is None:
        return None
    wanted = f"a list of {length or 'some'} finite {'positive ' if positive else ''}numbers, or null"
    if not (isinstance(value, list) and value and all(_real(v) and (v > 0 or not positive) for v in value)):
        raise _bad(label, field, wanted, value)
    if length is not None and len(value) != length:
        raise _bad(label, field, wanted, value)
    return tuple(float(v) for v in value)


def _names(value: Any, label: str, field: str) -> tuple[str, ...] | None:
    if value is None:
        return None
    if not (isinstance(value, list) and 0 < len(value) <= MAX_NAMES and all(isinstance(v, str) for v in value)):
        raise _bad(label, field, "a list of names (strings), or null", value)
    return tuple(value)


def _bad(label: str, field: str, wanted: str, value: Any) -> CheckpointError:
    return CheckpointError(
        f"{label} has a malformed input spec: '{field}' must be {wanted}, got {quote(value, 60)}. "
        "The file was edited or written by another tool; export the model again with kdistill.")
