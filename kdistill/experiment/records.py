"""What a checkpoint records about its run: how the data was loaded and which model it holds."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from kdistill.config import DataConfig, ExperimentConfig, ModelConfig
from kdistill.data import DataSplits, StreamSplits, load_dataset
from kdistill.errors import ConfigError
from kdistill.models import rebuild_spec
from kdistill.registry import MODELS


def load_data(cfg: ExperimentConfig, *, whole_for: str | None = None) -> DataSplits | StreamSplits:
    """Load the configured data set, cut to ``limit_train`` / ``limit_test`` if set.

    ``whole_for`` names a feature that needs the set in memory as tensors (a
    scheme, the study): a set that would stream is then refused in words.
    """
    d = cfg.data
    if whole_for is not None and d.loader == "stream":
        raise ConfigError(f"{whole_for} works on data sets held whole in memory; set data.loader: memory "
                          "(or auto) instead of stream.")
    data = load_dataset(d.dataset, data_dir=d.data_dir, download=d.download, loader=d.loader, **d.options)
    if d.limit_train or d.limit_test:
        data = data.subset(d.limit_train, d.limit_test)
    data.source = data_record(d)
    if whole_for is not None and not isinstance(data, DataSplits):
        raise ConfigError(f"{whole_for} works on data sets held whole in memory, but data set '{d.dataset}' is "
                          "too large to load comfortably and would stream; use data.limit_train / limit_test, "
                          "a smaller image_size, or train with kdistill train / distill.")
    return data


# option names that hold a file or folder: only these are made absolute, so a value
# such as test_split="dev" is never mistaken for a path that happens to exist
_PATH_WORDS = ("path", "dir", "file", "folder", "root", "tokenizer")


def _is_path_option(key: str) -> bool:
    return any(key == word or key.endswith(f"_{word}") for word in _PATH_WORDS)


def data_record(d: DataConfig) -> dict[str, Any]:
    """What reloads a config's data set later: its name, loader options and ``data_dir``.

    Relative paths become absolute (resolved as the loader resolves them: under
    ``data_dir`` first, then from the working folder), and the options naming
    local files are listed under ``files`` so a reader can tell a moved file
    from a bad option. Checkpoints store this record under ``data``.
    """
    data_dir = str(Path(d.data_dir).expanduser().resolve()) if d.data_dir else None
    options: dict[str, Any] = {}
    files: list[str] = []
    for key, value in d.options.items():
        if isinstance(value, str) and value and _is_path_option(key):
            path = Path(value).expanduser()
            under = Path(data_dir) / path if data_dir and not path.is_absolute() else None
            local = under if under is not None and under.exists() else path
            if local.exists():
                value = str(local.resolve())
                files.append(key)
        options[key] = value
    return {"dataset": d.dataset, "options": options, "data_dir": data_dir,
            "download": d.download, "files": files, "limit_train": d.limit_train, "limit_test": d.limit_test}


def model_spec(model_cfg: ModelConfig, data: DataSplits, model: nn.Module | None = None) -> dict[str, Any]:
    """The checkpoint's ``model_spec`` of ``model_cfg``'s model trained on ``data``."""
    spec = rebuild_spec(model_cfg.model, model_cfg.options, model, data.input_shape, data.num_classes, data.name)
    if model_cfg.variational is not None:  # load_model rebuilds and sparsifies it
        spec["variational"] = model_cfg.variational.model_dump(mode="json")
    plugin = MODELS.plugin_of(model_cfg.model)
    if plugin is not None:  # a model from user code: a reader is told which --plugin rebuilds it
        spec["plugin"] = plugin
    return spec


def data_meta(data: DataSplits) -> dict[str, Any]:
    # only data loaded from a config knows how to reload itself; other data adds no record
    return {"data": data.source} if data.source is not None else {}
