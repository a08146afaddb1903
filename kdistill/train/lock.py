"""One writer per run folder: an advisory lock held while a process trains into it.

Two processes training into the same folder would interleave their
checkpoints (and remove each other's temporary files). The first one to
start holds an exclusive ``flock`` on ``FOLDER/.kdistill.lock``; a second is
refused with a message naming the holder, or waits for it with ``wait=True``.
The kernel releases the lock when its holder exits, also after ``kill -9``,
so a stale lock file never blocks anyone; a holder that finishes removes the
file, so a clean exit leaves nothing behind. Systems without ``fcntl`` (Windows)
run unlocked.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from pathlib import Path

from kdistill.errors import ConfigError

try:
    import fcntl
except ImportError:  # pragma: no cover - not on POSIX
    fcntl = None

log = logging.getLogger("kdistill")

LOCK_NAME = ".kdistill.lock"
_HELD: dict[Path, int] = {}  # folders this process holds, with their nesting depth


@contextlib.contextmanager
def folder_lock(folder: str | Path, what: str = "training", *, wait: bool = False) -> Iterator[None]:
    """Hold the run lock of ``folder`` (created if missing) for the duration of the block."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    key = folder.resolve()
    if fcntl is None or key in _HELD:  # re-entrant: this process already holds it
        _HELD[key] = _HELD.get(key, 0) + 1
        try:
            yield
        finally:
            _HELD[key] -= 1
            if not _HELD[key]:
                del _HELD[key]
        return
    fd = _acquire(folder, what, wait)
    _HELD[key] = 1
    try:
        yield
    finally:
        del _HELD[key]
        # removed while still held, so a process that opens the name afterwards gets a new file
        # (and _acquire tells one that locked the old file to try again): nothing stays behind
        with contextlib.suppress(OSError):
            (folder / LOCK_NAME).unlink()
        os.close(fd)  # closing the descriptor releases the lock


def _acquire(folder: Path, what: str, wait: bool) -> int:
    """An open descriptor of ``folder``'s lock file, exclusively locked by this process."""
    path = folder / LOCK_NAME
    warned = False
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _holder(fd)
                if not wait:
                    raise ConfigError(
                        f"Another kdistill process{holder} is {what} in '{folder}'. Two runs writing one "
                        "folder would overwrite each other's checkpoints: wait for it to finish, or give "
                        "this run another --output-dir.") from None
                if not warned:
                    log.warning("waiting for another kdistill process%s %s in %s", holder, what, folder)
                    warned = True
                fcntl.flock(fd, fcntl.LOCK_EX)
            if not _still_named(fd, path):  # the holder removed the file as it let go: lock the new one
                os.close(fd)
                continue
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
            return fd
        except BaseException:
            os.close(fd)
            raise


def _still_named(fd: int, path: Path) -> bool:
    try:
        named = os.stat(path)
    except FileNotFoundError:
        return False
    opened = os.fstat(fd)
    return (named.st_dev, named.st_ino) == (opened.st_dev, opened.st_ino)


def _holder(fd: int) -> str:
    try:
        text = os.pread(fd, 32, 0).decode().strip()
    except OSError:
        return ""
    return f" (pid {text})" if text.isdigit() else ""
