"""Images sorted into one folder per class, loaded whole into memory with Pillow."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from kdistill.data.datasets.tabular import resolve_path
from kdistill.data.prep import split_indices, standardize_images
from kdistill.data.splits import DataSplits
from kdistill.errors import DataError
from kdistill.registry import register_dataset

EXTENSIONS = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".pgm", ".ppm"}


def _class_dirs(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


def _image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in EXTENSIONS)


def _load_images(
    root: Path, classes: list[str], size: tuple[int, int], grayscale: bool
) -> tuple[np.ndarray, np.ndarray]:
    from PIL import Image, UnidentifiedImageError

    images, labels = [], []
    for label, name in enumerate(classes):
        folder = root / name
        for file in _image_files(folder) if folder.is_dir() else []:
            try:
                with Image.open(file) as img:
                    img = img.convert("L" if grayscale else "RGB")
                    # Pillow takes (width, height).
                    img = img.resize((size[1], size[0]), Image.Resampling.BILINEAR)
                    images.append(np.asarray(img, dtype=np.uint8))
            except (OSError, UnidentifiedImageError) as exc:
                raise DataError(f"Cannot read image {file}: {exc}.") from None
            labels.append(label)
    if not images:
        raise DataError(
            f"Image folder {root} has no images (looked for {', '.join(sorted(EXTENSIONS))} "
            f"files inside the class folders {', '.join(classes)})."
        )
    x = np.stack(images).astype(np.float32) / 255.0
    x = x[:, None] if grayscale else x.transpose(0, 3, 1, 2)
    return np.ascontiguousarray(x), np.array(labels, dtype=np.int64)


@register_dataset("image-folder")
def image_folder(
    *,
    path: str | Path,
    image_size: int | tuple[int, int] | list[int] = 28,
    grayscale: bool = True,
    test_fraction: float = 0.2,
    seed: int = 0,
    normalize: bool = True,
    data_dir: str | Path | None = None,
) -> DataSplits:
    """Images under ``path``, either as ``train/<class>/`` and ``test/<class>/`` or as
    ``<class>/`` folders split with a seeded, stratified ``test_fraction``.

    Every image is converted to grey (``grayscale``) or RGB, resized to
    ``image_size`` (an int or ``[height, width]``), scaled to [0, 1] and, if
    ``normalize``, standardised per channel with training statistics.
    """
    root = resolve_path(path, data_dir)
    if not root.is_dir():
        raise DataError(f"Image folder {root} is not a folder.")
    size = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    if len(size) != 2 or min(size) < 1:
        raise DataError(
            f"image_size must be a positive int or [height, width], got {image_size!r}."
        )

    presplit = (root / "train").is_dir() and (root / "test").is_dir()
    tops = [root / "train", root / "test"] if presplit else [root]
    classes = sorted({d.name for top in tops for d in _class_dirs(top)})
    if len(classes) < 2:
        layout = "train/ and test/" if presplit else path
        raise DataError(
            f"Image folder {root} needs at least two class sub-folders under {layout}; "
            f"found {classes or 'none'}. Expected <path>/<class>/*.png or "
            "<path>/train/<class>/*.png with <path>/test/<class>/*.png."
        )
    if presplit:
        x_train, y_train = _load_images(root / "train", classes, size, grayscale)
        x_test, y_test = _load_images(root / "test", classes, size, grayscale)
    else:
        x, y = _load_images(root, classes, size, grayscale)
        train, test = split_indices(y, len(y), test_fraction, seed)
        x_train, y_train, x_test, y_test = x[train], y[train], x[test], y[test]
    x_train, x_test = torch.from_numpy(x_train), torch.from_numpy(x_test)
    mean = std = None
    if normalize:
        x_train, x_test, mean, std = standardize_images(x_train, x_test, per_channel=True)
    return DataSplits(
        name=root.name,
        x_train=x_train,
        y_train=torch.from_numpy(y_train),
        x_test=x_test,
        y_test=torch.from_numpy(y_test),
        num_classes=len(classes),
        input_shape=tuple(x_train.shape[1:]),
        class_names=classes,
        mean=mean,
        std=std,
    )
