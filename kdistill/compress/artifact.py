"""Deployable artifacts: one safetensors file with a JSON header, written atomically.

Compressed models are stored like checkpoints (no pickle, so loading cannot run
code), but their tensors may be encoded: int8 models as the bytes of their
quantized ONNX graph in one uint8 tensor (:mod:`kdistill.compress.quantize`;
ONNX is a protobuf, read by ONNX Runtime without running Python), pruned
weights as bitmask plus values (:mod:`kdistill.compress.prune`). The header records the
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
from kdistill.train.checkpoint import BARE_FORMAT, META_KEY, atomic_write_bytes, read_kdistill_file


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


# ------------------------------------------------------------ dense models


def save_dense(model: torch.nn.Module, path: str | Path, metadata: dict[str, Any]) -> Path:
    """The model's own state dict (unprefixed keys), for deployment.

    ``create_model(...).load_state_dict(safetensors.torch.load_file(path))``
    loads it without renaming; :func:`kdistill.experiment.load_model`,
    ``kdistill evaluate`` and ``kdistill export`` read it too (its ``format``,
    ``state-dict``, says the keys carry no ``model.`` prefix).
    """
    return write_artifact(path, dict(model.state_dict()), dict(metadata, format=BARE_FORMAT))
