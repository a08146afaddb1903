"""Grow a text transfer set for the teacher to label (Tang et al. 2019).

Tang et al., "Distilling Task-Specific Knowledge from BERT into Simple Neural
Networks" (2019), Sec. 3.3, enlarge the distillation set with rules that keep
sentences plausible: *masking* replaces each token by ``[MASK]`` with
probability ``p_mask``, and *n-gram sampling* keeps, with probability
``p_ng``, only a random n-gram (n uniform in 1..5) of the example. The teacher
then labels every new example through its logits, so the student sees far more
of the teacher's function than the labelled set shows.

Here the rules act on token ids (word pieces rather than words), the special
tokens at both ends are kept, and the result is re-padded to the same width.
"""

from __future__ import annotations

import torch
from torch import Tensor

from kdistill.errors import ConfigError


def augment_ids(ids: Tensor, *, pad_id: int, mask_id: int | None, copies: int = 1,
                mask_prob: float = 0.1, ngram_prob: float = 0.25, max_ngram: int = 5,
                special_ends: bool = True, seed: int = 0) -> tuple[Tensor, Tensor]:
    """``copies`` augmented versions of every row of ``ids`` (N, L).

    Returns ``(new_ids, source_rows)``: the ``copies * N`` new rows and, for
    each, the index of the row it came from (to copy labels if wanted).
    ``mask_id=None`` disables masking (tokenizers without a mask token).
    """
    if copies < 0:
        raise ConfigError(f"augment copies must be >= 0, got {copies}.")
    for name, p in (("mask_prob", mask_prob), ("ngram_prob", ngram_prob)):
        if not 0.0 <= p <= 1.0:
            raise ConfigError(f"{name} must lie in [0, 1], got {p}.")
    if copies == 0 or len(ids) == 0:
        return ids[:0], torch.zeros(0, dtype=torch.long)
    gen = torch.Generator().manual_seed(seed)
    source = torch.arange(len(ids)).repeat(copies)
    rows = ids[source].clone()
    lengths = (rows != pad_id).sum(-1)
    inner_start = 1 if special_ends else 0
    inner_end = lengths - (1 if special_ends else 0)  # exclusive: [SEP] stays
    positions = torch.arange(rows.shape[1]).unsqueeze(0)
    inner = (positions >= inner_start) & (positions < inner_end.unsqueeze(1))
    if mask_id is not None and mask_prob > 0:
        hit = (torch.rand(rows.shape, generator=gen) < mask_prob) & inner
        rows[hit] = mask_id
    if ngram_prob > 0:
        chosen = torch.nonzero(torch.rand(len(rows), generator=gen) < ngram_prob).flatten()
        for r in chosen.tolist():
            lo, hi = inner_start, int(inner_end[r])
            span = hi - lo
            if span <= 1:
                continue
            n = int(torch.randint(1, min(max_ngram, span) + 1, (1,), generator=gen))
            start = lo + int(torch.randint(0, span - n + 1, (1,), generator=gen))
            kept = torch.cat([rows[r, :lo], rows[r, start:start + n], rows[r, hi:int(lengths[r])]])
            rows[r] = pad_id
            rows[r, :len(kept)] = kept
    return rows, source
