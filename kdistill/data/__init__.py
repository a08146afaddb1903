"""Data sets as whole tensors, on-device batching and augmentation.

``load_dataset("mnist")`` returns a :class:`DataSplits`; register your own
loader with ``@register_dataset("name")``. A loader is called with the
user's options as keyword arguments, plus ``data_dir`` and ``download`` when
its signature accepts them.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

from kdistill.data import datasets as _builtin  # noqa: F401  (registers the built-ins)
from kdistill.data.augment import hflip, jitter
from kdistill.data.batching import iterate_batches, num_batches
from kdistill.data.idx import read_idx, read_idx_pair, write_idx, write_idx_dataset
from kdistill.data.input_spec import InputSpec, input_spec, read_input_spec
from kdistill.data.sources import candidate_dirs, download_idx, find_idx_dir, locate_idx
from kdistill.data.splits import DataSplits
from kdistill.data.streaming import StreamSplits
from kdistill.errors import ConfigError, DataError, shorten
from kdistill.registry import DATASETS, register_dataset

__all__ = [
    "DataSplits",
    "InputSpec",
    "StreamSplits",
    "available_datasets",
    "candidate_dirs",
    "dataset_options",
    "download_idx",
    "find_idx_dir",
    "hflip",
    "input_spec",
    "iterate_batches",
    "jitter",
    "load_dataset",
    "locate_idx",
    "num_batches",
    "read_idx",
    "read_idx_pair",
    "read_input_spec",
    "register_dataset",
    "write_idx",
    "write_idx_dataset",
]

_RESERVED = ("data_dir", "download", "loader")


def available_datasets() -> list[str]:
    """Names accepted by :func:`load_dataset`."""
    return DATASETS.names()


def dataset_options(name: str) -> list[str] | None:
    """The options a data set accepts (``None`` if its loader takes any ``**kwargs``)."""
    params = inspect.signature(DATASETS.get(name)).parameters.values()
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return None
    return [
        p.name
        for p in params
        if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD) and p.name not in _RESERVED
    ]


def load_dataset(
    name: str, *, data_dir: str | Path | None = None, download: bool = True, loader: str = "auto",
    **options: Any
) -> DataSplits | StreamSplits:
    """Load the registered data set ``name`` with its ``options``.

    ``loader`` (``auto``/``memory``/``stream``, the config's ``data.loader``)
    reaches loaders that can read lazily (``image-folder``), which then return
    a :class:`~kdistill.data.streaming.StreamSplits`; the others load whole.

    Unknown names raise :class:`~kdistill.errors.UnknownNameError`; options the
    loader does not take, or required ones left out, raise :class:`ConfigError`
    listing what it accepts.
    """
    load = DATASETS.get(name)
    params = inspect.signature(load).parameters
    takes_any = any(p.kind is p.VAR_KEYWORD for p in params.values())
    allowed = dataset_options(name) or []
    unknown = sorted(set(options) - set(allowed)) if not takes_any else []
    if unknown:
        raise ConfigError(
            f"Dataset '{name}' does not take option(s) {shorten(', '.join(map(str, unknown)), 200)}. "
            f"Allowed options: {', '.join(allowed) or '(none)'}."
        )
    missing = [
        p.name
        for p in params.values()
        if p.default is p.empty
        and p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)
        and p.name not in options
        and p.name not in _RESERVED
    ]
    if missing:
        raise ConfigError(
            f"Dataset '{name}' needs option(s) {', '.join(missing)}. "
            f"Allowed options: {', '.join(allowed)}."
        )
    # Only loaders that read files care where they are; the rest never see these.
    for key, value in (("data_dir", data_dir), ("download", download), ("loader", loader)):
        if key in params or takes_any:
            options[key] = value
    data = load(**options)
    if not isinstance(data, DataSplits | StreamSplits):
        raise DataError(f"The loader of data set '{name}' returned {type(data).__name__}, not DataSplits "
                        "or StreamSplits.")
    for split, count in (("training", data.num_train), ("test", data.num_test)):
        if count == 0:
            raise DataError(f"Data set '{name}' ({data.name}) has no {split} samples; check its files "
                            "and the options that select or split them.")
    return data
