"""Export a trained student for deployment: ONNX, TorchScript or bare safetensors.

:func:`export_model` reads a kdistill checkpoint, keeps only the student
(``model.*`` tensors: distillation adapters, optimiser and RNG state are
dropped), writes the requested format and checks that the exported model's
outputs match PyTorch's on random inputs within ``atol``.
"""

from __future__ import annotations

import contextlib
import io
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from kdistill.errors import ConfigError, ModelError
from kdistill.train.checkpoint import atomic_write_bytes

FORMATS = ("onnx", "torchscript", "safetensors")
SUFFIX = {"onnx": ".onnx", "torchscript": ".pt", "safetensors": ".safetensors"}


@dataclass
class ExportResult:
    path: Path
    format: str
    size_bytes: int
    max_abs_diff: float | None


def onnx_bytes(model: nn.Module, input_shape: Sequence[int]) -> bytes:
    """ONNX (opset 17) with a dynamic batch axis; input ``input``, output ``logits``."""
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


@torch.no_grad()
def onnx_max_diff(model: nn.Module, onnx_model: bytes | str | Path, input_shape: Sequence[int],
                  n: int = 16, seed: int = 0) -> float:
    """Largest absolute difference between PyTorch's and ONNX Runtime's logits."""
    x = torch.randn(n, *input_shape, generator=torch.Generator().manual_seed(seed))
    expected = model.to("cpu").eval()(x).numpy()
    got = ort_session(onnx_model).run(None, {"input": x.numpy()})[0]
    return float(np.abs(expected - got).max())


def export_model(checkpoint: str | Path, fmt: str, out: str | Path | None = None,
                 *, atol: float = 1e-4) -> ExportResult:
    """Export the student in ``checkpoint`` as ``fmt`` (onnx, torchscript or safetensors).

    ``out`` defaults to the checkpoint's name with the format's suffix. The
    ONNX and TorchScript files are checked against PyTorch; a difference above
    ``atol`` raises :class:`ModelError`.
    """
    from kdistill.compress.artifact import save_dense
    from kdistill.experiment import load_model

    if fmt not in FORMATS:
        raise ConfigError(f"Unknown export format '{fmt}'; choose one of {', '.join(FORMATS)}.")
    model, meta = load_model(checkpoint)
    spec = meta["model_spec"]
    shape = tuple(spec["input_shape"])
    src = Path(checkpoint)
    path = Path(out) if out is not None else src.with_name(src.stem + "-export" + SUFFIX[fmt])
    diff: float | None = None
    if fmt == "onnx":
        data = onnx_bytes(model, shape)
        atomic_write_bytes(path, data)
        diff = onnx_max_diff(model, path, shape)
    elif fmt == "torchscript":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            scripted = torch.jit.trace(model, torch.randn(2, *shape))
            buffer = io.BytesIO()
            torch.jit.save(scripted, buffer)
        atomic_write_bytes(path, buffer.getvalue())
        x = torch.randn(8, *shape)
        with torch.no_grad():
            diff = float((torch.jit.load(str(path))(x) - model(x)).abs().max())
    else:
        save_dense(model, path, {"role": "export", "model_spec": spec})
    if diff is not None and diff > atol:
        raise ModelError(f"The {fmt} export differs from PyTorch by {diff:.2e} (> {atol:g}); "
                         f"the file was written to '{path}' but should not be trusted.")
    return ExportResult(path, fmt, path.stat().st_size, diff)
