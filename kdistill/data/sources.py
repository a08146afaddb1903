"""Where the IDX data sets (MNIST, Fashion-MNIST) are found, or downloaded to.

Search order, first folder holding all four files wins:

1. the ``data_dir`` argument (``--data-dir``), itself or its ``<name>/`` subfolder;
2. ``$KDISTILL_DATA``, itself or its ``<name>/`` subfolder;
3. the Debian package folder (``/usr/share/datasets/fashion-mnist``);
4. the download cache, ``~/.cache/kdistill/<name>`` (``$XDG_CACHE_HOME`` respected);
5. a download from the official mirrors into that cache, checked by SHA-256.

Because MNIST and Fashion-MNIST use the same file names, a folder whose
training labels are known to be the *other* data set is skipped.

A ``data_dir`` that holds only some of the four files is an error, not a
reason to look elsewhere (the user pointed there); one that holds none of
them lets the search go on, and a warning names the folder used instead.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import logging
import os
import urllib.request
import zlib
from dataclasses import dataclass
from pathlib import Path

from kdistill.errors import DataError
from kdistill.io import atomic_write_bytes, cache_root, check_input_path

log = logging.getLogger("kdistill")

ENV_VAR = "KDISTILL_DATA"
SYSTEM_ROOT = Path("/usr/share/datasets")

FILES = {
    "train_images": "train-images-idx3-ubyte.gz",
    "train_labels": "train-labels-idx1-ubyte.gz",
    "test_images": "t10k-images-idx3-ubyte.gz",
    "test_labels": "t10k-labels-idx1-ubyte.gz",
}


@dataclass(frozen=True)
class IdxSource:
    """Where one IDX data set comes from and what its files must contain."""

    name: str
    mirrors: tuple[str, ...]
    # SHA-256 of each file's *decompressed* bytes, so a re-compressed copy still verifies.
    sha256: dict[str, str]
    system_package: str | None = None


SOURCES: dict[str, IdxSource] = {
    "mnist": IdxSource(
        name="mnist",
        mirrors=(
            "https://ossci-datasets.s3.amazonaws.com/mnist/",
            "https://storage.googleapis.com/cvdf-datasets/mnist/",
        ),
        sha256={
            "train_images": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
            "train_labels": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
            "test_images": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
            "test_labels": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
        },
    ),
    "fashion-mnist": IdxSource(
        name="fashion-mnist",
        mirrors=("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
        sha256={
            "train_images": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
            "train_labels": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
            "test_images": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
            "test_labels": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
        },
        system_package="dataset-fashion-mnist",
    ),
}


def _source(name: str) -> IdxSource:
    try:
        return SOURCES[name]
    except KeyError:
        raise DataError(f"'{name}' is not an IDX data set; known: {', '.join(SOURCES)}.") from None


def _candidates(name: str, data_dir: str | Path | None) -> list[tuple[Path, str]]:
    """Every folder to look in, in order, with a note on where it came from."""
    source = _source(name)
    found: list[tuple[Path, str]] = []
    if data_dir is not None:
        root = Path(data_dir).expanduser()
        found += [(root, "data_dir"), (root / name, "data_dir")]
    env = os.environ.get(ENV_VAR)
    if env:
        root = Path(env).expanduser()
        found += [(root, f"${ENV_VAR}"), (root / name, f"${ENV_VAR}")]
    if source.system_package:
        found.append((SYSTEM_ROOT / name, f"package {source.system_package}"))
    found.append((cache_root() / name, "download cache"))
    return found


def candidate_dirs(name: str, data_dir: str | Path | None = None) -> list[Path]:
    """The folders :func:`find_idx_dir` searches for ``name``, in search order."""
    return [path for path, _ in _candidates(name, data_dir)]


def idx_file(folder: Path, key: str) -> Path | None:
    """The file for ``key`` in ``folder``, compressed or not, or ``None``."""
    gz = folder / FILES[key]
    plain = gz.with_suffix("")
    return gz if gz.is_file() else plain if plain.is_file() else None


def _inspect(name: str, folder: Path) -> str | None:
    """``None`` if ``folder`` holds the data set, else why not (for the error message)."""
    if not folder.is_dir():
        return "no such folder"
    missing = [FILES[key] for key in FILES if idx_file(folder, key) is None]
    if missing:
        return "missing " + ", ".join(missing)
    other = _identify(folder)
    if other is not None and other != name:
        return f"holds {other}, not {name}"
    return None


# the training labels are 60,008 bytes; reading a little more tells a file that is not them
MAX_LABELS_BYTES = 1 << 20


def _identify(folder: Path) -> str | None:
    """Which known data set the folder's training labels belong to, if any."""
    path = idx_file(folder, "train_labels")
    try:
        check_input_path(path, "IDX file")
        with (gzip.open(path, "rb") if path.suffix == ".gz" else path.open("rb")) as fh:
            content = fh.read(MAX_LABELS_BYTES + 1)  # bounded: a .gz may inflate without end
    except (OSError, EOFError, zlib.error, DataError):
        return None  # unreadable files are reported properly when loaded
    digest = hashlib.sha256(content).hexdigest()
    for source in SOURCES.values():
        if source.sha256["train_labels"] == digest:
            return source.name
    return None


def find_idx_dir(name: str, data_dir: str | Path | None = None) -> Path | None:
    """The first folder in :func:`candidate_dirs` that holds all four files."""
    for folder, _ in _candidates(name, data_dir):
        if _inspect(name, folder) is None:
            return folder
    return None


def fetch_bytes(url: str, timeout: float = 60.0) -> bytes:
    """Download ``url``; the one place kdistill touches the network (tests replace it)."""
    request = urllib.request.Request(url, headers={"User-Agent": "kdistill"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return response.read()


# the largest file of any IDX source, decompressed (MNIST's training images: 47 MB)
MAX_DOWNLOAD_BYTES = 64 << 20


def _content_sha256(data: bytes, compressed: bool) -> str:
    if compressed:
        with gzip.GzipFile(fileobj=io.BytesIO(data)) as fh:
            data = fh.read(MAX_DOWNLOAD_BYTES + 1)  # a bad mirror's bomb inflates no further than this
    return hashlib.sha256(data).hexdigest()


def download_idx(name: str, dest: Path | None = None) -> Path:
    """Download the four files of ``name`` into ``dest`` (default: the cache).

    Each file is verified against its SHA-256 and written under a temporary
    name before being renamed, so an interrupted download never leaves a file
    that looks complete. Raises :class:`DataError` if no mirror works.
    """
    source = _source(name)
    dest = Path(dest) if dest is not None else cache_root() / name
    dest.mkdir(parents=True, exist_ok=True)
    for key, filename in FILES.items():
        target = dest / filename
        if target.is_file():
            continue
        errors = []
        for mirror in source.mirrors:
            url = mirror + filename
            try:
                data = fetch_bytes(url)
                digest = _content_sha256(data, compressed=True)
            except (OSError, EOFError, zlib.error, ValueError) as exc:
                errors.append(f"{url}: {exc}")
                continue
            if digest != source.sha256[key]:
                errors.append(f"{url}: checksum mismatch (got sha256 {digest[:12]}...)")
                continue
            _write_atomic(target, data)
            break
        else:
            raise DataError(f"Could not download {filename}: " + "; ".join(errors))
    return dest


def _write_atomic(target: Path, data: bytes) -> None:
    atomic_write_bytes(target, data, "downloaded data file")


def locate_idx(name: str, data_dir: str | Path | None = None, download: bool = True) -> Path:
    """Find ``name`` on disk, downloading it into the cache if allowed.

    Raises one :class:`DataError` listing every folder tried and how to get the data.
    """
    given = [path for path, origin in _candidates(name, data_dir) if origin == "data_dir"]
    for path in given:
        if path.is_dir():
            present = [FILES[key] for key in FILES if idx_file(path, key) is not None]
            if present and len(present) < len(FILES):
                missing = [f for f in FILES.values() if f not in present]
                raise DataError(f"The data folder {path} (data_dir) holds only some of the {name} files: "
                                f"{', '.join(missing)} {'is' if len(missing) == 1 else 'are'} missing. Add "
                                "them, or point data_dir (--data-dir) at the folder that holds all four; "
                                "kdistill does not mix files from several folders.")
    folder = find_idx_dir(name, data_dir)
    if folder is not None:
        if given and folder not in given:
            log.warning("data_dir %s does not hold the %s files; using %s instead", given[0], name, folder)
        return folder
    download_note = "Downloading was disabled (download=False)."
    if download:
        try:
            folder = download_idx(name)
            if given:
                log.warning("data_dir %s does not hold the %s files; downloaded them into %s instead",
                            given[0], name, folder)
            return folder
        except (DataError, OSError) as exc:
            download_note = f"Downloading into the cache failed ({exc})."
    raise DataError(_not_found_message(name, data_dir, download_note))


def _not_found_message(name: str, data_dir: str | Path | None, download_note: str) -> str:
    source = _source(name)
    looked = [
        f"{folder} [{origin}: {_inspect(name, folder)}]"
        for folder, origin in _candidates(name, data_dir)
    ]
    if not os.environ.get(ENV_VAR):
        looked.insert(2 if data_dir is not None else 0, f"${ENV_VAR} [not set]")
    if data_dir is None:
        looked.insert(0, "--data-dir [not given]")
    numbered = "; ".join(f"({i}) {item}" for i, item in enumerate(looked, 1))
    ways = [
        f"pass --data-dir (or data_dir=) pointing at a folder with {', '.join(FILES.values())}",
        f"set {ENV_VAR} to such a folder or to its parent holding a '{name}/' subfolder",
    ]
    if source.system_package:
        ways.append(f"run `apt install {source.system_package}`")
    ways.append(f"connect to the internet so kdistill can download it from {source.mirrors[0]}")
    return (
        f"Could not find the {name} data set. Looked in, in order: {numbered}. "
        f"{download_note} To fix this, " + ", or ".join(ways) + "."
    )
