"""scikit-learn's 8x8 handwritten digits: tiny, bundled, no download."""

from __future__ import annotations

import numpy as np
import torch
from sklearn.datasets import load_digits

from kdistill.data.options import bool_option
from kdistill.data.prep import split_indices, standardize_images
from kdistill.data.splits import DataSplits
from kdistill.registry import register_dataset

# 360 of 1797 is sklearn's customary 20 % test split; fixed so results compare across runs.
TEST_SIZE = 360
SEED = 0


@register_dataset("digits")
def digits(*, normalize: bool = True) -> DataSplits:
    """1,437 train / 360 test 8x8 grey images of digits 0-9, shape ``(1, 8, 8)``.

    Pixels are scaled to [0, 1] and, if ``normalize``, standardised with the
    training set's overall mean and std.
    """
    bool_option("digits", "normalize", normalize)
    bunch = load_digits()
    images = (bunch.images / 16.0).astype(np.float32)[:, None]  # values are 0..16
    labels = bunch.target.astype(np.int64)
    train, test = split_indices(labels, len(labels), TEST_SIZE / len(labels), SEED)
    x_train, x_test = torch.from_numpy(images[train]), torch.from_numpy(images[test])
    mean = std = None
    if normalize:
        x_train, x_test, mean, std = standardize_images(x_train, x_test)
    return DataSplits(
        name="digits",
        x_train=x_train,
        y_train=torch.from_numpy(labels[train]),
        x_test=x_test,
        y_test=torch.from_numpy(labels[test]),
        num_classes=10,
        input_shape=(1, 8, 8),
        class_names=[str(i) for i in range(10)],
        mean=mean,
        std=std,
    )
