"""User-facing errors.

Every mistake a user can make (a bad config key, a missing data folder, a
teacher whose outputs do not fit the student) raises a subclass of
:class:`KDistillError`. The CLI prints its message as one paragraph and exits
with status 2; library users can catch it.
"""

from __future__ import annotations

import difflib


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


class OutputError(KDistillError):
    """A result cannot be written where it should go (read-only, not a folder, disk full)."""


class TrainingError(KDistillError):
    """Training cannot continue (e.g. the loss became NaN)."""


class UnknownNameError(ConfigError, KeyError):
    """A registry lookup for a name that was never registered."""

    def __init__(self, kind: str, name: str, known: list[str]) -> None:
        close = difflib.get_close_matches(name, known, n=3)
        hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        message = (
            f"Unknown {kind} '{name}'.{hint} Available {kind}s: {', '.join(known) or '(none)'}."
        )
        super().__init__(message)
        self.kind, self.name, self.known = kind, name, known

    def __str__(self) -> str:  # KeyError would otherwise quote the message
        return self.args[0]
