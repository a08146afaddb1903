"""Detection data sets built offline: digits or garments pasted onto larger canvases.

``canvas-mnist``, ``canvas-fashion-mnist`` and ``canvas-digits`` (sklearn's
bundled 8x8 digits, no download) place several glyphs at random positions
and sizes on an empty canvas and record a box and a class for each one:

1. the number of glyphs is drawn uniformly from ``objects = [lo, hi]``;
2. each glyph (a random one of the source split) is resized to a random side
   ``s`` in ``scale = [lo, hi]`` pixels (bilinear, antialiased) and rounded to
   8-bit grey levels;
3. its box is the tight box around the non-zero pixels of that resized glyph:
   ``x1, y1`` the first non-zero column and row, ``x2, y2`` one past the last
   (pixel edges), offset by where the glyph is placed;
4. a position is drawn uniformly so the glyph lies inside the canvas; when the
   new box overlaps an earlier one by more than ``max_overlap`` IoU another
   glyph, size and position are drawn (up to 50 times, then fewer glyphs);
5. glyphs are composited with a pixel-wise maximum, so overlaps stay legible.

Training canvases use only glyphs of the source's training split and test
canvases only test glyphs. Everything is drawn from ``numpy.random`` seeded
with ``seed`` and the split, so a set is the same on every machine.

A built set is cached as a ``.npz`` file (uint8 canvases and float32 boxes,
read back without pickle) under the folder downloads already use
(``~/.cache/kdistill/canvas/``); the file name holds a hash of the source
and of every option, so a changed option builds and caches a new set. The
file is written atomically, so an interrupted build never leaves a set that
looks complete.

Targets are one padded tensor per split, ``(N, max_objects, 5)`` rows of
``[class, x1, y1, x2, y2]`` with class ``-1`` for padding, so the training
loop's on-device slicing works unchanged. The splits are marked
``kind="detection"`` (``data.task == "detection"``).
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import zipfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from kdistill.data.datasets.digits import SEED, TEST_SIZE
from kdistill.data.datasets.mnist import FASHION_CLASSES
from kdistill.data.idx import read_idx_pair
from kdistill.data.prep import split_indices, standardize_images
from kdistill.data.sources import cache_root, idx_file, locate_idx
from kdistill.data.splits import DataSplits
from kdistill.errors import ConfigError
from kdistill.io import atomic_write_bytes
from kdistill.registry import register_dataset

log = logging.getLogger("kdistill")

#: bump when the drawing procedure changes, so old cached sets are never reused
GENERATOR_VERSION = 1
MAX_TRIES = 50
DIGIT_CLASSES = [str(i) for i in range(10)]


@dataclass(frozen=True)
class CanvasSpec:
    """How one canvas data set is drawn (every field is part of the cache key)."""

    canvas_size: int
    objects: tuple[int, int]
    scale: tuple[int, int]
    num_train: int
    num_test: int
    max_overlap: float
    seed: int

    @classmethod
    def checked(cls, name: str, canvas_size: Any, objects: Any, scale: Any, num_train: Any,
                num_test: Any, max_overlap: Any, seed: Any) -> CanvasSpec:
        """Validate the options a user wrote, naming the data set and the fix."""
        size = _int(name, "canvas_size", canvas_size, 8)
        lo_hi_objects = _range(name, "objects", objects, 1)
        lo_hi_scale = _range(name, "scale", scale, 2)
        if lo_hi_scale[1] > size:
            raise ConfigError(f"Dataset '{name}': scale {list(lo_hi_scale)} allows glyphs larger than the "
                              f"{size}x{size} canvas; use scale: [lo, hi] with hi <= canvas_size.")
        if isinstance(max_overlap, bool) or not isinstance(max_overlap, (int, float)) or not 0 <= max_overlap <= 1:
            raise ConfigError(f"Dataset '{name}': max_overlap must be an IoU in [0, 1], got {max_overlap!r}.")
        return cls(size, lo_hi_objects, lo_hi_scale, _int(name, "num_train", num_train, 1),
                   _int(name, "num_test", num_test, 1), float(max_overlap), _int(name, "seed", seed, 0))


def _int(name: str, key: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"Dataset '{name}': {key} must be an integer >= {minimum}, got {value!r}.")
    return value


def _range(name: str, key: str, value: Any, minimum: int) -> tuple[int, int]:
    ok = isinstance(value, Sequence) and not isinstance(value, str) and len(value) == 2
    if ok:
        lo, hi = value
        ok = all(isinstance(v, int) and not isinstance(v, bool) for v in (lo, hi)) and minimum <= lo <= hi
    if not ok:
        raise ConfigError(f"Dataset '{name}': {key} must be [lo, hi] with {minimum} <= lo <= hi (whole "
                          f"numbers), got {value!r}.")
    return int(value[0]), int(value[1])


def resize_glyph(glyph: np.ndarray, side: int) -> np.ndarray:
    """A float glyph in [0, 1] resized to ``side`` x ``side`` and rounded to uint8 grey levels."""
    x = torch.from_numpy(np.ascontiguousarray(glyph, dtype=np.float32))[None, None]
    y = F.interpolate(x, size=(side, side), mode="bilinear", align_corners=False, antialias=True)
    return (y[0, 0].clamp(0, 1) * 255).round().to(torch.uint8).numpy()


def tight_box(glyph: np.ndarray) -> tuple[int, int, int, int] | None:
    """``(x1, y1, x2, y2)`` around the non-zero pixels (``x2``/``y2`` one past the last), or ``None``."""
    rows, cols = np.nonzero(glyph.any(axis=1))[0], np.nonzero(glyph.any(axis=0))[0]
    if len(rows) == 0:
        return None
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


def _iou(a: tuple[int, ...], b: tuple[int, ...]) -> float:
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    inter = max(w, 0) * max(h, 0)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def draw_canvases(glyphs: np.ndarray, labels: np.ndarray, n: int, spec: CanvasSpec,
                  rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``n`` canvases ``(n, S, S)`` uint8 and targets ``(n, objects_hi, 5)`` float32 (class -1: padding)."""
    size = spec.canvas_size
    images = np.zeros((n, size, size), dtype=np.uint8)
    targets = np.full((n, spec.objects[1], 5), -1.0, dtype=np.float32)
    targets[..., 1:] = 0.0
    for i in range(n):
        count = int(rng.integers(spec.objects[0], spec.objects[1] + 1))
        boxes: list[tuple[int, int, int, int]] = []
        for _ in range(count):
            for _ in range(MAX_TRIES):
                k = int(rng.integers(len(glyphs)))
                side = int(rng.integers(spec.scale[0], spec.scale[1] + 1))
                x0 = int(rng.integers(0, size - side + 1))
                y0 = int(rng.integers(0, size - side + 1))
                glyph = resize_glyph(glyphs[k], side)
                box = tight_box(glyph)
                if box is None:
                    continue
                box = (box[0] + x0, box[1] + y0, box[2] + x0, box[3] + y0)
                if all(_iou(box, other) <= spec.max_overlap for other in boxes):
                    break
            else:
                continue  # no placement fits: this canvas gets one glyph fewer
            region = images[i, y0:y0 + side, x0:x0 + side]
            np.maximum(region, glyph, out=region)
            targets[i, len(boxes)] = (labels[k], *box)
            boxes.append(box)
    return images, targets


def _cache_path(source: str, spec: CanvasSpec) -> Path:
    key = json.dumps({"version": GENERATOR_VERSION, "source": source, **asdict(spec)}, sort_keys=True)
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    return cache_root() / "canvas" / f"{source}-{digest}.npz"


def _read_cache(path: Path) -> dict[str, np.ndarray] | None:
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as archive:
            return {key: archive[key] for key in ("x_train", "y_train", "x_test", "y_test")}
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as error:
        log.warning("cached canvas set %s is unreadable (%s); building it again", path, error)
        return None


def _write_cache(path: Path, arrays: dict[str, np.ndarray]) -> None:
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    atomic_write_bytes(path, buffer.getvalue())


def build_canvas_set(source: str, glyph_splits: Any, spec: CanvasSpec, *, cache: bool = True) -> dict[str, np.ndarray]:
    """The four arrays of a canvas set, from the cache or drawn now (and cached).

    ``glyph_splits`` is a callable returning ``(train_glyphs, train_labels,
    test_glyphs, test_labels)`` with float glyphs in [0, 1]; it is only
    called when the set is not cached.
    """
    path = _cache_path(source, spec)
    arrays = _read_cache(path) if cache else None
    if arrays is not None:
        return arrays
    g_train, l_train, g_test, l_test = glyph_splits()
    x_train, y_train = draw_canvases(g_train, l_train, spec.num_train, spec, np.random.default_rng([spec.seed, 0]))
    x_test, y_test = draw_canvases(g_test, l_test, spec.num_test, spec, np.random.default_rng([spec.seed, 1]))
    arrays = {"x_train": x_train, "y_train": y_train, "x_test": x_test, "y_test": y_test}
    if cache:
        _write_cache(path, arrays)
        log.info("canvas set %s built and cached in %s", source, path)
    return arrays


def to_splits(name: str, arrays: dict[str, np.ndarray], class_names: list[str], spec: CanvasSpec,
              normalize: bool) -> DataSplits:
    x_train = torch.from_numpy(arrays["x_train"]).unsqueeze(1).float().div_(255.0)
    x_test = torch.from_numpy(arrays["x_test"]).unsqueeze(1).float().div_(255.0)
    mean = std = None
    if normalize:
        x_train, x_test, mean, std = standardize_images(x_train, x_test)
    size = spec.canvas_size
    return DataSplits(name=name, x_train=x_train, y_train=torch.from_numpy(arrays["y_train"]), x_test=x_test,
                      y_test=torch.from_numpy(arrays["y_test"]), num_classes=len(class_names),
                      input_shape=(1, size, size), class_names=list(class_names), mean=mean, std=std,
                      kind="detection")


def _idx_glyphs(name: str, data_dir: str | Path | None, download: bool):
    def load():
        folder = locate_idx(name, data_dir, download)
        out = []
        for split in ("train", "test"):
            images, labels = read_idx_pair(idx_file(folder, f"{split}_images"), idx_file(folder, f"{split}_labels"),
                                           num_classes=10)
            out += [images.astype(np.float32) / 255.0, labels.astype(np.int64)]
        return tuple(out)
    return load


def _digits_glyphs():
    from sklearn.datasets import load_digits


    bunch = load_digits()
    images = (bunch.images / 16.0).astype(np.float32)
    labels = bunch.target.astype(np.int64)
    train, test = split_indices(labels, len(labels), TEST_SIZE / len(labels), SEED)
    return images[train], labels[train], images[test], labels[test]


def _idx_canvas(name: str, source: str, classes: list[str], data_dir, download, canvas_size, objects, scale,
                num_train, num_test, max_overlap, seed, normalize, cache) -> DataSplits:
    spec = CanvasSpec.checked(name, canvas_size, objects, scale, num_train, num_test, max_overlap, seed)
    arrays = build_canvas_set(source, _idx_glyphs(source, data_dir, download), spec, cache=cache)
    return to_splits(name, arrays, classes, spec, normalize)


@register_dataset("canvas-mnist")
def canvas_mnist(*, data_dir: str | Path | None = None, download: bool = True, canvas_size: int = 64,
                 objects: Sequence[int] = (1, 4), scale: Sequence[int] = (10, 40), num_train: int = 4000,
                 num_test: int = 1000, max_overlap: float = 0.3, seed: int = 0, normalize: bool = True,
                 cache: bool = True) -> DataSplits:
    """MNIST digits on ``canvas_size`` x ``canvas_size`` canvases, 10 classes, boxes per digit.

    Glyphs come from the MNIST IDX files (found like ``mnist``: ``data_dir``,
    ``$KDISTILL_DATA``, the cache, a download). See the module docstring for
    how canvases and boxes are drawn.
    """
    return _idx_canvas("canvas-mnist", "mnist", DIGIT_CLASSES, data_dir, download, canvas_size, objects, scale,
                       num_train, num_test, max_overlap, seed, normalize, cache)


@register_dataset("canvas-fashion-mnist")
def canvas_fashion_mnist(*, data_dir: str | Path | None = None, download: bool = True, canvas_size: int = 64,
                         objects: Sequence[int] = (1, 4), scale: Sequence[int] = (10, 40), num_train: int = 4000,
                         num_test: int = 1000, max_overlap: float = 0.3, seed: int = 0, normalize: bool = True,
                         cache: bool = True) -> DataSplits:
    """Fashion-MNIST garments on canvases, 10 classes; same drawing as ``canvas-mnist``."""
    return _idx_canvas("canvas-fashion-mnist", "fashion-mnist", FASHION_CLASSES, data_dir, download, canvas_size,
                       objects, scale, num_train, num_test, max_overlap, seed, normalize, cache)


@register_dataset("canvas-digits")
def canvas_digits(*, canvas_size: int = 32, objects: Sequence[int] = (1, 3), scale: Sequence[int] = (8, 16),
                  num_train: int = 600, num_test: int = 150, max_overlap: float = 0.3, seed: int = 0,
                  normalize: bool = True, cache: bool = True) -> DataSplits:
    """sklearn's bundled 8x8 digits on small canvases: no download, for tests and quick runs."""
    spec = CanvasSpec.checked("canvas-digits", canvas_size, objects, scale, num_train, num_test, max_overlap, seed)
    arrays = build_canvas_set("sklearn-digits", _digits_glyphs, spec, cache=cache)
    return to_splits("canvas-digits", arrays, DIGIT_CLASSES, spec, normalize)
