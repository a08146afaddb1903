"""Run an exported ONNX student on raw inputs: image files or table rows, as it was trained to read them.

The ONNX file carries its input spec (:mod:`kdistill.data.input_spec`), so
nothing else is needed: images are decoded, converted to the recorded
channels, resized to the recorded size, scaled and standardised with the
recorded statistics; table rows are read by the recorded column names and
scaled with the recorded per-column mean and scale. ONNX Runtime runs the
graph; the result names the classes the model was trained on.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from kdistill.compress.export import ort_session, read_deployed_spec
from kdistill.data.datasets.image_folder import EXTENSIONS as IMAGE_SUFFIXES
from kdistill.data.datasets.tabular import PARQUET_SUFFIXES
from kdistill.data.input_spec import InputSpec, prepare_images, prepare_rows
from kdistill.errors import CheckpointError, ConfigError, DataError, shorten
from kdistill.io import atomic_write_text

TABLE_SUFFIXES = {".csv", ".tsv", *PARQUET_SUFFIXES}
#: rows per ONNX Runtime call: bounds memory for long tables
BATCH = 256


@dataclass
class Prediction:
    """One input's result: its probabilities per class (classification) or its value (regression)."""

    input: str
    probabilities: list[float] | None = None
    value: float | None = None

    def top(self, class_names: Sequence[str], k: int) -> list[tuple[str, float]]:
        """The ``k`` most probable classes, most probable first, with their probabilities."""
        assert self.probabilities is not None
        order = np.argsort(-np.asarray(self.probabilities), kind="stable")[:k]
        return [(class_names[i], float(self.probabilities[i])) for i in order]


@dataclass
class Predictions:
    """The results for every input, in input order, and the names of the model's classes."""

    rows: list[Prediction]
    class_names: list[str]
    task: str
    spec: InputSpec


def predict_inputs(model: str | Path, inputs: Sequence[str | Path], *, threads: int = 1) -> Predictions:
    """Predict every image file, folder of images or table file in ``inputs`` with an ONNX ``model``.

    A folder stands for the image files inside it (sorted, recursively); a
    table gives one result per data row, named ``FILE:ROW``. Raises
    :class:`~kdistill.errors.KDistillError` subclasses for a model that is not
    an ONNX export with an input spec, or inputs the model cannot read.
    """
    model = Path(model)
    if model.suffix.lower() != ".onnx":
        raise ConfigError(f"kdistill predict runs ONNX files; '{shorten(model, 200)}' is not one. Export "
                          "the checkpoint first: kdistill export CHECKPOINT --format onnx.")
    spec, _ = read_deployed_spec(model)
    if spec is None:
        raise CheckpointError(f"'{shorten(model, 200)}' records no input spec, so its inputs cannot be "
                              "prepared: it was exported by an older kdistill, or from a checkpoint that "
                              "predates the spec. Export it again with kdistill export CHECKPOINT --format "
                              "onnx; if the checkpoint lacks the spec too, retrain it with this version.")
    if spec.task not in ("classification", "regression") or spec.layout == "tokens":
        raise ConfigError(f"kdistill predict reads image files and table rows for classifiers and "
                          f"regressors; this model is a {spec.task} model on {spec.layout} inputs.")
    if not inputs:
        raise ConfigError("Give at least one input: image files, folders of images, or CSV/TSV/Parquet files.")
    names, x = _read_inputs(spec, [Path(p) for p in inputs])
    session = ort_session(model, threads)
    feed = session.get_inputs()[0].name
    outputs = np.concatenate([session.run(None, {feed: x[i:i + BATCH]})[0] for i in range(0, len(x), BATCH)])
    if spec.task == "regression":
        rows = [Prediction(name, value=float(v)) for name, v in zip(names, outputs.reshape(len(x), -1)[:, 0])]
        return Predictions(rows, [], spec.task, spec)
    probabilities = _softmax(outputs.astype(np.float64))
    classes = list(spec.class_names) if spec.class_names else [str(i) for i in range(outputs.shape[1])]
    if len(classes) != outputs.shape[1]:
        raise CheckpointError(f"'{shorten(model, 200)}' names {len(classes)} classes but outputs "
                              f"{outputs.shape[1]} scores; export it again from its checkpoint.")
    rows = [Prediction(name, probabilities=p.tolist()) for name, p in zip(names, probabilities)]
    return Predictions(rows, classes, spec.task, spec)


def _read_inputs(spec: InputSpec, inputs: list[Path]) -> tuple[list[str], np.ndarray]:
    images: list[Path] = []
    tables: list[Path] = []
    for path in inputs:
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                raise DataError(f"Folder {path} holds no image files ({', '.join(sorted(IMAGE_SUFFIXES))}).")
            images.extend(found)
        elif not path.is_file():
            raise DataError(f"Input {path} does not exist.")
        elif path.suffix.lower() in IMAGE_SUFFIXES:
            images.append(path)
        elif path.suffix.lower() in TABLE_SUFFIXES:
            tables.append(path)
        else:
            raise DataError(f"Input {path} is neither an image ({', '.join(sorted(IMAGE_SUFFIXES))}) nor a "
                            f"table ({', '.join(sorted(TABLE_SUFFIXES))}).")
    wanted = "images" if spec.layout == "NCHW" else "tables"
    wrong = tables if wanted == "images" else images
    if wrong:
        raise DataError(f"This model reads {wanted} ({spec.layout} inputs of shape {list(spec.shape)}), but "
                        f"{wrong[0]} is {'a table' if wanted == 'images' else 'an image'}.")
    if images:
        return [str(p) for p in images], prepare_images(spec, images)
    names: list[str] = []
    parts = []
    for table in tables:
        rows = prepare_rows(spec, table)
        names.extend(f"{table}:{i}" for i in range(1, len(rows) + 1))
        parts.append(rows)
    return names, np.concatenate(parts)


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(shifted)
    return e / e.sum(axis=1, keepdims=True)


def as_records(result: Predictions, top_k: int) -> list[dict[str, Any]]:
    """Plain-data rows (for JSON): each input with its ``top_k`` most probable classes, or its value."""
    if result.task == "regression":
        return [{"input": r.input, "value": r.value} for r in result.rows]
    k = _top_k(top_k, result)
    return [{"input": r.input, "top": [{"class": c, "probability": p} for c, p in r.top(result.class_names, k)]}
            for r in result.rows]


def as_table(result: Predictions, top_k: int) -> str:
    """CSV text: ``input,value`` or ``input,class_1,probability_1,...`` up to ``top_k``."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    if result.task == "regression":
        writer.writerow(["input", "value"])
        writer.writerows([r.input, repr(r.value)] for r in result.rows)
        return buffer.getvalue()
    k = _top_k(top_k, result)
    writer.writerow(["input", *[f"{what}_{i}" for i in range(1, k + 1) for what in ("class", "probability")]])
    for r in result.rows:
        writer.writerow([r.input, *[v for pair in r.top(result.class_names, k) for v in pair]])
    return buffer.getvalue()


def write_predictions(result: Predictions, path: str | Path, top_k: int) -> Path:
    """Write the results as CSV (``.csv``) or JSON (``.json``), atomically."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".csv", ".json"):
        raise ConfigError(f"Predictions are written as .csv or .json; '{shorten(path, 200)}' is neither.")
    text = as_table(result, top_k) if suffix == ".csv" else json.dumps(as_records(result, top_k), indent=2) + "\n"
    atomic_write_text(path, text, "predictions file")
    return path


def _top_k(top_k: int, result: Predictions) -> int:
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
        raise ConfigError(f"top-k must be a whole number of at least 1, got {top_k!r}.")
    return min(top_k, len(result.class_names))
