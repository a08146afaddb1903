"""Generic tables: CSV/TSV (standard library) or Parquet (pyarrow), one label column.

Error messages name the file, the row and the column's position but never
quote what the file holds: a checkpoint's data record can point this loader at
any local file, and ``kdistill evaluate`` must not print its lines.
"""

from __future__ import annotations

import collections
import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from kdistill.data.options import (
    bool_option,
    choice_option,
    delimiter_option,
    fraction_option,
    path_option,
    seed_option,
    text_option,
)
from kdistill.data.prep import split_indices, standardize_columns
from kdistill.data.splits import DataSplits
from kdistill.errors import ConfigError, DataError, quote
from kdistill.io import check_input_path
from kdistill.registry import register_dataset

PARQUET_SUFFIXES = {".parquet", ".pq"}


def resolve_path(path: str | Path, data_dir: str | Path | None) -> Path:
    """``path`` as given, or relative to ``data_dir`` when it is relative and exists there."""
    try:
        p = Path(path).expanduser()
        root = Path(data_dir).expanduser() if data_dir is not None else None
    except RuntimeError:  # "~someone" whose home folder is unknown
        raise DataError(f"Data path {path} starts with '~' but that home folder is unknown.") from None
    if not p.is_absolute() and root is not None:
        under = root / p
        if under.exists() or not p.exists():
            p = under
    if not p.exists():
        where = f" (also tried relative to data_dir {data_dir})" if data_dir is not None else ""
        raise DataError(f"Data file or folder {p} does not exist{where}.")
    return check_input_path(p, "Data path")


def read_table(path: Path, delimiter: str | None = None) -> dict[str, list[Any]]:
    """Read a CSV/TSV or Parquet file into ``{column: values}`` (CSV values are strings)."""
    check_input_path(path, "Table")  # a FIFO would block, /dev/zero never end
    if path.suffix.lower() in PARQUET_SUFFIXES:
        return _read_parquet(path)
    if delimiter is None:
        delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
    delimiter = delimiter_option("csv", delimiter)
    if path.is_dir():
        raise DataError(f"Table {path} is a folder; give the CSV/TSV/Parquet file inside it.")
    try:
        with path.open(newline="", encoding="utf-8-sig") as fh:
            rows = [
                row for row in csv.reader(fh, delimiter=delimiter) if any(c.strip() for c in row)
            ]
    except UnicodeDecodeError as exc:
        raise DataError(f"Cannot read table {path}: it is not UTF-8 text (offset {exc.start}).") from None
    except OSError as exc:
        raise DataError(f"Cannot read table {path}: {exc.strerror or type(exc).__name__}.") from None
    except csv.Error as exc:
        raise DataError(f"Cannot read table {path}: {_first_line(exc)}.") from None
    if not rows:
        raise DataError(f"Table {path} is empty: expected a header line and data rows.")
    header = [name.strip() for name in rows[0]]
    _check_header(header, path)
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
        loaded = pq.read_table(path)
        _check_header([str(name) for name in loaded.column_names], path)
        columns = loaded.to_pydict()
    except DataError:
        raise
    except Exception as exc:  # pyarrow raises many types for a bad file
        raise DataError(f"Cannot read Parquet file {path} ({type(exc).__name__}); is it a Parquet "
                        "file, and complete?") from None
    if not columns or not next(iter(columns.values())):
        raise DataError(f"Table {path} has no rows.")
    return columns


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0][:120] if text else type(error).__name__


def _check_header(header: list[str], path: Path) -> None:
    """Refuse a header naming one column twice: the later one would silently replace the earlier."""
    seen: dict[str, int] = {}
    for i, name in enumerate(header, start=1):
        if name in seen:
            raise DataError(
                f"Table {path}: header columns {seen[name]} and {i} have the same name; column names "
                "must be unique, or one column would silently replace the other. Rename one of them.")
        seen[name] = i


def _number(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError, OverflowError):
        return None


def _problem(value: Any) -> str:
    if value is None or (isinstance(value, str) and not value.strip()):
        return "is empty (a missing value?)"
    number = _number(value)
    if number is None:
        return "is not a number"
    return "is not a finite number (nan or inf: a missing value?)"


#: values read as missing (besides an empty field), compared without case
MISSING_WORDS = {"na", "n/a", "nan", "null", "none", "?"}
MISSING_POLICIES = ("error", "drop", "mean", "zero")
ENCODINGS = ("onehot", "ordinal")


def is_missing(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, float):
        return bool(np.isnan(value))
    return isinstance(value, str) and (not value.strip() or value.strip().lower() in MISSING_WORDS)


def to_numeric(values: list[Any], column: str, path: Path, *, allow_missing: bool = False) -> np.ndarray:
    """A column as float64, or a :class:`DataError` naming the first bad row (not its value).

    With ``allow_missing``, missing values (see :data:`MISSING_WORDS`) become NaN for the
    missing-value policy to handle; otherwise they are refused like any other non-number.
    """
    numbers = [_number(v) for v in values]
    if all(n is not None for n in numbers):
        out = np.array(numbers, dtype=np.float64)
        if np.isfinite(out).all():
            return out
    out = np.empty(len(values), dtype=np.float64)
    for row, (value, number) in enumerate(zip(values, numbers, strict=True), start=1):
        if allow_missing and is_missing(value):
            out[row - 1] = np.nan
            continue
        if number is None or not np.isfinite(number):
            hint = ("set the dataset option missing (drop, mean or zero) to handle missing values"
                    if is_missing(value) else "list text columns under the dataset option categorical "
                    "(one-hot or ordinal codes), or drop the column with drop: [NAME]")
            raise DataError(
                f"Table {path}, {column}, data row {row}: the value {_problem(value)}. Feature "
                f"columns must be numeric; {hint}."
            )
        out[row - 1] = number
    return out


def check_labels(values: list[Any], column: str, path: Path | None) -> None:
    """Refuse empty, nan and inf labels: they would silently become classes of their own."""
    for row, value in enumerate(values, start=1):
        number = _number(value)
        empty = value is None or (isinstance(value, str) and not value.strip())
        if empty or (number is not None and not np.isfinite(number)):
            where = f"Table {path}, label column '{column}'" if path is not None else f"Label column '{column}'"
            raise DataError(
                f"{where}, data row {row}: the label {_problem(value)}. Every row needs a class; "
                "drop the rows without one or fill them in."
            )


def encode_labels(values: list[Any], column: str = "label", path: Path | None = None) -> tuple[np.ndarray, list[str]]:
    """Map label values to class ids 0..K-1, ordered numerically if all numeric.

    Empty, nan and inf labels raise :class:`DataError` (see :func:`check_labels`).
    """
    check_labels(values, column, path)
    try:
        keys: list[Any] = [float(v) for v in values]
    except (TypeError, ValueError):
        keys = [str(v) for v in values]
    classes = sorted(set(keys))
    index = {k: i for i, k in enumerate(classes)}
    names = [str(int(k)) if isinstance(k, float) and k.is_integer() else str(k) for k in classes]
    return np.array([index[k] for k in keys], dtype=np.int64), names


def column_label(position: int, name: str) -> str:
    """How a message names a table's column: its place (from 1) and its name as the header spells it."""
    return f"column {position} ({quote(name, 60)})"


def _names_option(name: str, key: str, value: Any) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise ConfigError(f"Dataset '{name}': option {key} must be a list of column names, got {quote(value)}.")
    twice = sorted(v for v, n in collections.Counter(value).items() if n > 1)
    if twice:  # a feature read twice would silently weigh double
        raise ConfigError(f"Dataset '{name}': option {key} names {quote(twice[0], 60)} more than once; list each "
                          "column once.")
    return list(value)


def _categorical_option(name: str, value: Any) -> dict[str, str]:
    """``categorical``: a list of column names (one-hot) or ``{column: onehot | ordinal}``."""
    if value is None:
        return {}
    if isinstance(value, list):
        return {column: "onehot" for column in _names_option(name, "categorical", value)}
    if isinstance(value, dict) and all(isinstance(k, str) and k and v in ENCODINGS for k, v in value.items()):
        return dict(value)
    raise ConfigError(f"Dataset '{name}': option categorical must be a list of column names (one-hot) or a "
                      f"mapping of column names to onehot or ordinal, got {quote(value)}.")


@dataclass(frozen=True)
class ColumnSpec:
    """Which columns become features and how: the table options, checked once."""

    label: str
    columns: list[str]
    drop: list[str]
    categorical: dict[str, str]
    missing: str

    def features(self, table: dict[str, list[Any]], path: Path) -> list[str]:
        """The feature columns of ``table``, in the file's order (or the order ``columns`` gives)."""
        for role, names in (("feature", self.columns), ("dropped", self.drop),
                            ("categorical", list(self.categorical))):
            for column in names:
                if column not in table:
                    raise DataError(missing_column(path, role, column, len(table), option=role_option(role)))
        chosen = self.columns or [c for c in table if c != self.label]
        if self.label in self.columns:
            raise ConfigError(f"The label column '{self.label}' is also listed under columns; a feature must "
                              "not be the label.")
        return [c for c in chosen if c not in self.drop and c != self.label]


def role_option(role: str) -> str:
    return {"feature": "columns", "dropped": "drop", "categorical": "categorical"}.get(role, f"{role}_column")


def _split_columns(
    table: dict[str, list[Any]], spec: ColumnSpec, path: Path, categories: dict[str, list[str]] | None = None,
) -> tuple[np.ndarray, list[Any], list[str], dict[str, list[str]]]:
    """Features as float64 (NaN where a value is missing and the policy keeps the row), the raw labels,
    the feature names (one per one-hot category) and each categorical column's categories.

    ``categories`` from the training table make a test table's codes match; a
    category the training table lacks is all zeros in one-hot, an error in
    ordinal codes.
    """
    if spec.label not in table:
        raise DataError(missing_column(path, "label", spec.label, len(table)))
    features = spec.features(table, path)
    if not features:
        raise DataError(f"Table {path} has no feature columns besides the label column '{spec.label}' "
                        "(check the options columns and drop).")
    position = {c: i for i, c in enumerate(table, start=1)}
    learned = dict(categories or {})
    blocks, names = [], []
    for column in features:
        where = column_label(position[column], column)
        encoding = spec.categorical.get(column)
        if encoding is None:
            blocks.append(to_numeric(table[column], where, path, allow_missing=spec.missing != "error")[:, None])
            names.append(column)
            continue
        values = table[column]
        missing = [is_missing(v) for v in values]
        if spec.missing == "error" and any(missing):
            row = missing.index(True) + 1
            raise DataError(f"Table {path}, {where}, data row {row}: the value is missing. Set the dataset "
                            "option missing (drop, mean or zero) to handle missing values.")
        if column not in learned:
            learned[column] = sorted({str(v).strip() for v, gone in zip(values, missing, strict=True) if not gone})
        index = {c: i for i, c in enumerate(learned[column])}
        codes = np.array([np.nan if gone else index.get(str(v).strip(), -1)
                          for v, gone in zip(values, missing, strict=True)], dtype=np.float64)
        if encoding == "ordinal":
            unknown = np.flatnonzero(codes == -1)
            if len(unknown):
                raise DataError(f"Table {path}, {where}, data row {unknown[0] + 1}: a category the training table "
                                "does not have; ordinal codes cannot place it (use onehot for this column).")
            blocks.append(codes[:, None])
            names.append(column)
        else:
            onehot = np.zeros((len(values), len(learned[column])), dtype=np.float64)
            rows = np.flatnonzero(codes >= 0)
            onehot[rows, codes[rows].astype(np.int64)] = 1.0
            onehot[np.isnan(codes)] = np.nan  # missing stays missing for the policy
            blocks.append(onehot)
            names += [f"{column}={c}" for c in learned[column]]
    return np.concatenate(blocks, axis=1), list(table[spec.label]), names, learned


def _apply_missing(x: np.ndarray, train_idx: np.ndarray, policy: str) -> np.ndarray:
    """Fill NaN features with the training rows' column mean, or zero (``drop`` removed such rows before)."""
    gaps = np.isnan(x)
    if not gaps.any():
        return x
    if policy == "zero":
        fill = np.zeros(x.shape[1])
    else:
        with np.errstate(all="ignore"):
            fill = np.nanmean(x[train_idx], axis=0)
        fill = np.where(np.isnan(fill), 0.0, fill)  # a column missing in every training row
    return np.where(gaps, fill[None, :], x)


def _drop_missing(x: np.ndarray, raw_y: list[Any], policy: str) -> tuple[np.ndarray, list[Any]]:
    if policy != "drop":
        return x, raw_y
    keep = ~np.isnan(x).any(axis=1)
    if not keep.any():
        raise DataError("Every row of the table has a missing feature value; missing: drop leaves no rows.")
    return x[keep], [value for value, kept in zip(raw_y, keep, strict=True) if kept]


def missing_column(path: Path, role: str, name: str, count: int, option: str | None = None) -> str:
    """Why a column is missing, without quoting the file's header (see the module docstring)."""
    return (f"Table {path} has no {role} column '{name}' among the {count} columns of its header "
            f"(its first line; see them with: head -1 '{path}'). Set the dataset option "
            f"{option or role + '_column'} to {'one of them' if option is None else 'names among them'}.")


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
    columns: list[str] | None = None,
    drop: list[str] | None = None,
    categorical: list[str] | dict[str, str] | None = None,
    missing: str = "error",
    data_dir: str | Path | None = None,
) -> DataSplits:
    """A CSV/TSV/Parquet table with one label column; the other columns are features.

    ``columns`` (names) selects the feature columns, in that order; ``drop``
    (names) leaves columns out (an id column, a leak of the label). Text columns
    are features only when listed under ``categorical``: a list of names
    (one-hot: one 0/1 feature per category seen in the training table) or
    ``{name: onehot | ordinal}`` (ordinal: the category's rank in sorted
    order). ``missing`` says what an empty, NA, N/A, null, None, nan or ? value
    does: ``error`` (the default: refused, naming the column's position and the
    row), ``drop`` (the row is left out), ``mean`` (the training rows' mean of
    the column) or ``zero``.

    Without ``test_path`` a seeded (stratified, for classification) split holds out
    ``test_fraction`` of the rows. Features are standardised with training
    statistics when ``normalize``. ``task: regression`` keeps float targets and
    sets ``num_classes = 0``; otherwise label values (numbers or strings) become
    class ids and their original values the ``class_names``.
    """
    name = "csv"
    path = path_option(name, "path", path)
    test_path = path_option(name, "test_path", test_path, optional=True)
    label_column = text_option(name, "label_column", label_column)
    fraction_option(name, "test_fraction", test_fraction)
    seed_option(name, seed)
    choice_option(name, "task", task, ("classification", "regression"))
    delimiter = delimiter_option(name, delimiter)
    bool_option(name, "normalize", normalize)
    spec = ColumnSpec(label=label_column, columns=_names_option(name, "columns", columns),
                      drop=_names_option(name, "drop", drop), categorical=_categorical_option(name, categorical),
                      missing=choice_option(name, "missing", missing, MISSING_POLICIES))
    train_file = resolve_path(path, data_dir)
    x, raw_y, features, categories = _split_columns(read_table(train_file, delimiter), spec, train_file)
    x, raw_y = _drop_missing(x, raw_y, spec.missing)
    if task == "classification":
        check_labels(raw_y, label_column, train_file)
    if test_path is not None:
        test_file = resolve_path(test_path, data_dir)
        x_te, raw_te, test_features, _ = _split_columns(read_table(test_file, delimiter), spec, test_file,
                                                        categories)
        x_te, raw_te = _drop_missing(x_te, raw_te, spec.missing)
        if task == "classification":
            check_labels(raw_te, label_column, test_file)
        if test_features != features:
            raise DataError(
                f"Test table {test_file} has {len(test_features)} feature columns that differ from "
                f"the {len(features)} of the training table {train_file} (names or order); their "
                "headers must match."
            )
        n_train = len(x)
        x, raw_y = np.concatenate([x, x_te]), raw_y + raw_te
        train_idx, test_idx = np.arange(n_train), np.arange(n_train, len(x))
    else:
        train_idx = test_idx = None

    class_names = None
    if task == "regression":
        y = to_numeric(raw_y, f"label column '{label_column}'", train_file).astype(np.float32)
        num_classes = 0
    else:
        y, class_names = encode_labels(raw_y, label_column, train_file)
        num_classes = len(class_names)
        if num_classes < 2:
            raise DataError(
                f"Label column '{label_column}' of {train_file} has a single value; "
                "classification needs at least two classes (or set task: regression)."
            )
    if train_idx is None:
        strat = y if task == "classification" else None
        train_idx, test_idx = split_indices(strat, len(y), test_fraction, seed)

    if spec.missing in ("mean", "zero"):
        x = _apply_missing(x, train_idx, spec.missing)
    x_train, x_test = x[train_idx], x[test_idx]
    mean = std = None
    if normalize:
        x_train, x_test, mean, std = standardize_columns(x_train, x_test)
    return DataSplits(
        name=train_file.stem,
        x_train=torch.from_numpy(np.ascontiguousarray(x_train, dtype=np.float32)),
        y_train=torch.from_numpy(y[train_idx]),
        x_test=torch.from_numpy(np.ascontiguousarray(x_test, dtype=np.float32)),
        y_test=torch.from_numpy(y[test_idx]),
        num_classes=num_classes,
        input_shape=(x.shape[1],),
        class_names=class_names,
        mean=mean,
        std=std,
        feature_names=features,
    )
