"""Finding MNIST-format data on disk, and the (faked) download."""

import dataclasses
import gzip
import hashlib
import urllib.error

import numpy as np
import pytest

from kdistill.data import candidate_dirs, find_idx_dir, load_dataset, sources
from kdistill.data.idx import write_idx_dataset
from kdistill.errors import DataError


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    """No real env, cache, system folder or network in these tests."""
    monkeypatch.delenv(sources.ENV_VAR, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(sources, "SYSTEM_ROOT", tmp_path / "system")

    def offline(url, timeout=60.0):
        raise urllib.error.URLError("network disabled in tests")

    monkeypatch.setattr(sources, "fetch_bytes", offline)


def tiny(folder, seed=0, n_train=20, n_test=10):
    rng = np.random.default_rng(seed)
    return write_idx_dataset(
        folder,
        rng.integers(0, 256, (n_train, 28, 28)),
        np.arange(n_train) % 10,
        rng.integers(0, 256, (n_test, 28, 28)),
        np.arange(n_test) % 10,
    )


def test_candidate_order(tmp_path, monkeypatch):
    monkeypatch.setenv(sources.ENV_VAR, str(tmp_path / "env"))
    dirs = candidate_dirs("fashion-mnist", tmp_path / "explicit")
    assert dirs == [
        tmp_path / "explicit",
        tmp_path / "explicit" / "fashion-mnist",
        tmp_path / "env",
        tmp_path / "env" / "fashion-mnist",
        tmp_path / "system" / "fashion-mnist",
        tmp_path / "cache" / "kdistill" / "fashion-mnist",
    ]
    # MNIST has no Debian package, so no system folder.
    assert tmp_path / "system" / "mnist" not in candidate_dirs("mnist")


def test_discovery_priority(tmp_path, monkeypatch):
    name = "fashion-mnist"
    cache = tiny(tmp_path / "cache" / "kdistill" / name)
    assert find_idx_dir(name) == cache
    system = tiny(tmp_path / "system" / name)
    assert find_idx_dir(name) == system
    env_parent = tiny(tmp_path / "env" / name)
    monkeypatch.setenv(sources.ENV_VAR, str(tmp_path / "env"))
    assert find_idx_dir(name) == env_parent
    env_direct = tiny(tmp_path / "env2")
    monkeypatch.setenv(sources.ENV_VAR, str(env_direct))
    assert find_idx_dir(name) == env_direct
    explicit = tiny(tmp_path / "explicit")
    assert find_idx_dir(name, explicit) == explicit


def test_incomplete_folder_is_skipped(tmp_path):
    partial = tiny(tmp_path / "partial")
    (partial / sources.FILES["test_labels"]).unlink()
    assert find_idx_dir("mnist", partial) is None


def test_uncompressed_files_accepted(tmp_path):
    folder = tiny(tmp_path / "plain")
    for path in list(folder.iterdir()):
        path.with_suffix("").write_bytes(gzip.decompress(path.read_bytes()))
        path.unlink()
    assert find_idx_dir("mnist", folder) == folder
    assert load_dataset("mnist", data_dir=folder).num_train == 20


def test_other_dataset_is_skipped(tmp_path, monkeypatch):
    folder = tiny(tmp_path / "looks-like-mnist")
    labels = (folder / sources.FILES["train_labels"]).read_bytes()
    digest = hashlib.sha256(gzip.decompress(labels)).hexdigest()
    fake = dataclasses.replace(
        sources.SOURCES["mnist"], sha256={**sources.SOURCES["mnist"].sha256, "train_labels": digest}
    )
    monkeypatch.setitem(sources.SOURCES, "mnist", fake)
    assert find_idx_dir("mnist", folder) == folder
    assert find_idx_dir("fashion-mnist", folder) is None
    with pytest.raises(DataError, match="holds mnist, not fashion-mnist"):
        load_dataset("fashion-mnist", data_dir=folder, download=False)


def test_missing_message_lists_every_place(tmp_path, monkeypatch):
    monkeypatch.setenv(sources.ENV_VAR, str(tmp_path / "env"))
    with pytest.raises(DataError) as info:
        load_dataset("fashion-mnist", data_dir=tmp_path / "explicit")
    message = str(info.value)
    places = [str(p) for p in candidate_dirs("fashion-mnist", tmp_path / "explicit")]
    positions = [message.index(p + " [") for p in places]
    assert positions == sorted(positions)
    assert "network disabled" in message
    assert "apt install dataset-fashion-mnist" in message
    assert "KDISTILL_DATA" in message and "--data-dir" in message
    assert "\n" not in message


def test_missing_message_without_download(tmp_path):
    with pytest.raises(DataError, match="download=False") as info:
        load_dataset("mnist", download=False)
    assert "$KDISTILL_DATA [not set]" in str(info.value)
    assert "apt install" not in str(info.value)


def _fake_server(monkeypatch, folder, fail_first_mirror=False):
    """Serve the files of ``folder`` as if from the mirrors, and trust their hashes."""
    payloads = {p.name: p.read_bytes() for p in folder.iterdir()}
    hashes = {
        k: hashlib.sha256(gzip.decompress(payloads[f])).hexdigest()
        for k, f in sources.FILES.items()
    }
    spec = sources.SOURCES["mnist"]
    monkeypatch.setitem(sources.SOURCES, "mnist", dataclasses.replace(spec, sha256=hashes))
    calls = []

    def fetch(url, timeout=60.0):
        calls.append(url)
        if fail_first_mirror and url.startswith(spec.mirrors[0]):
            raise urllib.error.URLError("mirror down")
        return payloads[url.rsplit("/", 1)[1]]

    monkeypatch.setattr(sources, "fetch_bytes", fetch)
    return calls


def test_download_into_cache(tmp_path, monkeypatch):
    calls = _fake_server(monkeypatch, tiny(tmp_path / "server"), fail_first_mirror=True)
    data = load_dataset("mnist")
    assert data.num_train == 20 and data.num_test == 10
    cache = tmp_path / "cache" / "kdistill" / "mnist"
    assert sorted(p.name for p in cache.iterdir()) == sorted(sources.FILES.values())
    assert len(calls) == 8  # each file: first mirror fails, second serves it
    calls.clear()
    load_dataset("mnist")
    assert calls == []  # second time comes from the cache


def test_download_checksum_mismatch_leaves_nothing(tmp_path, monkeypatch):
    _fake_server(monkeypatch, tiny(tmp_path / "server"))
    spec = sources.SOURCES["mnist"]
    bad = {**spec.sha256, "train_images": "0" * 64}
    monkeypatch.setitem(sources.SOURCES, "mnist", dataclasses.replace(spec, sha256=bad))
    with pytest.raises(DataError, match="checksum mismatch"):
        load_dataset("mnist")
    cache = tmp_path / "cache" / "kdistill" / "mnist"
    assert not (cache / sources.FILES["train_images"]).exists()
    assert not list(cache.glob("*.part"))


def test_load_tiny_mnist_format(tmp_path):
    folder = tiny(tmp_path / "d")
    data = load_dataset("fashion-mnist", data_dir=folder)
    assert data.x_train.shape == (20, 1, 28, 28) and data.x_test.shape == (10, 1, 28, 28)
    assert data.class_names[0] == "T-shirt/top"
    assert abs(data.x_train.mean().item()) < 1e-4 and abs(data.x_train.std().item() - 1) < 1e-2
    raw = load_dataset("fashion-mnist", data_dir=folder, normalize=False)
    assert 0.0 <= raw.x_train.min() and raw.x_train.max() <= 1.0 and raw.mean is None
