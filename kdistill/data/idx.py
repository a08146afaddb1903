"""Reading and writing IDX files, the format MNIST and Fashion-MNIST ship in.

An IDX file is a 4-byte magic number (two zero bytes, a dtype code, the number
of dimensions), one big-endian uint32 per dimension, then the values. Files may
be gzip-compressed; both forms are read.
"""

from __future__ import annotations

import gzip
import struct
import zlib
from pathlib import Path

import numpy as np

from kdistill.data.sources import FILES
from kdistill.errors import DataError
from kdistill.io import atomic_write_bytes, ensure_writable_dir

IMAGES_MAGIC = 2051  # uint8, 3 dimensions
LABELS_MAGIC = 2049  # uint8, 1 dimension

_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_CODES = {dtype.newbyteorder("="): code for code, dtype in _DTYPES.items()}
# MNIST's largest file is 47 MB decompressed (EMNIST's 550 MB); a gzip file that inflates past this is refused
# before it fills the memory (a small .gz can claim gigabytes)
MAX_IDX_BYTES = 1 << 30


def _read_bytes(path: Path) -> bytes:
    try:
        with (gzip.open(path, "rb") if path.suffix == ".gz" else path.open("rb")) as fh:
            raw = fh.read(MAX_IDX_BYTES + 1)
    except FileNotFoundError:
        raise DataError(f"IDX file {path} does not exist.") from None
    except (OSError, EOFError, zlib.error) as exc:
        # gzip reports a cut-off download as EOFError and garbage as BadGzipFile (an OSError).
        raise DataError(
            f"Cannot read IDX file {path}: {exc}. The file is probably truncated or "
            "corrupt; delete it and download it again."
        ) from None
    if len(raw) > MAX_IDX_BYTES:
        raise DataError(f"IDX file {path} holds more than {MAX_IDX_BYTES >> 30} GiB of data; it is not "
                        "an MNIST-style file (or it is a decompression bomb).")
    return raw


def read_idx(path: str | Path, expected_magic: int | None = None) -> np.ndarray:
    """Read an IDX file (``.gz`` or plain) into a native-endian numpy array.

    Raises :class:`DataError` naming the file if it is unreadable, has the wrong
    magic number, or holds fewer or more values than its header announces.
    """
    path = Path(path)
    raw = _read_bytes(path)
    if len(raw) < 4:
        raise DataError(f"IDX file {path} is truncated: only {len(raw)} bytes.")
    magic = struct.unpack(">I", raw[:4])[0]
    if expected_magic is not None and magic != expected_magic:
        raise DataError(
            f"IDX file {path} has magic number {magic}, expected {expected_magic}; "
            "it is not the kind of IDX file expected here (images vs labels?) or is corrupt."
        )
    zeros, code, ndim = magic >> 16, (magic >> 8) & 0xFF, magic & 0xFF
    if zeros != 0 or code not in _DTYPES or ndim == 0:
        raise DataError(f"IDX file {path} has an invalid header (magic number {magic}).")
    header_len = 4 + 4 * ndim
    if len(raw) < header_len:
        raise DataError(f"IDX file {path} is truncated inside its header.")
    dims = struct.unpack(f">{ndim}I", raw[4:header_len])
    dtype = _DTYPES[code]
    expected = int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    actual = len(raw) - header_len
    if actual != expected:
        problem = "truncated" if actual < expected else "longer than its header says"
        raise DataError(
            f"IDX file {path} is {problem}: header announces shape {tuple(dims)} "
            f"({expected} bytes of data) but the file holds {actual}. "
            "Delete it and download it again."
        )
    array = np.frombuffer(raw, dtype=dtype, offset=header_len).reshape(dims)
    # A copy: frombuffer's view is read-only, which torch.from_numpy warns about.
    return array.astype(dtype.newbyteorder("="))


def write_idx(path: str | Path, array: np.ndarray) -> Path:
    """Write ``array`` as an IDX file, gzip-compressed if ``path`` ends in ``.gz``.

    Mostly for tests and for exporting small data sets in MNIST's format.
    """
    path = Path(path)
    array = np.asarray(array)
    native = array.dtype.newbyteorder("=")
    if native not in _CODES:
        raise ValueError(f"IDX cannot store dtype {array.dtype}")
    header = struct.pack(">I", (_CODES[native] << 8) | array.ndim)
    header += struct.pack(f">{array.ndim}I", *array.shape)
    payload = header + array.astype(_DTYPES[_CODES[native]], copy=False).tobytes()
    if path.suffix == ".gz":
        # mtime=0 keeps the output byte-identical across runs.
        payload = gzip.compress(payload, mtime=0)
    atomic_write_bytes(path, payload, "IDX file")
    return path


def read_idx_pair(
    images_path: str | Path,
    labels_path: str | Path,
    *,
    image_shape: tuple[int, int] | None = (28, 28),
    num_classes: int | None = 10,
) -> tuple[np.ndarray, np.ndarray]:
    """Read matching image and label IDX files and check they belong together.

    Returns ``(images uint8 (N, H, W), labels int64 (N,))``.
    """
    images = read_idx(images_path, IMAGES_MAGIC)
    labels = read_idx(labels_path, LABELS_MAGIC)
    if image_shape is not None and images.shape[1:] != tuple(image_shape):
        raise DataError(
            f"IDX file {images_path} holds images of size {images.shape[1:]}, "
            f"expected {tuple(image_shape)}."
        )
    if len(images) != len(labels):
        raise DataError(
            f"{images_path} holds {len(images)} images but {labels_path} holds "
            f"{len(labels)} labels; the files do not belong together."
        )
    labels = labels.astype(np.int64)
    if (
        num_classes is not None
        and len(labels)
        and (labels.min() < 0 or labels.max() >= num_classes)
    ):
        raise DataError(
            f"IDX file {labels_path} has labels in {labels.min()}..{labels.max()}, "
            f"expected 0..{num_classes - 1}."
        )
    return images, labels


def write_idx_dataset(
    folder: str | Path,
    train_images: np.ndarray,
    train_labels: np.ndarray,
    test_images: np.ndarray,
    test_labels: np.ndarray,
) -> Path:
    """Write the four gzip-compressed files of an MNIST-format data set into ``folder``."""
    folder = ensure_writable_dir(folder, "data folder")
    arrays = {
        "train_images": np.asarray(train_images, dtype=np.uint8),
        "train_labels": np.asarray(train_labels, dtype=np.uint8),
        "test_images": np.asarray(test_images, dtype=np.uint8),
        "test_labels": np.asarray(test_labels, dtype=np.uint8),
    }
    for key, array in arrays.items():
        write_idx(folder / FILES[key], array)
    return folder
