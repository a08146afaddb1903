"""Reading inputs safely, and writing results: atomic files, output folders checked before any work.

Every path kdistill reads (a config, a table, an IDX file, an image, a
checkpoint) first goes through :func:`check_input_path`: a FIFO, a device, a
socket or a file under ``/proc`` or ``/sys`` is refused with the caller's
error type before it is opened, so a hostile path (perhaps recorded in a
checkpoint) can neither block a read forever nor stream endless bytes.

Every file kdistill writes (checkpoints, metrics, reports, plots, exports)
goes through :func:`atomic_write_bytes`: the bytes go to a temporary file in
the same folder, are fsynced, then renamed over the target, so a reader never
sees half a file and a crash never leaves one. When the write cannot happen
(a read-only folder, a path that is a file, a full disk, a name too long) the
temporary file is removed and :class:`~kdistill.errors.OutputError` says which
path and why. :func:`ensure_writable_dir` checks a run's output folder the
same way before training starts, so such a mistake costs seconds, not a run.
"""

from __future__ import annotations

import errno
import os
import stat
import tempfile
from pathlib import Path

from kdistill.errors import DataError, KDistillError, OutputError, shorten

# kernel pseudo-file systems: their "files" are endless, change between reads, or expose the process
KERNEL_ROOTS = ("proc", "sys")


def _special_kind(mode: int) -> str | None:
    if stat.S_ISFIFO(mode):
        return "a named pipe (FIFO)"
    if stat.S_ISCHR(mode):
        return "a character device"
    if stat.S_ISBLK(mode):
        return "a block device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return None


def check_input_path(path: str | Path, what: str, error: type[KDistillError] = DataError) -> Path:
    """Refuse to read ``path`` when it is a FIFO, device or socket, or lies under ``/proc`` or ``/sys``.

    The one check every reader calls before opening a file or listing a
    folder; ``what`` starts the message (``"Config file"``) and ``error`` is
    the caller's error class. A path that does not exist passes: the reader
    reports that its own way. Returns ``path`` as a :class:`~pathlib.Path`.
    """
    path = Path(path)
    try:
        info = os.stat(path)  # follows symbolic links: a link to /dev/zero is /dev/zero
    except (OSError, ValueError):
        return path
    shown = shorten(path, 300)
    kind = _special_kind(info.st_mode)
    if kind is not None:
        raise error(f"{what} '{shown}' is {kind}, not a regular file; kdistill reads only regular files "
                    "and folders, since reading this one could block forever or never end. Give a file "
                    "on disk.")
    real = Path(os.path.realpath(path))
    if len(real.parts) > 1 and real.parts[0] == os.sep and real.parts[1] in KERNEL_ROOTS:
        raise error(f"{what} '{shown}' lies under /{real.parts[1]} ('{shorten(real, 200)}'), the kernel's "
                    "view of the system, not data; kdistill does not read there. Give a file or folder "
                    "on disk.")
    return path


def check_output_path(path: str | Path, what: str = "file") -> None:
    """Refuse to replace anything at ``path`` but a regular file (a device, a FIFO, a folder, ...).

    :func:`atomic_write_bytes` renames its temporary file over ``path``; over
    ``/dev/full`` or a named pipe that would silently swap the special file for
    a regular one (as root, the device itself).
    """
    try:
        info = os.stat(path)
    except (OSError, ValueError):
        return  # nothing there (or a path the write itself reports)
    if stat.S_ISDIR(info.st_mode):
        raise OutputError(f"Cannot write {what} '{shorten(path, 300)}': it is a folder; give a file name, "
                          "or remove that folder.", path=Path(path))
    if not stat.S_ISREG(info.st_mode):
        kind = _special_kind(info.st_mode) or "not a regular file"
        raise OutputError(f"Cannot write {what} '{shorten(path, 300)}': it exists and is {kind}; kdistill "
                          "replaces only regular files. Choose another path.", path=Path(path))

_REASONS = {
    errno.EACCES: ("permission denied", "choose a folder you can write (--output-dir)"),
    errno.EPERM: ("the operation is not permitted", "choose a folder you can write (--output-dir)"),
    errno.EROFS: ("the file system is read-only", "choose a writable folder (--output-dir)"),
    errno.ENOSPC: ("the disk is full", "free some space or choose a folder on another disk"),
    errno.EDQUOT: ("the disk quota is used up", "free some space or choose another folder"),
    errno.EFBIG: ("the file is too large for this file system", "choose a folder on another disk"),
    errno.ENAMETOOLONG: ("a name in the path is too long", "use a shorter name or folder"),
    errno.ENOTDIR: ("a part of the path is a file, not a folder", "choose another path"),
    errno.EISDIR: ("it is a folder", "give a file name, or remove that folder"),
    errno.EEXIST: ("a file stands where a folder is needed", "remove it or choose another path"),
    errno.ENOENT: ("a folder on the way cannot be created there", "choose another path"),
    errno.ELOOP: ("the path has too many symbolic links", "choose another path"),
    errno.EIO: ("the disk reported an input/output error", "check the disk, or choose another"),
}


def output_error(path: str | Path, what: str, error: OSError) -> OutputError:
    """An :class:`OutputError` for ``error`` raised while writing ``what`` at ``path``."""
    reason, fix = _REASONS.get(error.errno or -1, (error.strerror or type(error).__name__,
                                                    "choose another path"))
    return OutputError(f"Cannot write {what} '{shorten(path, 300)}': {reason}; {fix}.", path=Path(path))


def temp_prefix(path: str | Path) -> str:
    """How the temporary files of ``path`` start; the writer's pid follows (``PID-random.tmp``)."""
    # the temp name must fit where the target fits: keep its prefix short
    return f".{Path(path).name[:100]}."


def temp_file_pattern(path: str | Path) -> str:
    """The glob matching the temporary files :func:`atomic_write_bytes` makes for ``path``."""
    return f"{temp_prefix(path)}*.tmp"


def atomic_write_bytes(path: str | Path, data: bytes, what: str = "file") -> None:
    """Write to a temporary file in the same folder, fsync, then rename over ``path``.

    Raises :class:`OutputError` (also an ``OSError``) naming ``path`` when it
    cannot be written; the temporary file never stays behind.
    """
    path = Path(path)
    check_output_path(path, what)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # the writer's pid in the name: only temp files of dead writers are ever cleaned up
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f"{temp_prefix(path)}{os.getpid()}-",
                                   suffix=".tmp")
    except OSError as error:
        raise output_error(path, what, error) from None
    try:
        try:
            # mkstemp makes the file private (0600); a result file gets the mode open() would give it
            if hasattr(os, "fchmod"):  # POSIX only
                os.fchmod(fd, 0o666 & ~current_umask())
            view = memoryview(data).cast("B")
            while view:
                written = os.write(fd, view)
                view = view[written:]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException as error:
        try:
            Path(tmp).unlink(missing_ok=True)
        except OSError:
            pass
        if isinstance(error, OSError) and not isinstance(error, OutputError):
            raise output_error(path, what, error) from None
        raise
    _fsync_dir(path.parent)


def current_umask() -> int:
    """The process's file-creation mask, read without changing it where the system allows."""
    try:  # Linux: reading the mask through os.umask() would briefly change it for every thread
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write_text(path: str | Path, text: str, what: str = "file") -> None:
    """:func:`atomic_write_bytes` of ``text`` as UTF-8."""
    atomic_write_bytes(path, text.encode("utf-8", errors="surrogateescape"), what)


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def ensure_writable_dir(path: str | Path, what: str = "output folder") -> Path:
    """Create ``path`` if needed and prove a file can be written in it; return it.

    Call it before long work: a folder that is read-only, under ``/proc``, an
    existing file, on a full disk or of too long a name raises
    :class:`OutputError` at once, saying which path and why.
    """
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise OutputError(f"Cannot use {what} '{shorten(path, 300)}': it is a file, not a folder; "
                          "remove it or choose another path (--output-dir).", path=path) from None
    except OSError as error:
        raise output_error(path, what, error) from None
    except ValueError:  # an embedded NUL character
        raise OutputError(f"Cannot use {what} {shorten(repr(str(path)), 300)}: it is not a valid path.",
                          path=path) from None
    try:
        fd, probe = tempfile.mkstemp(dir=path, prefix=".kdistill-write-test.", suffix=".tmp")
        try:
            os.write(fd, b"k")
        finally:
            os.close(fd)
            Path(probe).unlink(missing_ok=True)
    except OSError as error:
        raise output_error(path, what, error) from None
    return path


def check_writable_dir(path: str | Path, what: str = "output folder") -> None:
    """Like :func:`ensure_writable_dir`, but creates nothing (a dry run leaves no folder behind).

    Every name in ``path`` must fit the file system, the nearest existing
    ancestor must be a folder, and a scratch folder must be creatable (and is
    removed again) in it; otherwise :class:`OutputError` says which and why.
    """
    path = Path(path)
    too_long = next((part for part in path.parts if len(os.fsencode(part)) > 255), None)
    if too_long is not None or len(os.fsencode(str(path))) >= 4096:
        raise OutputError(f"Cannot write {what} '{shorten(path, 120)}': a name in the path is too long "
                          "(at most 255 bytes a name, 4,095 in all); use a shorter name.", path=path)
    probe = path
    try:
        while not probe.exists() and probe != probe.parent:
            probe = probe.parent
        is_dir = probe.is_dir()
    except OSError as error:
        raise output_error(path, what, error) from None
    except ValueError:  # an embedded NUL character
        raise OutputError(f"Cannot use {what} {shorten(repr(str(path)), 300)}: it is not a valid path.",
                          path=path) from None
    if not is_dir:
        raise OutputError(f"Cannot use {what} '{shorten(path, 300)}': '{shorten(probe, 300)}' is a file, not "
                          "a folder; choose another path (--output-dir).", path=path)
    try:
        os.rmdir(tempfile.mkdtemp(dir=probe, prefix=".kdistill-write-test."))
    except OSError as error:
        raise output_error(path, what, error) from None


def cache_root() -> Path:
    """The folder downloads and caches go to: ``$XDG_CACHE_HOME/kdistill`` or ``~/.cache/kdistill``."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "kdistill"
