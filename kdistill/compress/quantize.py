"""Post-training int8 quantization with ONNX Runtime (``pip install 'kdistill[deploy]'``).

The float model is exported to ONNX (:func:`kdistill.compress.onnx_runtime.onnx_bytes`),
pre-processed (shape inference, constant folding, BatchNorm folded into the
convolutions) and quantized by ``onnxruntime.quantization``; the result is an
int8 ONNX model that ONNX Runtime runs with integer kernels on the CPU.

*Dynamic* quantization (Jacob et al. 2018, "Quantization and Training of
Neural Networks for Efficient Integer-Arithmetic-Only Inference") stores the
weights of every linear layer (ONNX ``Gemm`` / ``MatMul``) as int8 with one
scale per tensor, ``w ~ scale * (q - zero_point)``, and quantizes activations
on the fly at run time. Convolutions stay float32, so a conv net shrinks only
by its classifier.

*Static* quantization also fixes the activation ranges (min/max over a few
hundred calibration samples), so convolutions, linear layers and additions
run in int8 too: weights int8 per output channel, activations uint8 per
tensor, in ONNX's QDQ form. A model that cannot be exported to ONNX is
refused with the reason (:class:`~kdistill.errors.ModelError`).

Both give a :class:`QuantizedModel`, an ``nn.Module`` that runs the int8 ONNX
model in ONNX Runtime (float32 tensors in and out, so evaluation code treats
it like any model). :func:`save_quantized` stores its ONNX bytes in a
safetensors artifact (the file size is what the study reports) and
:func:`load_quantized` reads it back; the reloaded model is the same graph, so
it computes exactly what was saved.
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from kdistill.compress.artifact import read_artifact, write_artifact
from kdistill.compress.onnx_runtime import onnx_bytes, ort_session
from kdistill.errors import CheckpointError, ConfigError, ModelError

ENGINE = "onnxruntime"
KINDS = ("dynamic", "static")


class QuantizedModel(nn.Module):
    """An int8 ONNX model run by ONNX Runtime on the CPU, called like the float model.

    ``onnx_model`` holds the ONNX bytes (input ``input``, output ``logits``,
    dynamic batch); ``threads`` is ONNX Runtime's intra-op thread count.
    Outputs come back on the input's device.
    """

    runs_in_onnxruntime = True

    def __init__(self, onnx_model: bytes, kind: str, threads: int = 1) -> None:
        super().__init__()
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
        self.onnx_model = bytes(onnx_model)
        self.kind = kind
        self.threads = threads
        self._session: Any = None

    def session(self) -> Any:
        if self._session is None:
            self._session = ort_session(self.onnx_model, threads=self.threads)
        return self._session

    def forward(self, x: Tensor) -> Tensor:
        out = self.session().run(None, {"input": x.detach().to("cpu", torch.float32).numpy()})[0]
        return torch.from_numpy(np.ascontiguousarray(out)).to(x.device)

    def __getstate__(self) -> dict[str, Any]:
        # an ONNX Runtime session cannot be copied; a copy opens its own
        return {**self.__dict__, "_session": None}


def _ort_quantization() -> Any:
    try:
        from onnxruntime import quantization
    except ImportError:
        raise ConfigError("int8 quantization runs in ONNX Runtime, which is not installed: "
                          "pip install 'kdistill[deploy]'.") from None
    return quantization


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """onnxruntime.quantization reports advice on the root logger; the study would drown in it."""
    root = logging.getLogger()
    old = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(old)


def _float_onnx(model: nn.Module, input_shape: Any, folder: Path) -> Path:
    """The float model as ONNX, pre-processed for quantization, in ``folder``."""
    quantization = _ort_quantization()
    raw, ready = folder / "float.onnx", folder / "float-prep.onnx"
    raw.write_bytes(onnx_bytes(model, tuple(input_shape)))
    try:
        quantization.shape_inference.quant_pre_process(str(raw), str(ready), skip_symbolic_shape=True)
    except Exception as error:  # the pre-processing raises many kinds on unusual graphs
        raise ModelError(f"ONNX Runtime could not prepare {type(model).__name__} for quantization "
                         f"({type(error).__name__}: {str(error).splitlines()[0][:200]}).") from None
    return ready


def dynamic_quantize(model: nn.Module, input_shape: tuple[int, ...] | list[int]) -> QuantizedModel:
    """int8 weights for every linear layer (the input model is untouched)."""
    quantization = _ort_quantization()
    with tempfile.TemporaryDirectory() as tmp, _quiet():
        folder = Path(tmp)
        source = _float_onnx(model, input_shape, folder)
        target = folder / "int8.onnx"
        quantization.quantize_dynamic(
            str(source), str(target), weight_type=quantization.QuantType.QInt8,
            op_types_to_quantize=["MatMul", "Gemm"], per_channel=False)
        return QuantizedModel(target.read_bytes(), "dynamic")


def _calibration_reader(quantization: Any, calibration: Tensor, batch_size: int) -> Any:
    """``calibration`` in batches, through ONNX Runtime's ``CalibrationDataReader`` interface."""
    x = calibration.detach().to("cpu", torch.float32).numpy()
    batches = iter([{"input": x[i:i + batch_size]} for i in range(0, len(x), batch_size)])

    class Reader(quantization.CalibrationDataReader):
        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(batches, None)

    return Reader()


def static_quantize(model: nn.Module, calibration: Tensor, batch_size: int = 256) -> QuantizedModel:
    """int8 weights and activations, activation ranges calibrated on ``calibration`` inputs.

    Raises :class:`ModelError` with the reason when the model cannot be exported to ONNX.
    """
    if len(calibration) == 0:
        raise ModelError("Static quantization needs at least one calibration sample.")
    quantization = _ort_quantization()
    with tempfile.TemporaryDirectory() as tmp, _quiet():
        folder = Path(tmp)
        source = _float_onnx(model, tuple(calibration.shape[1:]), folder)
        target = folder / "int8.onnx"
        reader = _calibration_reader(quantization, calibration, batch_size)
        quantization.quantize_static(
            str(source), str(target), reader, quant_format=quantization.QuantFormat.QDQ,
            per_channel=True, activation_type=quantization.QuantType.QUInt8,
            weight_type=quantization.QuantType.QInt8,
            calibrate_method=quantization.CalibrationMethod.MinMax)
        return QuantizedModel(target.read_bytes(), "static")


def save_quantized(model: QuantizedModel, path: str | Path, kind: str, metadata: dict[str, Any]) -> Path:
    """Write a model from :func:`dynamic_quantize` / :func:`static_quantize` (``kind``
    ``"dynamic"`` or ``"static"``); ``metadata`` must hold the float model's ``model_spec``."""
    if not isinstance(model, QuantizedModel) or model.kind != kind:
        raise ModelError(f"save_quantized takes the result of {kind}_quantize.")
    onnx = torch.frombuffer(bytearray(model.onnx_model), dtype=torch.uint8)
    return write_artifact(path, {"onnx": onnx}, dict(metadata, format=f"int8-{kind}", engine=ENGINE))


def load_quantized(path: str | Path) -> tuple[QuantizedModel, dict[str, Any]]:
    """Read a quantized model saved by :func:`save_quantized`."""
    tensors, meta = read_artifact(path)
    kind = str(meta.get("format", "")).removeprefix("int8-")
    if kind not in KINDS:
        raise ModelError(f"'{path}' is not a quantized kdistill model (format {meta.get('format')}).")
    if meta.get("engine") != ENGINE or "onnx" not in tensors:
        raise CheckpointError(f"'{path}' was quantized by an older kdistill with torch.ao, which is no "
                              "longer supported; quantize the float model again (kdistill study reruns it).")
    return QuantizedModel(tensors["onnx"].numpy().tobytes(), kind), meta
