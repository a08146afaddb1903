"""MNIST and Fashion-MNIST from their IDX files."""

from __future__ import annotations

from pathlib import Path

import torch

from kdistill.data.idx import read_idx_pair
from kdistill.data.options import bool_option
from kdistill.data.prep import standardize_images
from kdistill.data.sources import idx_file, locate_idx
from kdistill.data.splits import DataSplits
from kdistill.registry import register_dataset

FASHION_CLASSES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]  # fmt: skip


def load_idx_dataset(
    name: str,
    class_names: list[str],
    *,
    data_dir: str | Path | None = None,
    download: bool = True,
    normalize: bool = True,
) -> DataSplits:
    """Locate (or download) an MNIST-format data set and load it as ``(N, 1, 28, 28)``."""
    bool_option(name, "normalize", normalize)
    bool_option(name, "download", download)
    folder = locate_idx(name, data_dir, download)
    arrays = {}
    for split in ("train", "test"):
        images, labels = read_idx_pair(
            idx_file(folder, f"{split}_images"),
            idx_file(folder, f"{split}_labels"),
            num_classes=len(class_names),
        )
        x = torch.from_numpy(images).unsqueeze(1).to(torch.float32).div_(255.0)
        arrays[split] = (x, torch.from_numpy(labels))
    (x_train, y_train), (x_test, y_test) = arrays["train"], arrays["test"]
    mean = std = None
    if normalize:
        x_train, x_test, mean, std = standardize_images(x_train, x_test)
    return DataSplits(
        name=name,
        x_train=x_train,
        y_train=y_train,
        x_test=x_test,
        y_test=y_test,
        num_classes=10,
        input_shape=(1, 28, 28),
        class_names=list(class_names),
        mean=mean,
        std=std,
    )


@register_dataset("mnist")
def mnist(
    *, data_dir: str | Path | None = None, download: bool = True, normalize: bool = True
) -> DataSplits:
    """MNIST handwritten digits, 60,000 train / 10,000 test.

    Pixels are scaled to [0, 1] and, if ``normalize``, standardised with the
    training mean and std. See :mod:`kdistill.data.sources` for where the
    files are looked for.
    """
    return load_idx_dataset(
        "mnist", [str(i) for i in range(10)],
        data_dir=data_dir, download=download, normalize=normalize,
    )  # fmt: skip


@register_dataset("fashion-mnist")
def fashion_mnist(
    *, data_dir: str | Path | None = None, download: bool = True, normalize: bool = True
) -> DataSplits:
    """Zalando's Fashion-MNIST, 60,000 train / 10,000 test; same format as MNIST."""
    return load_idx_dataset(
        "fashion-mnist", FASHION_CLASSES,
        data_dir=data_dir, download=download, normalize=normalize,
    )  # fmt: skip
