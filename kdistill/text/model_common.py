"""What every text classifier shares: token-id input, dynamic padding, embeddings.

Text models take a ``(batch, length)`` int64 tensor of token ids, right-padded
with ``pad_id`` (see :mod:`kdistill.text.data`). ``forward`` first
drops the columns that are padding in every row (*dynamic padding*): a batch
of five-token phrases runs at length five although the data set is stored at
``max_length``. ``logits(ids, mask)`` is the trace- and export-friendly core
without that data-dependent slice.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from kdistill.errors import ConfigError, quote
from kdistill.text.hf import load_tokenizer, resolve_source, tokenizer_info

MAX_VOCAB = 1 << 24
MAX_TEXT_LENGTH = 1 << 16


class TextModel(nn.Module):
    """Base class: ids -> (trim padding) -> :meth:`logits`.

    Subclasses set ``rebuild_options``: JSON-safe keyword arguments that
    rebuild the architecture (no weights, no files) through the registry,
    which is what checkpoints record.
    """

    def __init__(self, vocab_size: int, pad_id: int, max_length: int) -> None:
        super().__init__()
        self.vocab_size = int(vocab_size)
        self.pad_id = int(pad_id)
        self.max_length = int(max_length)
        self.trim_padding = True
        self.rebuild_options: dict[str, Any] = {}

    def forward(self, ids: Tensor) -> Tensor:
        if ids.is_floating_point():
            raise ConfigError("Text models take int64 token ids, not float features; load a text data set.")
        mask = ids != self.pad_id
        if self.trim_padding and ids.shape[1] > 1:
            # one host sync per batch buys the dynamic padding
            keep = max(1, int(mask.sum(dim=1).max()))
            ids, mask = ids[:, :keep], mask[:, :keep]
        return self.logits(ids, mask)

    def logits(self, ids: Tensor, mask: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def example_input(self, batch_size: int = 1, length: int | None = None) -> Tensor:
        """Random non-padding ids of full length: what latency is measured on."""
        length = length or self.max_length
        gen = torch.Generator().manual_seed(0)
        ids = torch.randint(1, max(2, self.vocab_size), (batch_size, length), generator=gen)
        return torch.where(ids == self.pad_id, (ids + 1) % self.vocab_size, ids)


def masked_mean(hidden: Tensor, mask: Tensor) -> Tensor:
    """Mean over the non-padding positions of ``hidden`` (N, L, D)."""
    weights = mask.to(hidden.dtype).unsqueeze(-1)
    return (hidden * weights).sum(1) / weights.sum(1).clamp(min=1.0)


class FactorizedEmbedding(nn.Module):
    """Token embeddings of width ``dim`` projected to ``out_dim`` (Lan et al. 2020, ALBERT).

    A small student cannot afford ``vocab x hidden`` parameters for a 30k
    vocabulary; ``vocab x dim + dim x hidden`` with a small ``dim`` keeps the
    teacher's tokenizer at a fraction of the cost.
    """

    def __init__(self, vocab_size: int, dim: int, out_dim: int, pad_id: int) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab_size, dim, padding_idx=pad_id)
        self.project = nn.Linear(dim, out_dim, bias=False) if dim != out_dim else nn.Identity()

    def forward(self, ids: Tensor) -> Tensor:
        return self.project(self.embed(ids))

    @torch.no_grad()
    def init_from(self, weight: Tensor) -> None:
        """Initialise with the top principal directions of a pretrained embedding matrix."""
        if weight.shape[0] != self.embed.num_embeddings:
            raise ConfigError(
                f"The pretrained embeddings have {weight.shape[0]} rows but the tokenizer "
                f"vocabulary has {self.embed.num_embeddings}; use the same tokenizer for both.")
        centred = weight.float() - weight.float().mean(0, keepdim=True)
        u, s, _ = torch.linalg.svd(centred, full_matrices=False)
        k = min(self.embed.embedding_dim, s.numel())
        reduced = u[:, :k] * s[:k]
        out = torch.zeros_like(self.embed.weight)
        out[:, :k] = reduced / reduced.std().clamp(min=1e-6)  # unit scale, like nn.Embedding's init
        if self.embed.padding_idx is not None:
            out[self.embed.padding_idx] = 0.0
        self.embed.weight.copy_(out)

def pretrained_word_embeddings(source: str | Path) -> Tensor:
    """The word-embedding matrix of a pretrained model folder or package, read directly."""
    from safetensors import SafetensorError, safe_open

    folder = resolve_source(source)
    files = sorted(folder.glob("*.safetensors"))
    for file in files:
        try:
            with safe_open(str(file), framework="pt") as handle:
                for key in handle.keys():  # noqa: SIM118 - safe_open has no __iter__
                    if key.endswith("word_embeddings.weight"):
                        weight = handle.get_tensor(key)
                        if weight.dim() != 2 or not weight.is_floating_point():
                            raise ConfigError(f"The word embeddings in {file} are not a float matrix "
                                              f"({weight.dtype} {tuple(weight.shape)}).")
                        return weight
        except (SafetensorError, OSError, ValueError) as error:
            raise ConfigError(f"Cannot read {file} ({type(error).__name__}): it is not a complete "
                              "safetensors file.") from None
    raise ConfigError(f"No word_embeddings.weight tensor in the safetensors files of {folder}.")


def text_input_length(model: str, input_shape: Any) -> int:
    try:
        shape = tuple(int(d) for d in input_shape)
    except (TypeError, ValueError):
        shape = ()
    if len(shape) != 1 or not 1 <= shape[0] <= MAX_TEXT_LENGTH:
        raise ConfigError(
            f"Model '{model}' reads token ids of shape (max_length,), got input_shape {shape}; "
            "load a text data set (sst2, text-csv).")
    return shape[0]


def vocabulary(model: str, tokenizer: str | None, vocab_size: int | None,
               pad_id: int | None) -> tuple[int, int]:
    """``(vocab_size, pad_id)`` given explicitly, or read from the tokenizer; ``0 <= pad_id < vocab_size``."""
    for key, value in (("vocab_size", vocab_size), ("pad_id", pad_id)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
            raise ConfigError(f"Model '{model}': {key} must be a whole number >= 0, got {quote(value)}.")
    if vocab_size is not None and pad_id is not None:
        vocab, pad = vocab_size, pad_id
    else:
        info = tokenizer_info(load_tokenizer(tokenizer))
        vocab, pad = int(vocab_size or info["vocab_size"]), int(info["pad_id"] if pad_id is None else pad_id)
    if not 1 <= vocab <= MAX_VOCAB:
        raise ConfigError(f"Model '{model}': vocab_size must be from 1 to {MAX_VOCAB:,}, got {vocab:,}.")
    if not 0 <= pad < vocab:
        raise ConfigError(f"Model '{model}': pad_id {pad:,} is not a token id of the {vocab:,}-token "
                          "vocabulary; use the tokenizer the data was encoded with.")
    return vocab, pad
