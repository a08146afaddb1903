"""The tests' data fixture finds files through kdistill's own discovery, and skips naming KDISTILL_DATA."""

import numpy as np
import pytest

from kdistill.data import load_dataset, sources
from kdistill.data.idx import write_idx_dataset


@pytest.fixture
def no_real_data(tmp_path, monkeypatch):
    """Only what a test puts under tmp_path can be found."""
    monkeypatch.delenv(sources.ENV_VAR, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(sources, "SYSTEM_ROOT", tmp_path / "system")
    return tmp_path


def tiny(folder):
    rng = np.random.default_rng(0)
    return write_idx_dataset(folder, rng.integers(0, 256, (20, 28, 28)), np.arange(20) % 10,
                             rng.integers(0, 256, (10, 28, 28)), np.arange(10) % 10)


def test_idx_dir_finds_the_parent_layout_through_kdistill_data(idx_dir, no_real_data, monkeypatch):
    tiny(no_real_data / "data" / "mnist")
    monkeypatch.setenv(sources.ENV_VAR, str(no_real_data / "data"))
    folder = idx_dir("mnist")
    assert folder == no_real_data / "data" / "mnist"
    assert load_dataset("mnist", data_dir=folder, download=False).num_train == 20


def test_idx_dir_finds_a_folder_holding_the_files(idx_dir, no_real_data, monkeypatch):
    tiny(no_real_data / "fm")
    monkeypatch.setenv(sources.ENV_VAR, str(no_real_data / "fm"))
    assert idx_dir("fashion-mnist") == no_real_data / "fm"


def test_idx_dir_skips_with_a_reason_naming_kdistill_data(idx_dir, no_real_data, monkeypatch):
    with pytest.raises(pytest.skip.Exception, match="KDISTILL_DATA is not set.*'mnist/' subfolder"):
        idx_dir("mnist")
    monkeypatch.setenv(sources.ENV_VAR, str(no_real_data / "empty"))
    with pytest.raises(pytest.skip.Exception, match="KDISTILL_DATA=.*empty does not hold it"):
        idx_dir("fashion-mnist")
