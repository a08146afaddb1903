"""Detection tests build tiny canvas sets; they are cached in a per-session folder, never in ~/.cache."""

import pytest
import torch

TINY = {"num_train": 48, "num_test": 16, "canvas_size": 32, "objects": [1, 2], "scale": [10, 16]}


@pytest.fixture(autouse=True)
def _private_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.getbasetemp() / "cache"))


@pytest.fixture(autouse=True)
def _one_thread():
    # convolutions on 32x32 canvases gain nothing from threads, and on a busy machine extra threads cost a lot
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def tiny_options():
    return dict(TINY)
