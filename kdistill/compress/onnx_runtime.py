"""A model as ONNX bytes, and an ONNX Runtime session to run them: what export, int8 quantization and
the study's latency measurements share (:mod:`kdistill.compress.export` re-exports both).

The TorchScript-based exporter's deprecation notice is silenced here, where
it is issued (see :mod:`kdistill.compress.export` for why that exporter).
"""

from __future__ import annotations

import contextlib
import io
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from kdistill.errors import ConfigError, ModelError

__all__ = ["onnx_bytes", "ort_session"]


def onnx_bytes(model: nn.Module, input_shape: Sequence[int]) -> bytes:
    """ONNX (opset 17) with a dynamic batch axis; input ``input``, output ``logits``.

    A model that already is an ONNX graph (an int8 :class:`~kdistill.compress.quantize.QuantizedModel`)
    gives its own bytes.
    """
    if isinstance(getattr(model, "onnx_model", None), bytes):
        return model.onnx_model  # type: ignore[return-value]
    model = model.to("cpu").eval()
    example = torch.randn(2, *input_shape)
    buffer = io.BytesIO()
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        try:
            torch.onnx.export(model, (example,), buffer, dynamo=False, opset_version=17,
                              input_names=["input"], output_names=["logits"],
                              dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})
        except Exception as error:  # the exporter raises many error types
            raise ModelError(f"ONNX export of {type(model).__name__} failed: {error}") from None
    return buffer.getvalue()


def ort_session(onnx_model: bytes | str | Path, threads: int = 1) -> Any:
    """An ONNX Runtime CPU session with ``threads`` intra-op threads."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise ConfigError("ONNX Runtime is not installed: pip install 'kdistill[deploy]'.") from None
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    source = onnx_model if isinstance(onnx_model, bytes) else str(onnx_model)
    return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])
