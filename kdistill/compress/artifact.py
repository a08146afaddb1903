"""Deployable artifacts: one safetensors file with a JSON header, written atomically.

Compressed models are stored like checkpoints (no pickle, so loading cannot run
code), but their tensors may be encoded: quantized tensors as their integer
representation plus scales (:func:`encode_state`), pruned weights as bitmask
plus values (:mod:`kdistill.compress.prune`). The header records the
``format`` and the ``model_spec`` needed to rebuild the module, and the size
of this very file is what the study reports as "size on disk".
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save as save_bytes
from torch import Tensor

from kdistill.errors import CheckpointError
from kdistill.train.checkpoint import META_KEY, atomic_write_bytes, read_kdistill_file

_DTYPES = {str(d): d for d in (torch.qint8, torch.quint8, torch.qint32, torch.float32,
                               torch.float16, torch.float64, torch.int8, torch.uint8)}


def write_artifact(path: str | Path, tensors: dict[str, Tensor], metadata: dict[str, Any]) -> Path:
    """Write ``tensors`` and ``metadata`` to ``path`` atomically; return the path."""
    path = Path(path)
    clean = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    header = {META_KEY: json.dumps(metadata, default=str)}
    atomic_write_bytes(path, save_bytes(clean, metadata=header))
    return path


def read_artifact(path: str | Path, expected_format: str | None = None) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Tensors and metadata of an artifact, with a clear error for the wrong kind of file."""
    path = Path(path)
    tensors, meta = read_kdistill_file(path, f"Model file '{path}'")
    found = meta.get("format", "checkpoint")
    if expected_format is not None and found != expected_format:
        raise CheckpointError(f"'{path}' holds a '{found}' model, expected '{expected_format}'.")
    if "model_spec" not in meta:
        raise CheckpointError(f"'{path}' does not record which model it holds.")
    return tensors, meta


# ------------------------------------------------------------ quantized state dicts


def encode_state(state: dict[str, Any]) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Turn a (possibly quantized) state dict into plain tensors plus a JSON description.

    A quantized tensor ``q`` becomes ``name.__int`` (its int8/uint8
    representation) and, per channel, ``name.__scales`` / ``name.__zero_points``;
    per-tensor scale and zero point go into the description. Tuples (the packed
    weight and bias of a dynamically quantized Linear) are stored element-wise.
    """
    tensors: dict[str, Tensor] = {}
    info: dict[str, Any] = {}

    def put(name: str, value: Any) -> Any:
        if isinstance(value, Tensor) and value.is_quantized:
            tensors[f"{name}.__int"] = value.int_repr().contiguous()
            entry: dict[str, Any] = {"kind": "q", "dtype": str(value.dtype)}
            if value.qscheme() in (torch.per_tensor_affine, torch.per_tensor_symmetric):
                entry.update(scale=float(value.q_scale()), zero_point=int(value.q_zero_point()))
            else:
                tensors[f"{name}.__scales"] = value.q_per_channel_scales().contiguous()
                tensors[f"{name}.__zero_points"] = value.q_per_channel_zero_points().contiguous()
                entry.update(axis=int(value.q_per_channel_axis()))
            return entry
        if isinstance(value, Tensor):
            tensors[name] = value.detach().contiguous().clone()
            return {"kind": "t"}
        if isinstance(value, tuple | list):
            return {"kind": "tuple", "items": [put(f"{name}.__{i}", v) for i, v in enumerate(value)]}
        if value is None:
            return {"kind": "none"}
        if isinstance(value, torch.dtype):
            return {"kind": "dtype", "value": str(value)}
        if isinstance(value, int | float | bool | str):
            return {"kind": "scalar", "value": value}
        raise CheckpointError(f"Cannot store state entry '{name}' of type {type(value).__name__}.")

    for key, value in state.items():
        info[key] = put(key, value)
    # quantized modules check their state-dict version on load; keep the per-module versions
    versions = {k: v.get("version") for k, v in getattr(state, "_metadata", {}).items()}
    return tensors, {"entries": info, "versions": versions}


def decode_state(tensors: dict[str, Tensor], info: dict[str, Any]) -> dict[str, Any]:
    """Invert :func:`encode_state`."""

    def get(name: str, entry: dict[str, Any]) -> Any:
        kind = entry["kind"]
        if kind == "t":
            return tensors[name]
        if kind == "q":
            ints = tensors[f"{name}.__int"]
            dtype = _DTYPES[entry["dtype"]]
            if "axis" in entry:
                return torch._make_per_channel_quantized_tensor(
                    ints, tensors[f"{name}.__scales"], tensors[f"{name}.__zero_points"], entry["axis"])
            q = torch._make_per_tensor_quantized_tensor(ints, entry["scale"], entry["zero_point"])
            return q if q.dtype == dtype else torch.quantize_per_tensor(
                q.dequantize(), entry["scale"], entry["zero_point"], dtype)
        if kind == "tuple":
            return tuple(get(f"{name}.__{i}", e) for i, e in enumerate(entry["items"]))
        if kind == "none":
            return None
        if kind == "dtype":
            return _DTYPES[entry["value"]]
        return entry["value"]

    from collections import OrderedDict

    state: OrderedDict[str, Any] = OrderedDict(
        (key, get(key, entry)) for key, entry in info["entries"].items())
    state._metadata = OrderedDict(  # type: ignore[attr-defined]
        (k, {"version": v} if v is not None else {}) for k, v in info.get("versions", {}).items())
    return state


# ------------------------------------------------------------ dense models


def save_dense(model: torch.nn.Module, path: str | Path, metadata: dict[str, Any]) -> Path:
    """The model's weights alone (``model.*`` keys, as in checkpoints), for deployment.

    Readable by :func:`kdistill.experiment.load_model` and ``kdistill export``.
    """
    tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
    return write_artifact(path, tensors, dict(metadata, format="dense"))


def load_artifact(path: str | Path) -> tuple[torch.nn.Module, dict[str, Any]]:
    """Rebuild any model file the study writes: dense, sparse (pruned) or int8."""
    _, meta = read_artifact(path)
    fmt = meta.get("format", "checkpoint")
    if fmt == "sparse-bitmask":
        from kdistill.compress.prune import load_sparse

        return load_sparse(path)
    if fmt.startswith("int8-"):
        from kdistill.compress.quantize import load_quantized

        return load_quantized(path)
    from kdistill.experiment import load_model

    return load_model(path)
