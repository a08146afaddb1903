"""Tokenise a corpus once and keep it as a padded ``(N, max_length)`` id tensor.

Text then follows the image path's fast-loop rules: the whole split is one
``LongTensor`` on the training device, batches are index slices, and there is
no DataLoader. Padding is *dynamic* at run time: text models drop the columns
that are padding in every row of a batch (see
:class:`kdistill.text.models.TextModel`), so a batch of short phrases costs what
short phrases cost, although the stored tensor is padded to ``max_length``.

Encodings are cached on disk (``$XDG_CACHE_HOME/kdistill/text`` or
``~/.cache/kdistill/text``) under a hash of the texts, the tokenizer's full
definition and ``max_length``; a changed tokenizer or corpus can never reuse a
stale cache.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save
from torch import Tensor

from kdistill.errors import ConfigError, DataError, OutputError, quote
from kdistill.io import atomic_write_bytes, cache_root

log = logging.getLogger("kdistill")

CACHE_VERSION = 1


def tokenizer_fingerprint(tokenizer: Any) -> str:
    """A hash of everything that decides how a tokenizer splits and numbers text."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        definition = backend.to_str()
    else:  # slow tokenizers: the vocabulary and special tokens decide the ids
        definition = json.dumps([sorted(tokenizer.get_vocab().items()), tokenizer.all_special_tokens])
    return hashlib.sha256(definition.encode("utf-8")).hexdigest()


def encode_texts(tokenizer: Any, texts: Sequence[str], max_length: int) -> Tensor:
    """Token ids ``(N, max_length)``, int64, truncated and right-padded with the pad id."""
    if isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 2:
        raise ConfigError(f"max_length must be a whole number of at least 2 (room for special tokens), "
                          f"got {quote(max_length)}.")
    if not texts:
        return torch.zeros(0, max_length, dtype=torch.long)
    bad = next((i for i, text in enumerate(texts, start=1) if not isinstance(text, str)), None)
    if bad is not None:
        raise DataError(f"Text number {bad} is not text (a missing value?); every row needs a string.")
    encoded = tokenizer(list(texts), padding="max_length", truncation=True, max_length=max_length,
                        return_attention_mask=False, return_token_type_ids=False)
    return torch.tensor(encoded["input_ids"], dtype=torch.long)


def cache_key(tokenizer: Any, texts: Sequence[str], max_length: int) -> str:
    digest = hashlib.sha256()
    digest.update(f"v{CACHE_VERSION}|{max_length}|{tokenizer_fingerprint(tokenizer)}|".encode())
    for text in texts:
        digest.update(text.encode("utf-8"))
        digest.update(b"\x00")
    return digest.hexdigest()[:32]


def encode_cached(tokenizer: Any, texts: Sequence[str], max_length: int,
                  cache_dir: str | Path | None = None, use_cache: bool = True) -> Tensor:
    """:func:`encode_texts`, read from / written to the on-disk cache when ``use_cache``."""
    if not use_cache:
        return encode_texts(tokenizer, texts, max_length)
    folder = Path(cache_dir) if cache_dir is not None else cache_root() / "text"
    path = folder / f"{cache_key(tokenizer, texts, max_length)}.safetensors"
    if path.is_file():
        try:
            ids = load_file(str(path))["input_ids"]
            # an entry of another shape or dtype (or ids the tokenizer cannot have made) is stale
            if ids.shape == (len(texts), max_length) and ids.dtype == torch.long and (
                    ids.numel() == 0 or (int(ids.min()) >= 0 and int(ids.max()) < _vocab_size(tokenizer))):
                return ids
        except (SafetensorError, OSError, KeyError, ValueError):
            pass  # a damaged cache entry is rebuilt below
    ids = encode_texts(tokenizer, texts, max_length)
    try:
        _save_atomic(path, ids)
    except OutputError as error:  # a read-only or full cache must not stop training
        log.warning("could not cache token ids: %s", error)
    return ids


def _vocab_size(tokenizer: Any) -> int:
    try:
        return int(len(tokenizer))
    except TypeError:
        return 1 << 62


def _save_atomic(path: Path, ids: Tensor) -> None:
    atomic_write_bytes(path, save({"input_ids": ids.contiguous()}), "token cache")


def sequence_lengths(ids: Tensor, pad_id: int) -> Tensor:
    """Number of non-padding tokens per row (right padding)."""
    return (ids != pad_id).sum(dim=-1)
