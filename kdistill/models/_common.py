"""Argument checking shared by the model factories.

Factories receive keyword arguments straight from a user's YAML file, so every
mistake is reported as a :class:`~kdistill.errors.ConfigError` that names the
model and what it accepts, instead of a ``TypeError`` deep inside ``nn.Module``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from kdistill.errors import ConfigError, quote, shorten

# The largest model a factory builds: 2 billion parameters are 8 GB as float32 before gradients
# and optimiser state triple that. An option beyond it (a typo such as hidden: [1000000000]) is
# refused by its name before anything is allocated.
MAX_PARAMETERS = 2_000_000_000
MAX_LAYERS = 1024  # blocks, layers or list entries in one model


def merge_kwargs(model: str, kwargs: Mapping[str, Any], defaults: Mapping[str, Any]) -> dict:
    """Return ``defaults`` updated with ``kwargs``; reject keys not in ``defaults``."""
    unknown = sorted(set(kwargs) - set(defaults))
    if unknown:
        allowed = ", ".join(sorted(defaults)) or "(none)"
        raise ConfigError(
            f"Model '{model}' got unknown option(s) {shorten(', '.join(map(str, unknown)), 200)}. "
            f"Allowed options: {allowed}."
        )
    return {**defaults, **kwargs}


def output_size(model: str, num_classes: int) -> int:
    """Number of logits: one per class, or a single value for regression (``num_classes == 0``)."""
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 0:
        raise ConfigError(
            f"Model '{model}': num_classes must be an integer >= 0, got {quote(num_classes)}."
        )
    return num_classes if num_classes > 0 else 1  # huge counts are caught by check_parameters


def flat_size(model: str, input_shape: Sequence[int]) -> int:
    """Features seen by a fully connected net after flattening one sample."""
    shape = _shape(model, input_shape)
    return math.prod(shape)


def image_shape(model: str, input_shape: Sequence[int]) -> tuple[int, int, int]:
    """``(channels, height, width)``; convolutional nets cannot take flat tables."""
    shape = _shape(model, input_shape)
    if len(shape) != 3:
        raise ConfigError(
            f"Model '{model}' needs image input of shape (channels, height, width), "
            f"got input_shape {shape}. Use an mlp-* or hinton-* model for tabular data."
        )
    return shape  # type: ignore[return-value]


def positive_ints(model: str, key: str, value: Any, length: int | None = None) -> tuple[int, ...]:
    """Validate a width/depth list from a config file."""
    ok = isinstance(value, Sequence) and not isinstance(value, str | bytes)
    items = tuple(value) if ok and len(value) <= MAX_LAYERS else ()
    ok = ok and len(value) <= MAX_LAYERS and all(
        isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in items)
    if not ok or (length is not None and len(items) != length):
        size = f"{length} " if length is not None else f"at most {MAX_LAYERS} "
        raise ConfigError(
            f"Model '{model}': {key} must be a list of {size}positive integers, got {quote(value)}."
        )
    return items


def positive_int(model: str, key: str, value: Any, high: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0 or (high is not None and value > high):
        limit = f" of at most {high:,}" if high is not None else ""
        raise ConfigError(f"Model '{model}': {key} must be a positive integer{limit}, got {quote(value)}.")
    return value


def probability(model: str, key: str, value: Any) -> float:
    """A dropout rate in ``[0, 1)``; 1 would zero every activation."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
        raise ConfigError(f"Model '{model}': {key} must be a number in [0, 1), got {quote(value)}.")
    return float(value)


def check_parameters(model: str, count: int, options: str) -> None:
    """Refuse, before allocating, a model of more than :data:`MAX_PARAMETERS` parameters.

    ``count`` is the factory's estimate (exact for the zoo's nets); ``options``
    names what to make smaller, e.g. ``"hidden"``.
    """
    if count > MAX_PARAMETERS:
        gib = count * 4 / 2**30
        raise ConfigError(
            f"Model '{model}' would have about {count:.3g} parameters ({gib:,.0f} GiB as float32), more "
            f"than the {MAX_PARAMETERS:,} kdistill builds; make {options} smaller."
        )


def mlp_parameters(in_features: int, hidden: Sequence[int], out_features: int) -> int:
    """Weights and biases of the Linear chain ``in -> hidden... -> out``."""
    widths = [in_features, *hidden, out_features]
    return sum((a + 1) * b for a, b in zip(widths, widths[1:]))


def _shape(model: str, input_shape: Sequence[int]) -> tuple[int, ...]:
    try:
        shape = tuple(int(d) for d in input_shape)
    except (TypeError, ValueError):
        shape = ()
    if not shape or any(d <= 0 for d in shape):
        raise ConfigError(
            f"Model '{model}': input_shape must be a non-empty tuple of positive sizes, "
            f"got {quote(input_shape)}."
        )
    return shape
