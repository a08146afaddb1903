"""Reading batches from DataLoader workers: memory handed back before they fork, their errors in words.

At the bottom of the layering (beside :mod:`kdistill.io`), so that training
(:mod:`kdistill.data.streaming`, :mod:`kdistill.train.loop`) and the test
evaluation (:func:`kdistill.eval.test_predictions`) read workers the same way.
"""

from __future__ import annotations

import ctypes
import functools
import sys
from collections.abc import Iterable, Iterator
from typing import Any

from torch.utils.data import DataLoader

from kdistill.errors import DataError, KDistillError


@functools.cache
def _malloc_trim() -> Any:
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None).malloc_trim  # glibc; musl has none
    except (OSError, AttributeError):
        return None


def release_free_memory() -> None:
    """Hand the C heap's free pages back to the operating system (glibc's ``malloc_trim``; elsewhere
    nothing).

    A DataLoader worker is forked from this process and shares its pages copy-on-write, the free pages
    the allocator keeps for reuse included; every such page this process later writes to (the next
    batch's activations) becomes a private copy held by each worker alive since. Trimmed just before
    the workers start, memory freed earlier (an evaluation batch's activations, say) is not duplicated
    into them. It changes no value, only what stays resident.
    """
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


def worker_errors_in_words(batches: Iterable[Any]) -> Iterator[Any]:
    """``batches``, with a kdistill error raised in a DataLoader worker re-raised as its own message,
    of its own class.

    The DataLoader re-raises a worker's exception with the worker's traceback
    pasted into the message; a user mistake (a damaged image) should read as
    the one paragraph kdistill wrote. Before a DataLoader forks its workers,
    the heap's free pages are released (:func:`release_free_memory`).
    """
    if isinstance(batches, DataLoader) and batches.num_workers > 0:
        release_free_memory()  # the workers about to be forked should not inherit freed memory
    try:
        yield from batches
    except KDistillError as error:
        text = str(error)
        if "Original Traceback" not in text:
            raise
        last = [line for line in text.strip().splitlines() if line.strip()][-1]
        message = last.split(": ", 1)[1] if last.startswith(("kdistill.", type(error).__name__)) else last
        try:  # the worker's error class (a ConfigError stays one), as the DataLoader rebuilt it
            again = type(error)(message)
        except Exception:  # noqa: BLE001 - a class that takes other arguments: still the same words
            again = DataError(message)
        raise again from None
