"""Numeric precision on the training device: autocast, the fp16 gradient scaler, and TF32."""

from __future__ import annotations

import contextlib

import torch

from kdistill.errors import ConfigError


def autocast_context(device: torch.device, amp: str) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA for ``amp`` auto/bf16, on any device for ``bf16``; fp16 autocast on CUDA for
    ``fp16``; else no change."""
    if amp == "off":
        return contextlib.nullcontext()
    if device.type == "cuda" and amp == "fp16":
        return torch.autocast("cuda", dtype=torch.float16)
    if device.type == "cuda" and amp in {"auto", "bf16"}:
        return torch.autocast("cuda", dtype=torch.bfloat16)
    if amp == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def grad_scaler(device: torch.device, amp: str) -> torch.amp.GradScaler | None:
    """The gradient scaler fp16 training needs (its gradients underflow without one); ``None`` otherwise.

    fp16 autocast is a CUDA feature here: bf16, with fp32's exponent range,
    needs no scaler and is what ``auto`` uses.
    """
    if amp != "fp16":
        return None
    if device.type != "cuda":
        raise ConfigError(f"train.amp: fp16 needs a CUDA device, but this run trains on {device.type}; "
                          "use amp: bf16 (or auto, or off) there.")
    return torch.amp.GradScaler("cuda")


def enable_tf32(device: torch.device) -> None:
    """TF32 tensor-core matmuls and convolutions on CUDA (10-bit mantissa inputs, fp32 accumulate)."""
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
