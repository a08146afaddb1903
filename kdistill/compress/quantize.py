"""Post-training int8 quantization with ``torch.ao.quantization``.

*Dynamic* quantization (Jacob et al. 2018, "Quantization and Training of
Neural Networks for Efficient Integer-Arithmetic-Only Inference") stores the
weights of every ``nn.Linear`` as int8 with one scale per tensor,
``w ~ scale * (q - zero_point)``, and quantizes activations on the fly at
run time. Convolutions are left in float32 (PyTorch has no dynamic int8 conv),
so a conv net shrinks only by its classifier.

*Static* quantization also fixes the activation ranges from a few hundred
calibration samples, so convolutions, BatchNorm (folded into the conv) and
ReLU run in int8 too. It uses FX graph mode (``prepare_fx`` / ``convert_fx``),
which traces the model; a model FX cannot trace is skipped with the reason.

Both are saved with :func:`save_quantized` as int8 values plus scales in a
safetensors file (see :func:`kdistill.compress.artifact.encode_state`);
:func:`load_quantized` rebuilds the float model, re-applies the same
transformation to get the module structure and loads the stored integers, so
the reloaded model computes exactly what was saved.
"""

from __future__ import annotations

import contextlib
import copy
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from kdistill.compress.artifact import decode_state, encode_state, read_artifact, write_artifact
from kdistill.errors import ModelError
from kdistill.models import create_model

ENGINE = "x86" if "x86" in torch.backends.quantized.supported_engines else "fbgemm"


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """torch.ao prints deprecation notices on every call; the study would drown in them."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


@contextlib.contextmanager
def _engine() -> Iterator[None]:
    old = torch.backends.quantized.engine
    if ENGINE in torch.backends.quantized.supported_engines:
        torch.backends.quantized.engine = ENGINE
    try:
        yield
    finally:
        torch.backends.quantized.engine = old


def dynamic_quantize(model: nn.Module) -> nn.Module:
    """int8 weights for every ``nn.Linear`` (a quantized deep copy; the input is untouched)."""
    from torch.ao.quantization import quantize_dynamic

    with quiet(), _engine():
        model = copy.deepcopy(model).to("cpu").eval()
        return quantize_dynamic(model, {nn.Linear}, dtype=torch.qint8)


def _prepare_static(model: nn.Module, example: Tensor) -> nn.Module:
    from torch.ao.quantization import get_default_qconfig_mapping
    from torch.ao.quantization.quantize_fx import prepare_fx

    mapping = get_default_qconfig_mapping(ENGINE)
    try:
        return prepare_fx(copy.deepcopy(model).to("cpu").eval(), mapping, (example,))
    except Exception as error:  # FX raises many kinds of errors on untraceable code
        raise ModelError(
            f"Static quantization needs a model that torch.fx can trace; {type(model).__name__} "
            f"could not be traced ({type(error).__name__}: {str(error).splitlines()[0][:200]})."
        ) from None


@torch.no_grad()
def static_quantize(model: nn.Module, calibration: Tensor, batch_size: int = 256) -> nn.Module:
    """int8 weights and activations, activation ranges calibrated on ``calibration`` inputs.

    Raises :class:`ModelError` with the reason when the model cannot be traced.
    """
    from torch.ao.quantization.quantize_fx import convert_fx

    if len(calibration) == 0:
        raise ModelError("Static quantization needs at least one calibration sample.")
    with quiet(), _engine():
        prepared = _prepare_static(model, calibration[:1].cpu())
        for i in range(0, len(calibration), batch_size):
            prepared(calibration[i : i + batch_size].cpu())
        return convert_fx(prepared).eval()


def save_quantized(model: nn.Module, path: str | Path, kind: str, metadata: dict[str, Any]) -> Path:
    """Write a model from :func:`dynamic_quantize` / :func:`static_quantize` (``kind``
    ``"dynamic"`` or ``"static"``); ``metadata`` must hold the float model's ``model_spec``."""
    with quiet():
        tensors, info = encode_state(model.state_dict())
    return write_artifact(path, tensors, dict(metadata, format=f"int8-{kind}", quant_state=info))


def load_quantized(path: str | Path) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild a quantized model saved by :func:`save_quantized`."""
    _, meta = read_artifact(path)
    kind = str(meta.get("format", "")).removeprefix("int8-")
    if kind not in ("dynamic", "static"):
        raise ModelError(f"'{path}' is not a quantized kdistill model (format {meta.get('format')}).")
    tensors, _ = read_artifact(path)
    spec = meta["model_spec"]
    base = create_model(spec["model"], tuple(spec["input_shape"]), spec["num_classes"],
                        **spec.get("options", {})).eval()
    with quiet(), _engine():
        if kind == "dynamic":
            model = dynamic_quantize(base)
        else:
            # one dummy batch only builds the structure; every value is overwritten below
            model = static_quantize(base, torch.zeros(1, *spec["input_shape"]))
        model.load_state_dict(decode_state(tensors, meta["quant_state"]), strict=True)
    return model.eval(), meta
