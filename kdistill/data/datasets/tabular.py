"""Generic tables: CSV/TSV (standard library) or Parquet (pyarrow), one label column."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np
import torch

from kdistill.data.prep import split_indices, standardize_columns
from kdistill.data.splits import DataSplits
from kdistill.errors import DataError
from kdistill.registry import register_dataset

PARQUET_SUFFIXES = {".parquet", ".pq"}


def resolve_path(path: str | Path, data_dir: str | Path | None) -> Path:
    """``path`` as given, or relative to ``data_dir`` when it is relative and exists there."""
    p = Path(path).expanduser()
    if not p.is_absolute() and data_dir is not None:
        under = Path(data_dir).expanduser() / p
        if under.exists() or not p.exists():
            p = under
    if not p.exists():
        where = f" (also tried relative to data_dir {data_dir})" if data_dir is not None else ""
        raise DataError(f"Data file or folder {p} does not exist{where}.")
    return p


def read_table(path: Path, delimiter: str | None = None) -> dict[str, list[Any]]:
    """Read a CSV/TSV or Parquet file into ``{column: values}`` (CSV values are strings)."""
    if path.suffix.lower() in PARQUET_SUFFIXES:
        return _read_parquet(path)
    if delimiter is None:
        delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
    try:
        with path.open(newline="", encoding="utf-8-sig") as fh:
            rows = [
                row for row in csv.reader(fh, delimiter=delimiter) if any(c.strip() for c in row)
            ]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"Cannot read table {path}: {exc}.") from None
    if not rows:
        raise DataError(f"Table {path} is empty: expected a header line and data rows.")
    header = [name.strip() for name in rows[0]]
    if len(rows) == 1:
        raise DataError(f"Table {path} has a header but no data rows.")
    for line, row in enumerate(rows[1:], start=2):
        if len(row) != len(header):
            raise DataError(
                f"Table {path}, data row {line - 1}: {len(row)} fields but the header has "
                f"{len(header)} columns (wrong delimiter?)."
            )
    return {name: [row[i].strip() for row in rows[1:]] for i, name in enumerate(header)}


def _read_parquet(path: Path) -> dict[str, list[Any]]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise DataError(f"Reading {path} needs pyarrow: pip install 'kdistill[tabular]'.") from None
    try:
        columns = pq.read_table(path).to_pydict()
    except Exception as exc:  # pyarrow raises many types for a bad file
        raise DataError(f"Cannot read Parquet file {path}: {exc}.") from None
    if not columns or not next(iter(columns.values())):
        raise DataError(f"Table {path} has no rows.")
    return columns


def to_numeric(values: list[Any], column: str, path: Path) -> np.ndarray:
    """A column as float64, or a :class:`DataError` naming the first bad value."""
    try:
        out = np.array([float(v) for v in values], dtype=np.float64)
    except (TypeError, ValueError):
        out = None
    if out is None or not np.isfinite(out).all():
        for row, value in enumerate(values, start=1):
            try:
                ok = np.isfinite(float(value))
            except (TypeError, ValueError):
                ok = False
            if not ok:
                raise DataError(
                    f"Table {path}, column '{column}', data row {row}: value {value!r} is "
                    "missing or not a finite number. Feature columns must be numeric; "
                    "encode categories as numbers or drop the column."
                )
    return out


def encode_labels(values: list[Any]) -> tuple[np.ndarray, list[str]]:
    """Map label values to class ids 0..K-1, ordered numerically if all numeric."""
    try:
        keys: list[Any] = [float(v) for v in values]
    except (TypeError, ValueError):
        keys = [str(v) for v in values]
    classes = sorted(set(keys))
    index = {k: i for i, k in enumerate(classes)}
    names = [str(int(k)) if isinstance(k, float) and k.is_integer() else str(k) for k in classes]
    return np.array([index[k] for k in keys], dtype=np.int64), names


def _split_columns(
    table: dict[str, list[Any]], label_column: str, path: Path
) -> tuple[np.ndarray, list[Any], list[str]]:
    if label_column not in table:
        raise DataError(
            f"Table {path} has no label column '{label_column}'. Columns: "
            f"{', '.join(table)}. Set the dataset option label_column."
        )
    features = [c for c in table if c != label_column]
    if not features:
        raise DataError(f"Table {path} has only the label column '{label_column}'; no features.")
    x = np.stack([to_numeric(table[c], c, path) for c in features], axis=1)
    return x, list(table[label_column]), features


@register_dataset("csv")
@register_dataset("table")
def table(
    *,
    path: str | Path,
    label_column: str = "label",
    test_path: str | Path | None = None,
    test_fraction: float = 0.2,
    seed: int = 0,
    task: str = "classification",
    delimiter: str | None = None,
    normalize: bool = True,
    data_dir: str | Path | None = None,
) -> DataSplits:
    """A CSV/TSV/Parquet table with one label column; every other column is a feature.

    Without ``test_path`` a seeded (stratified, for classification) split holds out
    ``test_fraction`` of the rows. Features are standardised with training
    statistics when ``normalize``. ``task: regression`` keeps float targets and
    sets ``num_classes = 0``; otherwise label values (numbers or strings) become
    class ids and their original values the ``class_names``.
    """
    if task not in ("classification", "regression"):
        raise DataError(f"task must be 'classification' or 'regression', got {task!r}.")
    train_file = resolve_path(path, data_dir)
    x, raw_y, features = _split_columns(read_table(train_file, delimiter), label_column, train_file)
    if test_path is not None:
        test_file = resolve_path(test_path, data_dir)
        x_te, raw_te, test_features = _split_columns(
            read_table(test_file, delimiter), label_column, test_file
        )
        if test_features != features:
            raise DataError(
                f"Test table {test_file} has columns {test_features}, but the training "
                f"table {train_file} has {features}; they must match."
            )
        n_train = len(x)
        x, raw_y = np.concatenate([x, x_te]), raw_y + raw_te
        train_idx, test_idx = np.arange(n_train), np.arange(n_train, len(x))
    else:
        train_idx = test_idx = None

    class_names = None
    if task == "regression":
        y = to_numeric(raw_y, label_column, train_file).astype(np.float32)
        num_classes = 0
    else:
        y, class_names = encode_labels(raw_y)
        num_classes = len(class_names)
        if num_classes < 2:
            raise DataError(
                f"Label column '{label_column}' of {train_file} has a single value; "
                "classification needs at least two classes (or set task: regression)."
            )
    if train_idx is None:
        strat = y if task == "classification" else None
        train_idx, test_idx = split_indices(strat, len(y), test_fraction, seed)

    x_train, x_test = x[train_idx], x[test_idx]
    if normalize:
        x_train, x_test = standardize_columns(x_train, x_test)
    return DataSplits(
        name=train_file.stem,
        x_train=torch.from_numpy(np.ascontiguousarray(x_train, dtype=np.float32)),
        y_train=torch.from_numpy(y[train_idx]),
        x_test=torch.from_numpy(np.ascontiguousarray(x_test, dtype=np.float32)),
        y_test=torch.from_numpy(y[test_idx]),
        num_classes=num_classes,
        input_shape=(x.shape[1],),
        class_names=class_names,
    )
