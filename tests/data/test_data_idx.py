"""IDX reading and writing."""

import gzip

import numpy as np
import pytest

from kdistill.data import read_idx, read_idx_pair, write_idx
from kdistill.data.idx import IMAGES_MAGIC, LABELS_MAGIC
from kdistill.errors import DataError


@pytest.mark.parametrize("suffix", [".gz", ""])
def test_round_trip(tmp_path, suffix):
    images = np.arange(3 * 28 * 28, dtype=np.uint8).reshape(3, 28, 28)
    labels = np.array([0, 9, 4], dtype=np.uint8)
    ip = write_idx(tmp_path / f"img{suffix}", images)
    lp = write_idx(tmp_path / f"lab{suffix}", labels)
    assert np.array_equal(read_idx(ip, IMAGES_MAGIC), images)
    x, y = read_idx_pair(ip, lp)
    assert x.shape == (3, 28, 28) and y.dtype == np.int64 and y.tolist() == [0, 9, 4]


def test_other_dtypes_round_trip(tmp_path):
    data = np.linspace(-1, 1, 12, dtype=np.float32).reshape(3, 4)
    assert np.array_equal(read_idx(write_idx(tmp_path / "f.gz", data)), data)


def test_wrong_magic(tmp_path):
    labels = write_idx(tmp_path / "labels.gz", np.zeros(5, np.uint8))
    with pytest.raises(DataError, match="magic number 2049, expected 2051"):
        read_idx(labels, IMAGES_MAGIC)


def test_truncated_data_names_file(tmp_path):
    path = tmp_path / "img.gz"
    raw = gzip.decompress(write_idx(path, np.zeros((4, 28, 28), np.uint8)).read_bytes())
    path.write_bytes(gzip.compress(raw[:-100]))
    with pytest.raises(DataError, match="truncated") as info:
        read_idx(path, IMAGES_MAGIC)
    assert str(path) in str(info.value)


def test_truncated_gzip_stream(tmp_path):
    path = write_idx(
        tmp_path / "img.gz",
        np.random.default_rng(0).integers(0, 255, (50, 28, 28)).astype(np.uint8),
    )
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(DataError, match=str(path).replace(".", r"\.")):
        read_idx(path)


def test_not_gzip(tmp_path):
    path = tmp_path / "junk.gz"
    path.write_bytes(b"this is not gzip data at all")
    with pytest.raises(DataError, match="corrupt"):
        read_idx(path)


def test_label_out_of_range(tmp_path):
    ip = write_idx(tmp_path / "i.gz", np.zeros((2, 28, 28), np.uint8))
    lp = write_idx(tmp_path / "l.gz", np.array([3, 12], np.uint8))
    with pytest.raises(DataError, match=r"0\.\.9"):
        read_idx_pair(ip, lp)


def test_count_mismatch(tmp_path):
    ip = write_idx(tmp_path / "i.gz", np.zeros((2, 28, 28), np.uint8))
    lp = write_idx(tmp_path / "l.gz", np.array([3, 1, 2], np.uint8))
    with pytest.raises(DataError, match="do not belong together"):
        read_idx_pair(ip, lp)


def test_wrong_image_size(tmp_path):
    ip = write_idx(tmp_path / "i.gz", np.zeros((2, 8, 8), np.uint8))
    lp = write_idx(tmp_path / "l.gz", np.array([3, 1], np.uint8))
    with pytest.raises(DataError, match="size"):
        read_idx_pair(ip, lp)


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        read_idx(tmp_path / "nope.gz")


def test_labels_magic_constant():
    assert (IMAGES_MAGIC, LABELS_MAGIC) == (2051, 2049)
