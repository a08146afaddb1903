"""What a model costs: parameters, bytes on disk and CPU latency."""

from __future__ import annotations

import copy
import statistics
import time
from collections.abc import Sequence

import torch
from safetensors.torch import save
from torch import Tensor, nn


def parameter_count(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters; shared (tied) parameters are counted once."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def size_on_disk(model: nn.Module) -> int:
    """Bytes of the model's state dict written as a safetensors file.

    This is what a deployed student costs to ship: every parameter and buffer
    (BatchNorm statistics included) plus the JSON header. Tensors that share
    storage (tied weights) are written once, as ``torch.save`` would.
    """
    tensors: dict[str, Tensor] = {}
    seen: set[tuple] = set()
    for name, tensor in model.state_dict().items():
        t = tensor.detach()
        key = (t.device, t.untyped_storage().data_ptr(), t.storage_offset(), t.shape, t.stride())
        if t.numel() > 0 and key in seen:
            continue
        seen.add(key)
        # save_file refuses views into shared storage; a contiguous CPU clone owns its data.
        tensors[name] = t.to("cpu", copy=True).contiguous()
    # the bytes safetensors would write, counted in memory: measuring needs no writable disk
    return len(save(tensors))


def cpu_latency(
    model: nn.Module,
    input_shape: Sequence[int],
    batch_size: int = 1,
    warmup: int = 5,
    repeats: int = 30,
    threads: int | None = None,
) -> dict[str, float]:
    """Median wall-clock time of one forward pass on the CPU.

    Runs on a CPU deep copy in eval mode under ``inference_mode``, so the
    caller's model keeps its device and mode. ``threads`` pins
    ``torch.set_num_threads`` for the measurement (restored afterwards); the
    median resists the outliers that a shared machine produces.

    Returns ``ms_per_batch``, ``ms_per_sample`` and ``samples_per_s``.
    """
    if batch_size <= 0 or repeats <= 0 or warmup < 0:
        raise ValueError("batch_size and repeats must be positive and warmup non-negative")
    if threads is not None and threads <= 0:
        raise ValueError(f"threads must be positive, got {threads}")
    cpu_model = copy.deepcopy(model).to("cpu").eval()
    # models whose input is not a float tensor (token ids) say what a valid input looks like
    make_input = getattr(cpu_model, "example_input", None)
    x = make_input(batch_size) if callable(make_input) else torch.randn(batch_size, *input_shape)
    old_threads = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        with torch.inference_mode():
            for _ in range(warmup):
                cpu_model(x)
            times = []
            for _ in range(repeats):
                start = time.perf_counter()
                cpu_model(x)
                times.append(time.perf_counter() - start)
    finally:
        torch.set_num_threads(old_threads)
    ms = statistics.median(times) * 1000.0
    return {
        "ms_per_batch": ms,
        "ms_per_sample": ms / batch_size,
        "samples_per_s": batch_size / (ms / 1000.0) if ms > 0 else float("inf"),
    }


def format_bytes(n: int | float) -> str:
    """Human-readable size in binary units: ``512 B``, ``4.0 KiB``, ``1.2 MiB``."""
    if n < 0:
        raise ValueError(f"size cannot be negative, got {n}")
    if n < 1024:
        return f"{int(n)} B"
    value = float(n)
    for unit in ("KiB", "MiB", "GiB", "TiB"):
        value /= 1024.0
        if value < 1024 or unit == "TiB":
            break
    return f"{value:.1f} {unit}"
