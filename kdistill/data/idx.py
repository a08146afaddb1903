"""Reading and writing IDX files, the format MNIST and Fashion-MNIST ship in.

An IDX file is a 4-byte magic number (two zero bytes, a dtype code, the number
of dimensions), one big-endian uint32 per dimension, then the values. Files may
be gzip-compressed; both forms are read.
"""

from __future__ import annotations

import gzip
import math
import struct
import zlib
from pathlib import Path

import numpy as np

from kdistill.data.sources import FILES
from kdistill.errors import DataError
from kdistill.io import atomic_write_bytes, check_input_path, ensure_writable_dir

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
# MNIST's largest file is 47 MB decompressed (EMNIST's 550 MB): a header announcing more is refused
MAX_IDX_BYTES = 1 << 30
# real IDX images compress about 2-5 times; a .gz that would inflate more than this per compressed byte
# is refused before it is inflated (a small file claiming gigabytes: a decompression bomb, or a lying header)
MAX_GZIP_RATIO = 200
# ... except for small files, where a header and a few all-zero images compress much better
SMALL_IDX_BYTES = 1 << 20
_CHUNK = 1 << 22


def _fail_read(path: Path, exc: BaseException) -> DataError:
    # gzip reports a cut-off download as EOFError and garbage as BadGzipFile (an OSError)
    return DataError(f"Cannot read IDX file {path}: {exc}. The file is probably truncated or corrupt; delete "
                     "it and download it again.")


def _read_exactly(fh, count: int) -> bytes:
    """Up to ``count`` bytes, read in bounded chunks (fewer only at the end of the stream)."""
    parts, left = [], count
    while left > 0:
        part = fh.read(min(left, _CHUNK))
        if not part:
            break
        parts.append(part)
        left -= len(part)
    return b"".join(parts)


def _read_header(path: Path, fh) -> tuple[bytes, tuple[int, ...], np.dtype]:
    head = fh.read(4)
    if len(head) < 4:
        raise DataError(f"IDX file {path} is truncated: only {len(head)} bytes.")
    magic = struct.unpack(">I", head)[0]
    zeros, code, ndim = magic >> 16, (magic >> 8) & 0xFF, magic & 0xFF
    if zeros != 0 or code not in _DTYPES or ndim == 0:
        return head, (), np.dtype(">u1")  # read_idx reports the bad magic number
    dims_raw = fh.read(4 * ndim)
    if len(dims_raw) < 4 * ndim:
        raise DataError(f"IDX file {path} is truncated inside its header.")
    return head + dims_raw, struct.unpack(f">{ndim}I", dims_raw), _DTYPES[code]


def _read_bytes(path: Path) -> bytes:
    """The file's (decompressed) bytes, refusing before inflating more than its header can justify."""
    check_input_path(path, "IDX file")
    compressed = path.suffix == ".gz"
    try:
        size = path.stat().st_size
        with (gzip.open(path, "rb") if compressed else path.open("rb")) as fh:
            header, dims, dtype = _read_header(path, fh)
            if not dims:
                return header
            expected = math.prod(dims) * dtype.itemsize
            if expected > MAX_IDX_BYTES:
                raise DataError(f"IDX file {path} announces shape {tuple(dims)}: {expected:,} bytes of data, "
                                f"more than the {MAX_IDX_BYTES >> 30} GiB kdistill reads; it is not an "
                                "MNIST-style file (its header is damaged, or it is a decompression bomb).")
            if compressed and expected > max(size * MAX_GZIP_RATIO, SMALL_IDX_BYTES):
                raise DataError(f"IDX file {path} announces shape {tuple(dims)} ({expected:,} bytes of data) "
                                f"but is only {size:,} bytes compressed, more than {MAX_GZIP_RATIO} times "
                                "smaller than real image data compresses; it is refused before inflating "
                                "as a damaged header or a decompression bomb.")
            # one byte more than announced tells a file that is longer than its header says
            return header + _read_exactly(fh, expected + 1)
    except FileNotFoundError:
        raise DataError(f"IDX file {path} does not exist.") from None
    except (OSError, EOFError, zlib.error) as exc:
        raise _fail_read(path, exc) from None


def read_idx(path: str | Path, expected_magic: int | None = None) -> np.ndarray:
    """Read an IDX file (``.gz`` or plain) into a native-endian numpy array.

    Raises :class:`DataError` naming the file if it is unreadable, a special
    file, has the wrong magic number, holds fewer or more values than its header
    announces, or (compressed) announces far more data than its size can hold.
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
        held = f"{actual}" if actual <= expected else f"more than {expected}"
        raise DataError(
            f"IDX file {path} is {problem}: header announces shape {tuple(dims)} "
            f"({expected} bytes of data) but the file holds {held}. "
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
