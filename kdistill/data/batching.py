"""Mini-batches sliced straight from on-device tensors, without a DataLoader.

For data sets that fit on the device, indexing one tensor is far faster than a
DataLoader's per-sample collation, and the returned indices let methods that
keep per-sample state (memory banks, cached teacher logits) find their rows.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch
from torch import Tensor


def num_batches(n: int, batch_size: int, drop_last: bool = False) -> int:
    """How many batches :func:`iterate_batches` yields for ``n`` samples."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    return n // batch_size if drop_last else math.ceil(n / batch_size)


def iterate_batches(
    x: Tensor,
    y: Tensor | None,
    batch_size: int,
    *,
    shuffle: bool = True,
    generator: torch.Generator | None = None,
    drop_last: bool = False,
) -> Iterator[tuple[Tensor, Tensor | None, Tensor]]:
    """Yield ``(x_batch, y_batch, index_batch)`` covering every sample once.

    With ``shuffle`` the order is a ``torch.randperm`` drawn from ``generator``
    (reproducible when it is seeded). The permutation is drawn on the
    generator's device and moved to the data's, so a CPU generator gives the
    same order for CPU and CUDA data. ``index_batch`` lives on ``x``'s device.
    """
    n = len(x)
    if y is not None and len(y) != n:
        raise ValueError(f"x has {n} samples but y has {len(y)}")
    count = num_batches(n, batch_size, drop_last)
    if not shuffle:
        # Contiguous slices are views: no copy at all.
        order = torch.arange(n, device=x.device)
        for b in range(count):
            s = slice(b * batch_size, (b + 1) * batch_size)
            yield x[s], (None if y is None else y[s]), order[s]
        return
    perm_device = generator.device if generator is not None else x.device
    perm = torch.randperm(n, generator=generator, device=perm_device).to(x.device)
    for b in range(count):
        idx = perm[b * batch_size : (b + 1) * batch_size]
        yield x[idx], (None if y is None else y[idx]), idx
