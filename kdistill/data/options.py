"""Checks on data set loader options, which arrive straight from a user's YAML file.

Each returns the value (converted where that is lossless) or raises
:class:`~kdistill.errors.ConfigError` naming the data set, the option and what
it accepts, so a wrong type never surfaces as a ``TypeError`` deep inside the
csv module, NumPy or scikit-learn.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from kdistill.errors import ConfigError, quote

SEED_LIMIT = 1 << 32  # what NumPy's and scikit-learn's seeded splits accept


def _fail(dataset: str, key: str, wanted: str, value: Any) -> ConfigError:
    return ConfigError(f"Dataset '{dataset}': option {key} must be {wanted}, got {quote(value)}.")


def path_option(dataset: str, key: str, value: Any, *, optional: bool = False) -> str | Path | None:
    if value is None and optional:
        return None
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    if not isinstance(value, str) or not value.strip() or "\x00" in value:
        raise _fail(dataset, key, "a file or folder path (text)", value)
    return value


def text_option(dataset: str, key: str, value: Any, *, optional: bool = False) -> str | None:
    if value is None and optional:
        return None
    if not isinstance(value, str) or not value:
        raise _fail(dataset, key, "a non-empty string", value)
    return value


def choice_option(dataset: str, key: str, value: Any, choices: tuple[str, ...]) -> str:
    if not isinstance(value, str) or value not in choices:
        raise _fail(dataset, key, "one of " + ", ".join(repr(c) for c in choices), value)
    return value


def bool_option(dataset: str, key: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise _fail(dataset, key, "true or false", value)
    return value


def int_option(dataset: str, key: str, value: Any, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise _fail(dataset, key, f"a whole number from {low:,} to {high:,}", value)
    return value


def seed_option(dataset: str, value: Any, key: str = "seed") -> int:
    return int_option(dataset, key, value, 0, SEED_LIMIT - 1)


def fraction_option(dataset: str, key: str, value: Any, *, low_open: bool = True, high_open: bool = True,
                    low: float = 0.0, high: float = 1.0) -> float:
    ok = isinstance(value, int | float) and not isinstance(value, bool)
    if ok:
        above = value > low if low_open else value >= low
        below = value < high if high_open else value <= high
        ok = above and below
    if not ok:
        interval = f"{'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
        raise _fail(dataset, key, f"a number in {interval}", value)
    return float(value)


def delimiter_option(dataset: str, value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or len(value) != 1 or value in "\r\n\"" or value == "\x00":
        raise _fail(dataset, "delimiter", "a single character such as ',' or '\\t' (not a quote or "
                    "line break)", value)
    return value
