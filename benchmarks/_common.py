"""What the benchmark scripts share: where the data is, what the device is, how results reach the docs."""

from __future__ import annotations

import os
import platform
from pathlib import Path

import torch

from kdistill.train.checkpoint import atomic_write_text

ROOT = Path(__file__).resolve().parents[1]


def data_dir() -> Path:
    """$KDISTILL_DATA, else shared/data beside the checkout (or beside the folder holding it)."""
    if os.environ.get("KDISTILL_DATA"):
        return Path(os.environ["KDISTILL_DATA"])
    candidates = [ROOT / "../shared/data", ROOT / "../../shared/data"]
    return next((c.resolve() for c in candidates if c.is_dir()), candidates[0])


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"CUDA: {torch.cuda.get_device_name(device)}"
    model = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"CPU: {os.cpu_count()} cores, {model}, {torch.get_num_threads()} torch thread(s)"


def write_section(path: Path, section: str, start: str, end: str) -> None:
    """Replace the text between the ``start`` and ``end`` markers of ``path`` (or append it), atomically."""
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    block = f"{start}\n{section}\n{end}"
    if start in text and end in text:
        text = text[: text.index(start)] + block + text[text.index(end) + len(end):]
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    atomic_write_text(path, text)
