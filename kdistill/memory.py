"""Memory the process holds but no longer uses, handed back to the operating system.

At the bottom of the layering (beside :mod:`kdistill.io`), so that the data
loaders (:mod:`kdistill.data.streaming`) and the evaluation
(:func:`kdistill.eval.test_predictions`) both call it right where they fork
DataLoader workers.
"""

from __future__ import annotations

import ctypes
import functools
import sys
from typing import Any


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
