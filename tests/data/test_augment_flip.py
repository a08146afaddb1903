"""Random left-right mirroring: per image, reproducible, and it turns the teacher cache off."""

import torch

from kdistill.config import AugmentConfig
from kdistill.data import hflip


def test_hflip_mirrors_each_image_by_its_own_coin():
    x = torch.arange(2 * 1 * 2 * 3, dtype=torch.float32).reshape(2, 1, 2, 3)
    assert torch.equal(hflip(x, p=1.0), x.flip(-1)) and torch.equal(hflip(x, p=0.0), x)
    many = torch.randn(400, 1, 4, 4)
    out = hflip(many, generator=torch.Generator().manual_seed(0))
    flipped = (out == many.flip(-1)).flatten(1).all(1)
    kept = (out == many).flatten(1).all(1)
    assert bool((flipped | kept).all()) and 150 < int(flipped.sum()) < 250
    again = hflip(many, generator=torch.Generator().manual_seed(0))
    assert torch.equal(out, again)


def test_flip_counts_as_augmentation():
    assert AugmentConfig(flip=True).active and not AugmentConfig().active and AugmentConfig(jitter=1).active
