"""Options of a registered entry (a loss term, a scheme) checked against its signature's type hints.

A config names an entry and gives it options (``{name: dkd, options:
{warmup_epochs: 5}}``); the entry's constructor or function declares which
options exist and of what type. :func:`check_options` is the one place that
compares the two, so an option of the wrong type is a
:class:`~kdistill.errors.ConfigError` naming the option and the expected type
instead of a value silently truncated (``2.7`` epochs becoming 2) or a YAML
boolean read as a number (``on`` becoming 1).
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable, Iterable
from typing import Any

from pydantic import TypeAdapter, ValidationError

from kdistill.errors import ConfigError, quote

_BOOL_HINT = ("YAML reads unquoted yes/no/on/off/true/false as booleans, which are not numbers or "
              "names here")


def parameters(fn: Callable[..., Any], skip: Iterable[str] = ()) -> dict[str, inspect.Parameter]:
    """The parameters of ``fn`` a config may set (for a class: its constructor's), minus ``skip``."""
    skipped = {"self", *skip}
    return {name: p for name, p in inspect.signature(fn).parameters.items()
            if name not in skipped and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}


def accepts_any_keyword(fn: Callable[..., Any]) -> bool:
    return any(p.kind is p.VAR_KEYWORD for p in inspect.signature(fn).parameters.values())


def type_name(hint: Any) -> str:
    """``int``, ``float``, ``str | None``, ``Literal['mse', 'huber']``: a type hint as a user reads it."""
    if typing.get_origin(hint) is typing.Annotated:  # the bounds are in the validation message
        return type_name(typing.get_args(hint)[0])
    if isinstance(hint, type) and not typing.get_args(hint):
        return hint.__name__
    return str(hint).replace("typing.", "").replace("collections.abc.", "")


def check_options(what: str, fn: Callable[..., Any], options: dict[str, Any], *,
                  skip: Iterable[str] = ()) -> dict[str, Any]:
    """``options`` checked against ``fn``'s keyword parameters and converted to their hinted types.

    ``what`` names the entry in messages (``"Method 'dkd'"``). Unknown names
    are refused unless ``fn`` takes ``**kwargs``; a value of the wrong type is
    refused naming the option and the expected type. A YAML boolean is never
    taken for a number or a string, and a number with a fractional part is
    never truncated to an integer. Parameters without a type hint accept any
    value.
    """
    params = parameters(fn, skip)
    unknown = sorted(set(options) - set(params))
    if unknown and not accepts_any_keyword(fn):
        raise ConfigError(f"{what} has no option {', '.join(repr(u) for u in unknown)}; "
                          f"its options are: {', '.join(params) or '(none)'}.")
    hints = _hints(fn)
    checked = {}
    for key, value in options.items():
        hint = hints.get(key)
        checked[key] = value if hint is None else _convert(what, key, value, hint)
    return checked


def _hints(fn: Callable[..., Any]) -> dict[str, Any]:
    target = fn.__init__ if isinstance(fn, type) else fn
    try:
        return typing.get_type_hints(target, include_extras=True)  # Annotated bounds (le=...) included
    except Exception:  # a hint naming something its module cannot resolve: leave those options unchecked
        return {}


def _convert(what: str, key: str, value: Any, hint: Any) -> Any:
    adapter = TypeAdapter(hint)
    try:
        return adapter.validate_python(value, strict=True)
    except ValidationError:
        pass
    if _holds_bool(value):
        raise ConfigError(f"{what}: option '{key}' is {quote(value)}, but it must be of type {type_name(hint)} "
                          f"({_BOOL_HINT}).") from None
    try:  # lax mode: a whole number 2.0 for an int, a list for a tuple, a string for a path
        return adapter.validate_python(value, strict=False)
    except ValidationError as error:
        problem = error.errors()[0]["msg"]
        raise ConfigError(f"{what}: option '{key}' is {quote(value)}, but it must be of type {type_name(hint)} "
                          f"({problem}).") from None


def _holds_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return True
    if isinstance(value, dict):
        return any(_holds_bool(v) for v in value.values())
    if isinstance(value, list | tuple):
        return any(_holds_bool(v) for v in value)
    return False
