"""Images sorted into one folder per class, decoded with Pillow: loaded whole into memory when the
set fits comfortably, else read lazily, image by image, in DataLoader workers.
"""

from __future__ import annotations

import contextlib
import os
import struct
import warnings
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from kdistill.data.datasets.tabular import resolve_path
from kdistill.data.options import (
    bool_option,
    choice_option,
    fraction_option,
    path_option,
    seed_option,
)
from kdistill.data.prep import split_indices, standardize_images
from kdistill.data.splits import DataSplits
from kdistill.data.streaming import LOADER_MODES, StreamSplits, comfortable_bytes, data_log
from kdistill.errors import ConfigError, DataError, quote, shorten
from kdistill.io import check_input_path
from kdistill.registry import register_dataset

EXTENSIONS = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".pgm", ".ppm"}
# an image file may decode to at most this many pixels (a decompression bomb is a small file that
# claims gigapixels); resized images are at most MAX_SIDE on a side
MAX_PIXELS = 64_000_000
MAX_SIDE = 4096
# loaded whole (loader: memory), the data set lives in memory as float32: refuse, before decoding, more
# than this; streamed, it is never held whole
MAX_DATA_BYTES = 32 << 30
# Pillow modes that hold one channel: such images stay grey unless the config asks for RGB
GREY_MODES = {"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F"}
# streamed images are standardised with statistics of this many training images (a seeded draw)
STATS_SAMPLE = 512


def _class_dirs(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


def _image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in EXTENSIONS)


def _files(root: Path, classes: list[str]) -> list[tuple[int, Path]]:
    """``(class id, file)`` of every image under ``root/<class>/``, in a fixed order."""
    try:
        return [(label, file) for label, name in enumerate(classes) if (root / name).is_dir()
                for file in _image_files(check_input_path(root / name, "Class folder"))]
    except OSError as exc:  # a class folder (or one inside it) that cannot be listed
        where = f" ({shorten(exc.filename, 200)})" if getattr(exc, "filename", None) else ""
        raise DataError(f"Cannot list the images under {root}{where}: {exc.strerror or type(exc).__name__}. "
                        "Make the class folders readable, or remove the ones that are not.") from None


def _check_found(files: list[tuple[int, Path]], root: Path, classes: list[str], *, every_class: bool = False) -> None:
    """Refuse a folder without images; with ``every_class`` (the training images), also a class without any,
    which the model would get an output for but could never learn (torchvision's ImageFolder refuses it too)."""
    if not files:
        raise DataError(
            f"Image folder {root} has no images (looked for {', '.join(sorted(EXTENSIONS))} "
            f"files inside the class folders {', '.join(classes)})."
        )
    if every_class:
        present = {label for label, _ in files}
        empty = [name for label, name in enumerate(classes) if label not in present]
        if empty:
            raise DataError(
                f"Image folder {root}: {len(empty)} class folder(s) hold no training images: "
                f"{shorten(', '.join(empty), 200)} (looked for {', '.join(sorted(EXTENSIONS))} files). A class "
                "without training images cannot be learned; add its images or remove the folder.")


def _load_images(files: list[tuple[int, Path]], size: tuple[int, int], grayscale: bool) -> tuple[np.ndarray,
                                                                                                  np.ndarray]:
    x = np.stack([read_image(file, size, grayscale) for _, file in files]).astype(np.float32) / 255.0
    x = x[:, None] if grayscale else x.transpose(0, 3, 1, 2)
    return np.ascontiguousarray(x), np.array([label for label, _ in files], dtype=np.int64)


def _probe(file: Path) -> tuple[str, tuple[int, int]]:
    """The Pillow mode and (height, width) of one image, read from its header."""
    with _opened(file) as img:
        return img.mode, (img.size[1], img.size[0])


class ImageFolderDataset(Dataset):
    """Images decoded one at a time (in DataLoader workers): ``(float tensor (C, H, W), class id)``.

    Each image is converted to grey or RGB, resized to ``size`` and scaled to
    [0, 1], then standardised with ``mean`` / ``std`` (one value per channel)
    when they are given.
    """

    def __init__(self, files: list[tuple[int, Path]], size: tuple[int, int], grayscale: bool,
                 mean: tuple[float, ...] | None = None, std: tuple[float, ...] | None = None) -> None:
        # Paths and labels as two flat numpy arrays, not lists of Python objects: a DataLoader worker,
        # forked from the trainer, writes the reference count of every object it reads, so it came to
        # hold a private copy of each page of a list (its memory grew with the folder's size).
        self._paths = np.array([os.fsencode(file) for _, file in files], dtype=np.bytes_)
        self._labels = np.array([label for label, _ in files], dtype=np.int64)
        self.size = size
        self.grayscale = grayscale
        self.mean = None if mean is None else torch.tensor(mean, dtype=torch.float32).reshape(-1, 1, 1)
        self.std = None if std is None else torch.tensor(std, dtype=torch.float32).reshape(-1, 1, 1)

    @property
    def files(self) -> list[Path]:
        """The image files, in sample order."""
        return [Path(os.fsdecode(path)) for path in self._paths]

    @property
    def labels(self) -> list[int]:
        """The class id of each sample."""
        return self._labels.tolist()

    def __len__(self) -> int:
        return len(self._paths)

    def __getitem__(self, i: int) -> tuple[Tensor, int]:
        file = Path(os.fsdecode(self._paths[i]))
        pixels = torch.from_numpy(read_image(file, self.size, self.grayscale).copy())  # writable
        x = (pixels[None] if self.grayscale else pixels.permute(2, 0, 1)).float().div_(255.0)
        if self.mean is not None and self.std is not None:
            x = (x - self.mean) / self.std
        return x, int(self._labels[i])


def _sample_statistics(files: list[tuple[int, Path]], size: tuple[int, int], grayscale: bool,
                       seed: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of up to :data:`STATS_SAMPLE` training images (a seeded draw)."""
    order = np.random.default_rng(seed).permutation(len(files))[:STATS_SAMPLE]
    sample = ImageFolderDataset([files[i] for i in sorted(order)], size, grayscale)
    x = torch.stack([sample[i][0] for i in range(len(sample))])
    std, mean = torch.std_mean(x, dim=(0, 2, 3), correction=0)
    std = torch.where(std > 0, std, torch.ones_like(std))
    return tuple(mean.tolist()), tuple(std.tolist())


@contextlib.contextmanager
def _opened(file: Path) -> Iterator[Any]:
    """``file`` opened by Pillow; any damaged, truncated or oversized file is a DataError."""
    from PIL import Image

    check_input_path(file, "Image")  # a link to a device or a kernel file
    try:
        with warnings.catch_warnings():
            # Pillow only warns below twice its own limit; a bomb is refused here, by our smaller one
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(file) as img:
                width, height = img.size
                if width * height > MAX_PIXELS:
                    raise DataError(
                        f"Image {file} claims {width}x{height} pixels (more than {MAX_PIXELS:,}); it is "
                        "refused as a possible decompression bomb. Shrink it, or remove it.")
                yield img
    except DataError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise DataError(f"Image {file} decodes to too many pixels; it is refused as a possible "
                        "decompression bomb. Shrink it, or remove it.") from None
    # Pillow reports a damaged file as any of these, depending on the format's plug-in
    except (OSError, SyntaxError, ValueError, EOFError, struct.error, zlib.error, IndexError) as exc:
        raise DataError(f"Cannot read image {file} ({type(exc).__name__}): the file is damaged, "
                        "truncated or not an image. Replace or remove it.") from None


def read_image(file: Path, size: tuple[int, int], grayscale: bool) -> np.ndarray:
    """One image, converted and resized, as uint8 (H, W) or (H, W, 3)."""
    from PIL import Image

    with _opened(file) as img:
        img = img.convert("L" if grayscale else "RGB")
        # Pillow takes (width, height).
        img = img.resize((size[1], size[0]), Image.Resampling.BILINEAR)
        return np.asarray(img, dtype=np.uint8)


def _image_size(value: object) -> tuple[int, int] | None:
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        value = [value, value]
    ok = isinstance(value, list | tuple) and len(value) == 2 and all(
        isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= MAX_SIDE for v in value)
    if not ok:
        raise ConfigError(f"Dataset 'image-folder': option image_size must be a whole number or "
                          f"[height, width], each from 1 to {MAX_SIDE} (or null: the images' own size), "
                          f"got {quote(value)}.")
    return int(value[0]), int(value[1])


@register_dataset("image-folder")
def image_folder(
    *,
    path: str | Path,
    image_size: int | tuple[int, int] | list[int] | None = None,
    grayscale: bool | None = None,
    test_fraction: float = 0.2,
    seed: int = 0,
    normalize: bool = True,
    loader: str = "auto",
    data_dir: str | Path | None = None,
) -> DataSplits | StreamSplits:
    """Images under ``path``, either as ``train/<class>/`` and ``test/<class>/`` or as
    ``<class>/`` folders split with a seeded, stratified ``test_fraction``.

    Images keep their colour and size unless told otherwise: ``grayscale``
    (``null``: grey when the first image is, else RGB) and ``image_size`` (an
    int or ``[height, width]``; ``null``: the first image's size, every other
    image resized to it). Pixels are scaled to [0, 1] and, if ``normalize``,
    standardised per channel with training statistics (streamed: those of a
    seeded draw of 512 training images). The class names are the folder names.

    ``loader`` (the config's ``data.loader``): ``memory`` decodes every image
    now into tensors; ``stream`` returns a :class:`StreamSplits` whose images
    are decoded lazily, in DataLoader workers; ``auto`` picks memory when the
    decoded set fits comfortably in memory, else stream. What was chosen is
    logged.
    """
    name = "image-folder"
    path = path_option(name, "path", path)
    size = _image_size(image_size)
    if grayscale is not None:
        bool_option(name, "grayscale", grayscale)
    fraction_option(name, "test_fraction", test_fraction)
    seed_option(name, seed)
    bool_option(name, "normalize", normalize)
    choice_option(name, "loader", loader, LOADER_MODES)
    root = check_input_path(resolve_path(path, data_dir), "Image folder")
    if not root.is_dir():
        raise DataError(f"Image folder {root} is not a folder.")

    presplit = (root / "train").is_dir() and (root / "test").is_dir()
    tops = [root / "train", root / "test"] if presplit else [root]
    try:
        classes = sorted({d.name for top in tops for d in _class_dirs(top)})
    except OSError as exc:
        raise DataError(f"Cannot list image folder {root}: {exc.strerror or type(exc).__name__}.") from None
    if len(classes) < 2:
        layout = "train/ and test/" if presplit else "it"
        found = quote(classes) if classes else "none"
        raise DataError(
            f"Image folder {root} needs at least two class sub-folders under {layout}; "
            f"found {found}. Expected <path>/<class>/*.png or "
            "<path>/train/<class>/*.png with <path>/test/<class>/*.png."
        )
    if presplit:
        train_files, test_files = _files(root / "train", classes), _files(root / "test", classes)
        _check_found(train_files, root / "train", classes, every_class=True)
        _check_found(test_files, root / "test", classes)
        first_mode, first_size = _probe(train_files[0][1])
    else:
        files = _files(root, classes)
        _check_found(files, root, classes, every_class=True)
        first_mode, first_size = _probe(files[0][1])
        labels = np.array([label for label, _ in files], dtype=np.int64)
        train, test = split_indices(labels, len(files), test_fraction, seed)
        train_files, test_files = [files[i] for i in train], [files[i] for i in test]

    grey = first_mode in GREY_MODES if grayscale is None else grayscale
    if size is None:
        if max(first_size) > MAX_SIDE:
            raise DataError(f"The first image of {root} is {first_size[0]}x{first_size[1]} pixels, more than "
                            f"{MAX_SIDE} on a side; set the dataset option image_size to the size to train at.")
        size = first_size
    count = len(train_files) + len(test_files)
    needed = count * size[0] * size[1] * (1 if grey else 3) * 4
    if loader == "auto":
        loader = "memory" if needed <= min(comfortable_bytes(), MAX_DATA_BYTES) else "stream"
    how = (f"{'grey' if grey else 'RGB'} from {'grayscale' if grayscale is not None else 'the first image'}, "
           f"{size[0]}x{size[1]} from {'image_size' if image_size is not None else 'the first image'}")
    data_log.info("image folder %s: %d images in %d classes, read as %s %dx%d (%s); %s: %.1f GiB as float32",
                  root, count, len(classes), "grey" if grey else "RGB", size[0], size[1], how,
                  "decoded into memory" if loader == "memory" else "decoded lazily while training",
                  needed / 2**30)
    if loader == "stream":
        mean = std = None
        if normalize:
            mean, std = _sample_statistics(train_files, size, grey, seed)
        return StreamSplits(name=root.name, train=ImageFolderDataset(train_files, size, grey, mean, std),
                            test=ImageFolderDataset(test_files, size, grey, mean, std),
                            num_classes=len(classes), input_shape=(1 if grey else 3, *size),
                            class_names=classes, mean=mean, std=std)
    if needed > MAX_DATA_BYTES:
        raise DataError(
            f"Image folder {root}: {count:,} images at {size[0]}x{size[1]} would need "
            f"{needed / 2**30:.0f} GiB of memory as float32 (more than {MAX_DATA_BYTES >> 30} GiB); "
            "set data.loader: stream (or auto) to decode them while training, or use a smaller image_size.")
    x_train, y_train = _load_images(train_files, size, grey)
    x_test, y_test = _load_images(test_files, size, grey)
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
