"""Shared fixtures: where the real data sets are, found the way kdistill itself finds them.

Tests that need MNIST, Fashion-MNIST or SST-2 ask :func:`dataset_dir` (or
:func:`idx_dir`) for the folder. The lookup is the package's own
(:mod:`kdistill.data.sources` for the IDX sets, ``find_sst2`` for SST-2):
``$KDISTILL_DATA`` (a folder holding the files, or its parent with a
``mnist/``, ``fashion-mnist/`` or ``sst2/`` subfolder), the Debian package
folder, the download cache, and for SST-2 a ``shared/data`` folder beside the
checkout. Nothing is downloaded; when the files are absent the test is skipped
with a reason that says how to point ``KDISTILL_DATA`` at them.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from kdistill.data import sources
from kdistill.errors import DataError
from kdistill.optional_deps import import_torchvision

TEXT_SETS = ("sst2",)


# torchvision imports (for the tests that use it directly) as kdistill imports it: without its compiled
# ops where PyPI's CUDA wheel sits beside the CPU build of torch (kdistill.models.external)
import_torchvision()


def find_dataset_dir(name: str) -> Path | None:
    """The folder kdistill would load ``name`` from without downloading, or ``None``."""
    if name in sources.SOURCES:
        return sources.find_idx_dir(name)
    if name in TEXT_SETS:
        from kdistill.text.data import find_sst2

        try:
            return find_sst2(None)
        except DataError:
            return None
    raise ValueError(f"no discovery for data set {name!r}; known: {', '.join([*sources.SOURCES, *TEXT_SETS])}")


def _skip_reason(name: str) -> str:
    layout = (f"the four IDX files ({', '.join(sources.FILES.values())})" if name in sources.SOURCES
              else "train.tsv and dev.tsv")
    env = os.environ.get(sources.ENV_VAR)
    where = f"{sources.ENV_VAR}={env} does not hold it" if env else f"{sources.ENV_VAR} is not set"
    return (f"{name} not found by kdistill's data discovery ({where}); "
            f"set {sources.ENV_VAR} to a folder holding {layout}, or to its parent with a '{name}/' subfolder "
            f"(e.g. {sources.ENV_VAR}=/path/to/data with /path/to/data/{name}/). Tests never download.")


@pytest.fixture
def dataset_dir() -> Callable[[str], Path]:
    """``dataset_dir("mnist")``: the folder holding the data set, or skip the test naming KDISTILL_DATA."""
    def get(name: str) -> Path:
        folder = find_dataset_dir(name)
        if folder is None:
            pytest.skip(_skip_reason(name))
        return folder

    return get


@pytest.fixture
def idx_dir(dataset_dir) -> Callable[[str], Path]:
    """``idx_dir("fashion-mnist")``: :func:`dataset_dir` for the IDX sets (MNIST, Fashion-MNIST)."""
    def get(name: str) -> Path:
        if name not in sources.SOURCES:
            raise ValueError(f"{name!r} is not an IDX data set; known: {', '.join(sources.SOURCES)}")
        return dataset_dir(name)

    return get
