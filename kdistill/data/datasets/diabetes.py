"""scikit-learn's diabetes regression table: bundled, no download."""

from __future__ import annotations

import numpy as np
import torch
from sklearn.datasets import load_diabetes

from kdistill.data.prep import split_indices, standardize_columns
from kdistill.data.splits import DataSplits
from kdistill.registry import register_dataset

TEST_FRACTION = 0.2
SEED = 0


@register_dataset("diabetes")
def diabetes() -> DataSplits:
    """442 patients, 10 baseline features, target a disease-progression score one year later (25-346).

    Efron et al. 2004, as shipped with scikit-learn: 354 train / 88 test rows
    (a fixed seeded split), features standardised with training statistics,
    targets left in their own units (kdistill standardises them while it
    trains and predicts in these units).
    """
    bunch = load_diabetes()
    x = np.asarray(bunch.data, dtype=np.float64)
    y = np.asarray(bunch.target, dtype=np.float32)
    train, test = split_indices(None, len(y), TEST_FRACTION, SEED, stratify=False)
    x_train, x_test, mean, std = standardize_columns(x[train], x[test])
    return DataSplits(
        name="diabetes",
        x_train=torch.from_numpy(x_train),
        y_train=torch.from_numpy(y[train]),
        x_test=torch.from_numpy(x_test),
        y_test=torch.from_numpy(y[test]),
        num_classes=0,
        input_shape=(x.shape[1],),
        mean=mean,
        std=std,
        feature_names=list(bunch.feature_names),
    )
