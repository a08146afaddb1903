"""Data sets read sample by sample: the streaming batch source beside the whole-tensor one.

The whole-tensor path (:class:`~kdistill.data.DataSplits`, :func:`~kdistill.data.iterate_batches`)
is the fastest for sets that fit on the training device. Larger sets, and any
map-style :class:`torch.utils.data.Dataset` (one that decodes files, applies
random transforms, ...), go through a :class:`~torch.utils.data.DataLoader`
instead: samples are read lazily in worker processes, one batch at a time.

Every training batch is ``(inputs, targets, indices)``: ``indices`` are the
samples' positions in the training set, so teacher caches and the per-sample
memory banks of methods such as CRD find their rows, also under shuffling and
with a :class:`~torch.utils.data.distributed.DistributedSampler` giving each
process its shard.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Subset, TensorDataset
from torch.utils.data.distributed import DistributedSampler

from kdistill.data.splits import DataSplits, SplitsInfo
from kdistill.errors import ConfigError, DataError
from kdistill.workers import worker_errors_in_words

#: what the run-start note about the data path is logged to (shown by the CLI without -v)
data_log = logging.getLogger("kdistill.data")

LOADER_MODES = ("auto", "memory", "stream")


class IndexedDataset(Dataset):
    """``(x, y, position)`` for the samples ``positions`` of a map-style data set yielding ``(x, y)``.

    ``position`` counts from 0 within this view, so a training view's indices
    run over ``0..len(view) - 1`` whatever the underlying set's order.
    """

    def __init__(self, dataset: Dataset, positions: Sequence[int] | None = None) -> None:
        self.dataset = dataset
        # one flat array, not a list of ints: a forked DataLoader worker reading a list's items writes their
        # reference counts and so copies its pages (see ImageFolderDataset)
        n = len(dataset)  # type: ignore[arg-type]
        self.positions = np.arange(n, dtype=np.int64) if positions is None else np.array(
            [int(p) for p in positions], dtype=np.int64)

    def __len__(self) -> int:
        return len(self.positions)

    def __getitem__(self, i: int) -> tuple[Any, Any, int]:
        position = int(self.positions[i])
        sample = self.dataset[position]
        if not isinstance(sample, tuple | list) or len(sample) < 2:
            raise DataError(f"Sample {position} of the {type(self.dataset).__name__} data set is a "
                            f"{type(sample).__name__}, not an (input, target) pair; a training data set "
                            "must return (x, y) from __getitem__.")
        return sample[0], sample[1], i


@dataclass
class StreamSplits(SplitsInfo):
    """A train/test split read sample by sample (the streaming counterpart of :class:`DataSplits`).

    ``train`` and ``test`` are map-style data sets whose items are ``(x, y)``:
    ``x`` a float tensor of ``input_shape``, ``y`` an int class id (or a float
    target when ``num_classes == 0``). The other fields mean what they mean
    on :class:`DataSplits`.
    """

    name: str
    train: Dataset
    test: Dataset
    num_classes: int
    input_shape: tuple[int, ...]
    class_names: list[str] | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    source: dict[str, Any] | None = field(default=None, repr=False, compare=False)
    kind: str | None = None

    def __post_init__(self) -> None:
        self.input_shape = tuple(int(d) for d in self.input_shape)

    @property
    def num_train(self) -> int:
        return len(self.train)  # type: ignore[arg-type]

    @property
    def num_test(self) -> int:
        return len(self.test)  # type: ignore[arg-type]

    def subset(self, n_train: int | None = None, n_test: int | None = None, *, seed: int = 0) -> StreamSplits:
        """A smaller view for quick runs: the seeded draw :meth:`DataSplits.subset` makes."""
        return dataclasses.replace(self, train=_draw(self.train, n_train, seed),
                                   test=_draw(self.test, n_test, seed + 1))

    def summary(self) -> str:
        """One line describing the splits, for logs."""
        classes = "regression" if self.num_classes == 0 else f"{self.num_classes} classes"
        return (f"{self.name}: {self.num_train} train / {self.num_test} test (streamed), "
                f"input {self.input_shape}, {classes}")


def _draw(dataset: Dataset, n: int | None, seed: int) -> Dataset:
    if n is None or n >= len(dataset):  # type: ignore[arg-type]
        return dataset
    if n < 1:
        raise DataError(f"subset: asked for {n} samples; need at least 1.")
    positions = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed))[:n]  # type: ignore[arg-type]
    return Subset(dataset, positions.sort().values.tolist())


def stream_from_tensors(data: DataSplits) -> StreamSplits:
    """The same splits, read through a DataLoader (``data.loader: stream`` for a set loaded whole)."""
    return StreamSplits(name=data.name, train=TensorDataset(data.x_train, data.y_train),
                        test=TensorDataset(data.x_test, data.y_test), num_classes=data.num_classes,
                        input_shape=data.input_shape, class_names=data.class_names, mean=data.mean,
                        std=data.std, source=data.source, kind=data.kind)


def check_loader_mode(mode: str) -> str:
    if mode not in LOADER_MODES:
        raise ConfigError(f"data.loader must be one of {', '.join(LOADER_MODES)}; got {mode!r}.")
    return mode


def comfortable_bytes(device: torch.device | None = None) -> int:
    """How much a whole-tensor data set may take and still fit comfortably: a quarter of the host's
    memory, and on a CUDA device also half of what is free there."""
    try:
        host = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):  # not every platform reports it
        host = 8 << 30
    budget = host // 4
    if device is not None and device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        budget = min(budget, free // 2)
    return int(budget)


def default_workers() -> int:
    """DataLoader worker processes when the config leaves them unset: up to 4, one core kept free."""
    return max(0, min(4, (os.cpu_count() or 1) - 1))


def split_positions(n: int, fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Training and validation positions, the same seeded permutation :func:`split_validation` uses."""
    n_val = int(round(n * fraction))
    if fraction <= 0 or n_val == 0:
        return list(range(n)), []
    if n_val >= n:
        raise ConfigError(f"val_fraction {fraction} leaves no training samples out of {n}.")
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
    return order[n_val:], order[:n_val]


class StreamBatches:
    """Shuffled training batches of ``(x, y, index)`` from a DataLoader, one shard per process.

    A :class:`DistributedSampler` (one replica outside ``torchrun``) draws the
    order from ``(seed, epoch)``, so every process agrees on it and a resumed
    run repeats it; each process reads ``ceil(batch_size / world_size)``
    samples per step from its own shard, padded to equal length, so DDP's
    gradient average is the mean over the global batch.
    """

    def __init__(self, dataset: IndexedDataset, batch_size: int, *, seed: int, rank: int = 0, world_size: int = 1,
                 workers: int = 0, pin_memory: bool = False) -> None:
        if len(dataset) == 0:
            raise DataError("The training set is empty.")
        self.dataset = dataset
        self.sampler = DistributedSampler(dataset, num_replicas=world_size, rank=rank, shuffle=True,
                                          seed=seed, drop_last=False)
        self.batch_size = max(1, math.ceil(batch_size / world_size))
        self.loader = DataLoader(dataset, batch_size=self.batch_size, sampler=self.sampler, num_workers=workers,
                                 pin_memory=pin_memory, persistent_workers=workers > 0,
                                 prefetch_factor=4 if workers > 0 else None)

    @property
    def samples_per_epoch(self) -> int:
        """Samples this process reads per epoch (its shard, padded)."""
        return len(self.sampler)

    def __len__(self) -> int:
        return len(self.loader)

    def epoch(self, epoch: int, device: torch.device) -> Iterator[tuple[Tensor, Tensor, Tensor]]:
        self.sampler.set_epoch(epoch)
        for batch in worker_errors_in_words(self.loader):
            yield to_device(batch, device)


def to_device(batch: Sequence[Any], device: torch.device) -> tuple[Tensor, Tensor, Tensor | None]:
    """``(x, y[, index])`` from a DataLoader on ``device``: float64 inputs become float32, Python-float
    targets float32, and a batch without indices gets ``None`` (no teacher cache, no per-sample state)."""
    if not isinstance(batch, tuple | list) or len(batch) not in (2, 3):
        raise DataError(f"A training batch must be (inputs, targets) or (inputs, targets, indices); got "
                        f"{type(batch).__name__}{f' of {len(batch)}' if isinstance(batch, tuple | list) else ''}.")
    x, y = batch[0], batch[1]
    idx = batch[2] if len(batch) == 3 else None
    if not isinstance(x, Tensor) or not isinstance(y, Tensor):
        raise DataError(f"A training batch holds {type(x).__name__} inputs and {type(y).__name__} targets; "
                        "the data set must return tensors (or numbers) that the DataLoader can stack.")
    if x.dtype == torch.float64:
        x = x.float()
    if y.dtype == torch.float64:
        y = y.float()
    non_blocking = device.type == "cuda"
    x, y = x.to(device, non_blocking=non_blocking), y.to(device, non_blocking=non_blocking)
    return x, y, (idx.to(device, non_blocking=non_blocking) if idx is not None else None)


def evaluation_batch_size(train_batch_size: int) -> int:
    """How many samples validation, the teacher cache and the test evaluation read at a time: the training
    batch size, at least 256 (no gradients are kept, so this needs no more memory than a training step)."""
    return max(int(train_batch_size), 256)


def eval_loader(dataset: Dataset, batch_size: int = 512, workers: int = 0) -> DataLoader:
    """The samples of ``dataset`` in order, for evaluation and for building a teacher cache."""
    return DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=workers)


def first_inputs(dataset: Dataset, n: int = 2) -> Tensor:
    """The first ``n`` inputs stacked into a batch (what objectives check shapes and set up adapters on)."""
    samples = [dataset[i] for i in range(min(n, len(dataset)))]  # type: ignore[arg-type]
    if not samples:
        raise DataError("The training set is empty.")
    x = torch.stack([torch.as_tensor(s[0]) for s in samples])
    return x.float() if x.dtype == torch.float64 else x
