"""Numeric precision on the training device: autocast and TF32."""

from __future__ import annotations

import contextlib

import torch


def autocast_context(device: torch.device, amp: str) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA for ``amp`` auto/bf16, on any device for ``bf16``; else no change."""
    if amp == "off":
        return contextlib.nullcontext()
    if device.type == "cuda" and amp in {"auto", "bf16"}:
        return torch.autocast("cuda", dtype=torch.bfloat16)
    if amp == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def enable_tf32(device: torch.device) -> None:
    """TF32 tensor-core matmuls and convolutions on CUDA (10-bit mantissa inputs, fp32 accumulate)."""
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
