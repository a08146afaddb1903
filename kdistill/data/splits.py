"""The in-memory train/test split every loader returns."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from kdistill.errors import DataError


class SplitsInfo:
    """What every train/test split says about itself, whether held as tensors or read sample by sample."""

    num_classes: int
    kind: str | None
    mean: tuple[float, ...] | None
    std: tuple[float, ...] | None

    @property
    def task(self) -> str:
        """``kind`` when declared, else ``"classification"`` or ``"regression"`` (``num_classes == 0``)."""
        if self.kind is not None:
            return self.kind
        return "regression" if self.num_classes == 0 else "classification"

    @property
    def fill_value(self) -> float | tuple[float, ...]:
        """What a raw 0 (black) pixel became after standardisation, per channel.

        Pass it as ``fill`` to :func:`kdistill.data.jitter` so shifted-in
        borders match the image background.
        """
        if self.mean is None or self.std is None:
            return 0.0
        values = tuple(-m / s for m, s in zip(self.mean, self.std, strict=True))
        return values[0] if len(values) == 1 else values


@dataclass
class DataSplits(SplitsInfo):
    """A whole data set as tensors, small enough to live on the training device.

    ``x_*`` are float32 (float64 given here is converted), ``(N, C, H, W)`` for
    images and ``(N, F)`` for tables.
    ``y_*`` hold int64 class ids, or float32 targets when ``num_classes == 0``
    (regression). ``input_shape`` is the shape of one sample.

    ``mean`` / ``std`` record the statistics the loader subtracted and divided
    by: one per channel for images (whose 8-bit pixels loaders first scale to
    [0, 1]), one per column for tables (the scaler's mean and scale); ``None``
    when the inputs were not standardised. :attr:`fill_value` uses an image's
    so augmentation can pad with the true background colour instead of a
    standardised zero. ``class_names`` and, for tables, ``feature_names`` (the
    columns in input order) name what the model reads and predicts; together
    with these statistics they make the input spec that checkpoints and
    exported models carry (:mod:`kdistill.data.input_spec`).

    ``source`` records how the data was loaded (data set name, loader options
    with absolute paths, ``data_dir``) when it came from a config's ``data``
    section; checkpoints store it so ``kdistill evaluate`` can reload the test
    split. ``None`` for data built any other way.

    ``kind`` declares a task that the targets' type cannot show, e.g.
    ``"detection"`` for padded box targets (see :mod:`kdistill.detection.data`);
    ``None`` infers classification or regression.
    """

    name: str
    x_train: Tensor
    y_train: Tensor
    x_test: Tensor
    y_test: Tensor
    num_classes: int
    input_shape: tuple[int, ...]
    class_names: list[str] | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    feature_names: list[str] | None = None
    source: dict[str, Any] | None = dataclasses.field(default=None, repr=False, compare=False)
    kind: str | None = None

    def __post_init__(self) -> None:
        self.input_shape = tuple(int(d) for d in self.input_shape)
        # float64 inputs (NumPy's default) would meet float32 weights in the first layer: train in float32
        self.x_train, self.x_test = (x.float() if x.dtype == torch.float64 else x for x in (self.x_train, self.x_test))
        self.y_train, self.y_test = (y.float() if y.dtype == torch.float64 else y for y in (self.y_train, self.y_test))
        for split, x, y in (
            ("train", self.x_train, self.y_train),
            ("test", self.x_test, self.y_test),
        ):
            if len(x) != len(y):
                raise DataError(
                    f"Data set '{self.name}': the {split} split has {len(x)} inputs "
                    f"but {len(y)} targets."
                )
            if tuple(x.shape[1:]) != self.input_shape:
                raise DataError(
                    f"Data set '{self.name}': {split} inputs have sample shape "
                    f"{tuple(x.shape[1:])}, expected {self.input_shape}."
                )

    @property
    def num_train(self) -> int:
        return len(self.x_train)

    @property
    def num_test(self) -> int:
        return len(self.x_test)

    @property
    def device(self) -> torch.device:
        return self.x_train.device

    def to(self, device: torch.device | str) -> DataSplits:
        """A copy with all four tensors on ``device`` (no copy if already there)."""
        return dataclasses.replace(
            self,
            x_train=self.x_train.to(device),
            y_train=self.y_train.to(device),
            x_test=self.x_test.to(device),
            y_test=self.y_test.to(device),
        )

    def subset(
        self, n_train: int | None = None, n_test: int | None = None, *, seed: int = 0
    ) -> DataSplits:
        """A smaller copy for quick runs: a seeded random draw of each split.

        ``None`` (or a number at least the split's size) keeps a split whole.
        The same seed always picks the same samples, on any device.
        """
        return dataclasses.replace(
            self,
            **_draw("train", self.x_train, self.y_train, n_train, seed),
            **_draw("test", self.x_test, self.y_test, n_test, seed + 1),
        )

    def summary(self) -> str:
        """One line describing the splits, for logs."""
        classes = "regression" if self.num_classes == 0 else f"{self.num_classes} classes"
        return (
            f"{self.name}: {self.num_train} train / {self.num_test} test, "
            f"input {self.input_shape}, {classes}"
        )


def _draw(split: str, x: Tensor, y: Tensor, n: int | None, seed: int) -> dict[str, Tensor]:
    if n is None or n >= len(x):
        return {f"x_{split}": x, f"y_{split}": y}
    if n < 1:
        raise DataError(f"subset: asked for {n} {split} samples; need at least 1.")
    # A CPU generator makes the draw identical whatever device the data is on.
    gen = torch.Generator().manual_seed(seed)
    idx = torch.randperm(len(x), generator=gen)[:n].sort().values.to(x.device)
    return {f"x_{split}": x[idx], f"y_{split}": y[idx]}
