"""Images sorted into one folder per class, loaded whole into memory with Pillow."""

from __future__ import annotations

import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
import torch

from kdistill.data.datasets.tabular import resolve_path
from kdistill.data.options import bool_option, fraction_option, path_option, seed_option
from kdistill.data.prep import split_indices, standardize_images
from kdistill.data.splits import DataSplits
from kdistill.errors import ConfigError, DataError, quote, shorten
from kdistill.io import check_input_path
from kdistill.registry import register_dataset

EXTENSIONS = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".pgm", ".ppm"}
# an image file may decode to at most this many pixels (a decompression bomb is a small file that
# claims gigapixels); resized images are at most MAX_SIDE on a side
MAX_PIXELS = 64_000_000
MAX_SIDE = 4096
# the whole data set lives in memory as float32: refuse, before decoding, more than this
MAX_DATA_BYTES = 32 << 30


def _class_dirs(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


def _image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in EXTENSIONS)


def _load_images(
    root: Path, classes: list[str], size: tuple[int, int], grayscale: bool
) -> tuple[np.ndarray, np.ndarray]:
    try:
        files = [(label, file) for label, name in enumerate(classes) if (root / name).is_dir()
                 for file in _image_files(check_input_path(root / name, "Class folder"))]
    except OSError as exc:  # a class folder (or one inside it) that cannot be listed
        where = f" ({shorten(exc.filename, 200)})" if getattr(exc, "filename", None) else ""
        raise DataError(f"Cannot list the images under {root}{where}: {exc.strerror or type(exc).__name__}. "
                        "Make the class folders readable, or remove the ones that are not.") from None
    needed = len(files) * size[0] * size[1] * (1 if grayscale else 3) * 4
    if needed > MAX_DATA_BYTES:
        raise DataError(
            f"Image folder {root}: {len(files):,} images at {size[0]}x{size[1]} would need "
            f"{needed / 2**30:.0f} GiB of memory as float32 (more than {MAX_DATA_BYTES >> 30} GiB); "
            "use a smaller image_size or fewer images.")
    images, labels = [], []
    for label, file in files:
        images.append(read_image(file, size, grayscale))
        labels.append(label)
    if not images:
        raise DataError(
            f"Image folder {root} has no images (looked for {', '.join(sorted(EXTENSIONS))} "
            f"files inside the class folders {', '.join(classes)})."
        )
    x = np.stack(images).astype(np.float32) / 255.0
    x = x[:, None] if grayscale else x.transpose(0, 3, 1, 2)
    return np.ascontiguousarray(x), np.array(labels, dtype=np.int64)


def read_image(file: Path, size: tuple[int, int], grayscale: bool) -> np.ndarray:
    """One image, converted and resized; any damaged, truncated or oversized file is a DataError."""
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
                img = img.convert("L" if grayscale else "RGB")
                # Pillow takes (width, height).
                img = img.resize((size[1], size[0]), Image.Resampling.BILINEAR)
                return np.asarray(img, dtype=np.uint8)
    except DataError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise DataError(f"Image {file} decodes to too many pixels; it is refused as a possible "
                        "decompression bomb. Shrink it, or remove it.") from None
    # Pillow reports a damaged file as any of these, depending on the format's plug-in
    except (OSError, SyntaxError, ValueError, EOFError, struct.error, zlib.error, IndexError) as exc:
        raise DataError(f"Cannot read image {file} ({type(exc).__name__}): the file is damaged, "
                        "truncated or not an image. Replace or remove it.") from None


def _image_size(value: object) -> tuple[int, int]:
    if isinstance(value, int) and not isinstance(value, bool):
        value = [value, value]
    ok = isinstance(value, list | tuple) and len(value) == 2 and all(
        isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= MAX_SIDE for v in value)
    if not ok:
        raise ConfigError(f"Dataset 'image-folder': option image_size must be a whole number or "
                          f"[height, width], each from 1 to {MAX_SIDE}, got {quote(value)}.")
    return int(value[0]), int(value[1])


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
    name = "image-folder"
    path = path_option(name, "path", path)
    size = _image_size(image_size)
    bool_option(name, "grayscale", grayscale)
    fraction_option(name, "test_fraction", test_fraction)
    seed_option(name, seed)
    bool_option(name, "normalize", normalize)
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
