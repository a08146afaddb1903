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
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch import Tensor, nn

from kdistill.errors import OutputError
from kdistill.io import ensure_writable_dir
from kdistill.methods.hooks import FeatureHooks

Storage = Literal["device", "memmap"]


class TeacherCache:
    """Teacher logits and hooked features for every training sample, looked up by index."""

    def __init__(self, logits: Tensor | np.ndarray, features: dict[str, Tensor | np.ndarray],
                 device: torch.device, directory: Path | None = None) -> None:
        self.logits = logits
        self.features = features
        self.device = torch.device(device)
        self.directory = directory  # memmap files live here (None for device storage)

    @property
    def storage(self) -> Storage:
        return "device" if isinstance(self.logits, Tensor) else "memmap"

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
                                      directory=directory)

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
    ) -> TeacherCache:
        """:meth:`build` from ``(inputs, rows)`` batches covering the ``n`` training samples.

        ``rows`` (sample indices, or a slice) say where each batch's outputs go,
        so a set streamed from disk is cached by sample index without ever
        being held whole.
        """
        if storage not in ("device", "memmap"):
            raise ValueError(f"storage must be 'device' or 'memmap', got {storage!r}")
        folder = None
        if storage == "memmap":
            folder = Path(directory) if directory is not None else Path(tempfile.mkdtemp(prefix="kdistill-cache-"))

            ensure_writable_dir(folder, "teacher cache folder")
        store: dict[str, Tensor | np.ndarray] = {}

        def put(name: str, rows: Tensor | slice, value: Tensor) -> None:
            value = value.detach().float()
            if name not in store:
                shape = (n, *value.shape[1:])
                if folder is None:
                    store[name] = torch.empty(shape, dtype=torch.float32, device=device)
                else:
                    file = folder / f"{name.replace(':', '-')}.npy"
                    _check_free_space(folder, 4 * int(np.prod(shape)))
                    store[name] = np.lib.format.open_memmap(file, mode="w+",
                                                            dtype=np.float32, shape=shape)
            target = store[name]
            if isinstance(target, Tensor):
                target[rows if isinstance(rows, slice) else rows.to(target.device)] = value
            else:
                target[rows if isinstance(rows, slice) else rows.cpu().numpy()] = value.cpu().numpy()

        if hooks is not None:
            hooks.pop()  # drop anything captured before the cache was built
        for inputs, rows in batches:
            put("logits", rows, teacher(inputs))
            for name, value in (hooks.pop() if hooks is not None else {}).items():
                put(f"feature:{name}", rows, value)
        for value in store.values():
            if isinstance(value, np.memmap):
                value.flush()
        if "logits" not in store:
            raise ValueError("the teacher cache got no batches")
        logits = store.pop("logits")
        features = {k.removeprefix("feature:"): v for k, v in store.items()}
        return cls(logits, features, device, folder)

    def lookup(self, indices: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """Cached ``(logits, features)`` for the training-set positions ``indices``."""
        if self.storage == "device":
            idx = indices.to(self.device)
            return self.logits[idx], {k: v[idx] for k, v in self.features.items()}  # type: ignore[index]
        rows = indices.cpu().numpy()

        def read(array: np.ndarray) -> Tensor:
            return torch.from_numpy(np.ascontiguousarray(array[rows])).to(self.device, non_blocking=True)

        return read(self.logits), {k: read(v) for k, v in self.features.items()}  # type: ignore[arg-type]


def _check_free_space(folder: Path, needed: int) -> None:
    """A memory-mapped file on a full disk fails with SIGBUS, not an error: check before mapping."""

    free = shutil.disk_usage(folder).free
    if needed > free:
        raise OutputError(f"Cannot write the teacher cache in '{folder}': it needs {needed / 2**20:,.0f} MiB "
                          f"but the disk has {free / 2**20:,.0f} MiB free; free some space, or use "
                          "distill.cache: device (or off).", path=folder)
