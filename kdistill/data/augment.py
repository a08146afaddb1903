"""Batched, on-device augmentation."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from kdistill.errors import DataError


def jitter(
    x: Tensor,
    max_shift: int,
    generator: torch.Generator | None = None,
    fill: float | Sequence[float] = 0.0,
) -> Tensor:
    """Translate each image by its own random offset of up to ``max_shift`` pixels.

    Offsets are integers drawn uniformly from ``-max_shift..max_shift``
    independently for rows and columns (Hinton et al. used +-2 on MNIST).
    Pixels shifted in are ``fill``, a scalar or one value per channel; pass
    :attr:`DataSplits.fill_value` so standardised images get their true
    background. Runs on ``x``'s device with no loop over samples, and is
    reproducible given a seeded ``generator``. ``max_shift=0`` returns ``x``.
    """
    if x.dim() != 4:
        raise DataError(
            f"jitter needs a batch of images shaped (N, C, H, W); got shape {tuple(x.shape)}. "
            "Turn jitter off for tabular data."
        )
    if max_shift < 0:
        raise DataError(f"jitter max_shift must be >= 0, got {max_shift}.")
    if max_shift == 0 or x.numel() == 0:
        return x
    n, c, h, w = x.shape
    s = int(max_shift)
    gen_device = generator.device if generator is not None else x.device
    shifts = torch.randint(-s, s + 1, (2, n), generator=generator, device=gen_device).to(x.device)
    dy, dx = shifts[0], shifts[1]

    # Pad with the fill colour, then read an HxW window whose origin is moved by
    # the shift: out[i, :, r, q] = x[i, :, r - dy_i, q - dx_i], or fill outside.
    fill_t = torch.as_tensor(fill, dtype=x.dtype, device=x.device).reshape(1, -1, 1, 1)
    padded = fill_t.expand(n, c, h + 2 * s, w + 2 * s).clone()
    padded[:, :, s : s + h, s : s + w] = x
    rows = torch.arange(h, device=x.device)[None, :] + (s - dy)[:, None]  # (N, H)
    cols = torch.arange(w, device=x.device)[None, :] + (s - dx)[:, None]  # (N, W)
    batch = torch.arange(n, device=x.device)[:, None, None, None]
    channel = torch.arange(c, device=x.device)[None, :, None, None]
    return padded[batch, channel, rows[:, None, :, None], cols[:, None, None, :]]


def hflip(x: Tensor, generator: torch.Generator | None = None, p: float = 0.5) -> Tensor:
    """Mirror each image left-right with probability ``p`` (its own coin per image).

    The usual companion of random crops for natural images and garments;
    leave it off for digits and text, whose mirror image is another symbol.
    """
    if x.dim() != 4:
        raise DataError(f"hflip needs a batch of images shaped (N, C, H, W); got shape {tuple(x.shape)}.")
    if x.numel() == 0 or p <= 0:
        return x
    gen_device = generator.device if generator is not None else x.device
    flip = (torch.rand(len(x), generator=generator, device=gen_device) < p).to(x.device)
    return torch.where(flip[:, None, None, None], x.flip(-1), x)
