"""User-facing errors.

Every mistake a user can make (a bad config key, a missing data folder, a
teacher whose outputs do not fit the student) raises a subclass of
:class:`KDistillError`. The CLI prints its message as one paragraph and exits
with status 2; library users can catch it.
"""

from __future__ import annotations

import difflib
import reprlib
from typing import Any

# a user's value is echoed in a message at most this long: a 1 MB string or a huge nested
# list in a config must not turn one error paragraph into megabytes of terminal output
QUOTE_LIMIT = 80

_repr = reprlib.Repr()
_repr.maxlevel, _repr.maxlist, _repr.maxtuple, _repr.maxdict, _repr.maxset = 3, 6, 6, 6, 6
_repr.maxstring = _repr.maxother = _repr.maxlong = QUOTE_LIMIT


def quote(value: Any, limit: int = QUOTE_LIMIT) -> str:
    """``repr(value)`` cut to ``limit`` characters, without walking more than a few levels of it."""
    text = _repr.repr(value) if not isinstance(value, str) else repr(value)
    if len(text) > limit:
        text = text[: limit - 3] + "..."
    return text


def shorten(text: Any, limit: int = QUOTE_LIMIT) -> str:
    """``str(text)`` cut to ``limit`` characters (for names and paths quoted inside a message)."""
    text = str(text) if not isinstance(text, str) else text
    return text if len(text) <= limit else text[: limit - 3] + "..."


class KDistillError(Exception):
    """A problem with the user's input, reported without a traceback."""

    exit_code = 2


class ConfigError(KDistillError):
    """The experiment file is malformed or names something that does not exist."""


class DataError(KDistillError):
    """A data set is missing, unreadable or inconsistent."""


class ModelError(KDistillError):
    """Models do not fit together (e.g. teacher and student output shapes differ)."""


class CheckpointError(KDistillError):
    """A checkpoint is missing, corrupt or of the wrong kind."""


class TrainingError(KDistillError):
    """Training cannot continue (e.g. the loss became NaN)."""


class PluginError(ConfigError):
    """A plugin (``--plugin`` or a ``kdistill.plugins`` entry point) cannot be found or fails to import."""


class RunExistsError(ConfigError):
    """An output folder already holds a run that a new run would write over (see kdistill.experiment.runs)."""

    def __init__(self, message: str, path: Any = None) -> None:
        super().__init__(message)
        self.path = path


class OutputError(KDistillError, OSError):
    """A result cannot be written: the folder is read-only, a file, on a full disk, ...

    Also an :class:`OSError`, so code that already catches ``OSError`` around a
    write keeps working; ``path`` is the file or folder that could not be written.
    """

    def __init__(self, message: str, path: Any = None) -> None:
        super().__init__(message)
        self.path = path

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


# registries a user's plugin can add to (kdistill.cli.plugins)
PLUGIN_KINDS = ("model", "method", "dataset", "scheme")


class UnknownNameError(ConfigError, KeyError):
    """A registry lookup for a name that was never registered."""

    def __init__(self, kind: str, name: str, known: list[str], candidates: list[str] | None = None) -> None:
        text = name if isinstance(name, str) else repr(name)
        # difflib is quadratic in the name's length: a pasted paragraph must not hang it
        close: list[str] = []
        near_miss: list[str] = []
        if len(text) <= 200:
            # a near-miss of a registered name wins; else names under a prefix (timm/...) are offered too
            near_miss = difflib.get_close_matches(text, known, n=3, cutoff=0.85)
            close = near_miss or difflib.get_close_matches(text, known + (candidates or []), n=3)
        # a suggestion may be built from the user's text: keep it short too
        hint = f" Did you mean {', '.join(repr(shorten(c)) for c in close)}?" if close else ""
        message = (
            f"Unknown {kind} '{shorten(text)}'.{hint} Available {kind}s: {', '.join(known) or '(none)'}."
        )
        if kind in PLUGIN_KINDS and not near_miss:
            message += (f" A {kind} of your own is registered by a plugin: pass --plugin MODULE_OR_FILE.py "
                        "(in Python, import the module that registers it).")
        super().__init__(message)
        self.kind, self.name, self.known = kind, name, known

    def __str__(self) -> str:  # KeyError would otherwise quote the message
        return self.args[0]
