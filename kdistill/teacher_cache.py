"""Teacher outputs computed once for the whole transfer set.

A frozen teacher in eval mode maps the same un-augmented sample to the same
logits (and hooked features) in every epoch, so distillation can run the
teacher once, keep its outputs indexed by training-set position, and skip the
teacher forward pass in the loop: a step then costs what ordinary training
costs. With augmentation the inputs change every step and the cache would be
wrong, so the training loop runs the teacher live instead.

Two storages:

* ``device``: tensors on the training device; a lookup is one gather, with no
  host synchronisation.
* ``memmap``: ``numpy.memmap`` files on disk, for feature maps too large for
  the device; a lookup reads the rows for one batch (the indices go to the
  host) and copies them to the device.

With many classes the logits dominate the cache (``n * C`` floats); ``top_k``
keeps only the ``K`` largest logits of each sample and their class indices
(``n * K`` of each). A lookup rebuilds full logits whose other classes lie
:data:`TRUNCATION_GAP` below the smallest kept one, so any softmax of them, at
any temperature used in practice, is the teacher's softmax renormalised over
its top ``K`` classes. What that costs is measured while the cache is built,
against the full softmax of every cached sample (:attr:`TeacherCache.truncation`):
with ``S`` the probability mass of the kept classes, the renormalised ``q``
is ``p / S`` on them, so ``TV(p, q) = 1 - S`` and ``KL(q || p) = -log S``
(``KL(p || q)`` is infinite: ``q`` is 0 where ``p`` is not).
"""

from __future__ import annotations

import math
import shutil
import tempfile
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor, nn

from kdistill.errors import ConfigError, OutputError
from kdistill.io import ensure_writable_dir
from kdistill.methods.hooks import FeatureHooks

Storage = Literal["device", "memmap"]
#: a teacher's batch outputs and hooked features as (logits, named tensors): see kdistill.task.Task.flatten
Flatten = Callable[[Any, dict[str, Any]], tuple[Tensor, dict[str, Tensor]]]

#: how far below a sample's smallest kept logit the dropped classes are put by a top-k cache:
#: exp(-1e4 / T) is below float32's smallest number for any temperature up to 100
TRUNCATION_GAP = 1e4


class TeacherCache:
    """Teacher logits and hooked features for every training sample, looked up by index."""

    def __init__(self, logits: Tensor | np.ndarray, features: dict[str, Tensor | np.ndarray],
                 device: torch.device, directory: Path | None = None, *,
                 top_k_classes: Tensor | np.ndarray | None = None, num_classes: int | None = None,
                 truncation: dict[float, dict[str, float]] | None = None) -> None:
        # with top_k_classes, ``logits`` holds each sample's K largest logits and these their classes
        self.logits = logits
        self.features = features
        self.device = torch.device(device)
        self.directory = directory  # memmap files live here (None for device storage)
        self.top_k_classes = top_k_classes
        self.num_classes = num_classes
        #: top-k only: per temperature, the mean KL(q || p) and the mean and largest TV(p, q) between the
        #: full softmax p and the renormalised top-k softmax q over the cached samples
        self.truncation = truncation or {}

    @property
    def storage(self) -> Storage:
        return "device" if isinstance(self.logits, Tensor) else "memmap"

    @property
    def top_k(self) -> int | None:
        """K for a cache of each sample's K largest logits, ``None`` for full logits."""
        return None if self.top_k_classes is None else int(self.top_k_classes.shape[1])

    def __len__(self) -> int:
        return len(self.logits)

    @classmethod
    @torch.no_grad()
    def build(
        cls,
        teacher: nn.Module,
        inputs: Tensor,
        hooks: FeatureHooks | None = None,
        *,
        batch_size: int = 1024,
        storage: Storage = "device",
        directory: str | Path | None = None,
        top_k: int | None = None,
        temperatures: Sequence[float] = (1.0,),
        flatten: Flatten | None = None,
    ) -> TeacherCache:
        """Run ``teacher`` over ``inputs`` in chunks and store its outputs in float32.

        For ``memmap`` the files go to ``directory`` (a fresh temporary folder
        when it is ``None``); they are plain float32 arrays named after the
        output (``logits.npy``, ``feature-features.0.npy``, ...).
        """
        n = len(inputs)
        chunks = ((inputs[start:start + batch_size], slice(start, min(start + batch_size, n)))
                  for start in range(0, n, batch_size))
        return cls.build_from_batches(teacher, chunks, n, hooks, device=inputs.device, storage=storage,
                                      directory=directory, top_k=top_k, temperatures=temperatures, flatten=flatten)

    @classmethod
    @torch.no_grad()
    def build_from_batches(
        cls,
        teacher: nn.Module,
        batches: Iterable[tuple[Tensor, Tensor | slice]],
        n: int,
        hooks: FeatureHooks | None = None,
        *,
        device: torch.device,
        storage: Storage = "device",
        directory: str | Path | None = None,
        top_k: int | None = None,
        temperatures: Sequence[float] = (1.0,),
        flatten: Flatten | None = None,
    ) -> TeacherCache:
        """:meth:`build` from ``(inputs, rows)`` batches covering the ``n`` training samples.

        ``rows`` (sample indices, or a slice) say where each batch's outputs go,
        so a set streamed from disk is cached by sample index without ever
        being held whole. ``top_k`` keeps each sample's K largest logits only,
        and measures the truncation at each of ``temperatures``. ``flatten(outputs,
        features)`` turns a teacher whose outputs are not one tensor (a detector's)
        into ``(logits, named tensors)`` (:meth:`kdistill.task.Task.flatten`).
        """
        if storage not in ("device", "memmap"):
            raise ValueError(f"storage must be 'device' or 'memmap', got {storage!r}")
        if top_k is not None and top_k < 1:
            raise ValueError(f"top_k must be a whole number >= 1, got {top_k}")
        folder = None
        if storage == "memmap":
            folder = Path(directory) if directory is not None else Path(tempfile.mkdtemp(prefix="kdistill-cache-"))

            ensure_writable_dir(folder, "teacher cache folder")
        store: dict[str, Tensor | np.ndarray] = {}

        def put(name: str, rows: Tensor | slice, value: Tensor) -> None:
            value = value.detach() if value.dtype == torch.int64 else value.detach().float()
            if name not in store:
                shape = (n, *value.shape[1:])
                if folder is None:
                    store[name] = torch.empty(shape, dtype=value.dtype, device=device)
                else:
                    file = folder / f"{name.replace(':', '-')}.npy"
                    _check_free_space(folder, value.element_size() * int(np.prod(shape)))
                    store[name] = np.lib.format.open_memmap(
                        file, mode="w+", dtype=np.int64 if value.dtype == torch.int64 else np.float32, shape=shape)
            target = store[name]
            if isinstance(target, Tensor):
                target[rows if isinstance(rows, slice) else rows.to(target.device)] = value
            else:
                target[rows if isinstance(rows, slice) else rows.cpu().numpy()] = value.cpu().numpy()

        if hooks is not None:
            hooks.pop()  # drop anything captured before the cache was built
        truncation = _TruncationError(temperatures) if top_k is not None else None
        num_classes = None
        for inputs, rows in batches:
            outputs = teacher(inputs)
            features = hooks.pop() if hooks is not None else {}
            logits, features = flatten(outputs, features) if flatten is not None else (outputs, features)
            if truncation is not None and top_k is not None:
                num_classes = logits.shape[-1]
                if logits.dim() != 2 or top_k >= num_classes:
                    raise ConfigError(f"distill.cache_top_k: {top_k} keeps the {top_k} largest logits of each "
                                      f"sample, so the teacher must give (N, C) logits with more than {top_k} "
                                      f"classes; it gives shape {tuple(logits.shape)}. Lower cache_top_k or "
                                      "remove it.")
                values, classes = logits.float().topk(top_k, dim=-1)
                truncation.add(logits, classes)
                put("logits", rows, values)
                put("top_k_classes", rows, classes)
            else:
                put("logits", rows, logits)
            for name, value in features.items():
                put(f"feature:{name}", rows, value)
        for value in store.values():
            if isinstance(value, np.memmap):
                value.flush()
        if "logits" not in store:
            raise ValueError("the teacher cache got no batches")
        logits = store.pop("logits")
        classes = store.pop("top_k_classes", None)
        features = {k.removeprefix("feature:"): v for k, v in store.items()}
        return cls(logits, features, device, folder, top_k_classes=classes, num_classes=num_classes,
                   truncation=truncation.summary() if truncation is not None else None)

    def lookup(self, indices: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """Cached ``(logits, features)`` for the training-set positions ``indices``."""
        if self.storage == "device":
            idx = indices.to(self.device)
            logits, features = self.logits[idx], {k: v[idx] for k, v in self.features.items()}  # type: ignore[index]
            classes = self.top_k_classes[idx] if self.top_k_classes is not None else None  # type: ignore[index]
        else:
            rows = indices.cpu().numpy()

            def read(array: np.ndarray) -> Tensor:
                return torch.from_numpy(np.ascontiguousarray(array[rows])).to(self.device, non_blocking=True)

            logits, features = read(self.logits), {k: read(v) for k, v in self.features.items()}  # type: ignore[arg-type]
            classes = read(self.top_k_classes) if self.top_k_classes is not None else None  # type: ignore[arg-type]
        if classes is None or self.num_classes is None:
            return logits, features
        floor = logits.min(dim=-1, keepdim=True).values - TRUNCATION_GAP
        full = floor.expand(len(logits), self.num_classes).clone()
        return full.scatter_(-1, classes, logits), features


class _TruncationError:
    """Running sums of what keeping the top-k logits costs against the full softmax, per temperature."""

    def __init__(self, temperatures: Sequence[float]) -> None:
        self.temperatures = sorted({float(t) for t in temperatures})
        self.count = 0
        self.kl = dict.fromkeys(self.temperatures, 0.0)
        self.tv = dict.fromkeys(self.temperatures, 0.0)
        self.tv_max = dict.fromkeys(self.temperatures, 0.0)

    def add(self, logits: Tensor, classes: Tensor) -> None:
        self.count += len(logits)
        for t in self.temperatures:
            # the mass the kept classes have under the full softmax at temperature t
            kept = torch.softmax(logits.double() / t, dim=-1).gather(-1, classes).sum(-1).clamp(0.0, 1.0)
            self.kl[t] += float(-torch.log(kept.clamp_min(1e-300)).sum())
            self.tv[t] += float((1.0 - kept).sum())
            self.tv_max[t] = max(self.tv_max[t], float((1.0 - kept).max())) if len(kept) else self.tv_max[t]

    def summary(self) -> dict[float, dict[str, float]]:
        n = max(self.count, 1)
        return {t: {"mean_kl": self.kl[t] / n, "mean_tv": self.tv[t] / n, "max_tv": self.tv_max[t]}
                for t in self.temperatures if math.isfinite(t)}


def _check_free_space(folder: Path, needed: int) -> None:
    """A memory-mapped file on a full disk fails with SIGBUS, not an error: check before mapping."""

    free = shutil.disk_usage(folder).free
    if needed > free:
        raise OutputError(f"Cannot write the teacher cache in '{folder}': it needs {needed / 2**20:,.0f} MiB "
                          f"but the disk has {free / 2**20:,.0f} MiB free; free some space, or use "
                          "distill.cache: device (or off).", path=folder)
