"""Teacher -> student layer maps for the transformer methods (hidden states, attention maps).

A map is written in a config as ``layers: {teacher: [1, 3, 5], student: [0, 1, 2]}``:
teacher layer ``teacher[k]`` teaches student layer ``student[k]``. Layer
indices become module paths through a template, by default Hugging Face
BERT's ``backbone.encoder.layer.{i}`` (see :mod:`kdistill.text.models`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from kdistill.methods.features import probe_features

LAYER_TEMPLATE = "backbone.encoder.layer.{i}"
EMBEDDINGS_PATH = "backbone.embeddings"


def parse_layer_map(layers: Any, method: str) -> tuple[list[int], list[int]]:
    """``{teacher: [...], student: [...]}`` -> two equally long lists of ints."""
    if not isinstance(layers, Mapping) or set(layers) != {"teacher", "student"}:
        raise ValueError(f"{method}: layers must be a mapping {{teacher: [...], student: [...]}}, "
                         f"got {layers!r}")
    teacher, student = list(layers["teacher"]), list(layers["student"])
    if not teacher or len(teacher) != len(student):
        raise ValueError(f"{method}: layers.teacher and layers.student must be non-empty lists of "
                         f"the same length, got {teacher} and {student}")
    if not all(isinstance(i, int) and not isinstance(i, bool) for i in teacher + student):
        raise ValueError(f"{method}: layer indices must be integers, got {teacher} and {student}")
    return teacher, student


def layer_path(template: str, index: int, embeddings_path: str | None = None) -> str:
    """Module path of layer ``index``; ``-1`` names the embedding output when one is given."""
    if index == -1 and embeddings_path:
        return embeddings_path
    if index < 0:
        raise ValueError(f"layer index {index} is negative; only -1 (the embeddings) is allowed")
    return template.format(i=index)


def token_mask(inputs: Tensor, length: int, pad_id: int | None) -> Tensor:
    """(N, length) bool: which positions of a (possibly trimmed) sequence are real tokens."""
    if pad_id is None or inputs.is_floating_point() or inputs.ndim != 2:
        return torch.ones(inputs.shape[0], length, dtype=torch.bool, device=inputs.device)
    return (inputs[:, :length] != pad_id)


def probe_outputs(model: nn.Module, paths: list[str], sample: Tensor) -> dict[str, Tensor]:
    """Run ``sample`` once in eval mode and return the outputs of ``paths`` (for shapes)."""

    return probe_features(model, paths, sample)
