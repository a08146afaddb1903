"""Pruning: zero small weights (unstructured) or remove whole neurons/channels (structured).

*Unstructured magnitude pruning* (Han et al. 2015, "Learning both Weights and
Connections for Efficient Neural Networks") zeroes, in every Linear and Conv
weight, the fraction ``s`` of entries with the smallest ``|w|``. The dense
shape is unchanged, so the saving only shows when the file stores the zeros
sparsely: :func:`save_sparse` writes each pruned weight as a bitmask of the
kept positions (1 bit per entry) plus the kept values, so a weight of ``n``
float32 entries costs ``n/8 + 4 (1-s) n`` bytes instead of ``4n``.

*Structured pruning* (Li et al. 2017, "Pruning Filters for Efficient
ConvNets") ranks the neurons of each hidden layer (rows of a Linear) or the
output channels of each conv by the L1 norm of their weights, keeps the top
``1-s`` fraction and rebuilds a genuinely smaller dense model of the same
family (``hidden`` / ``widths`` options), so it is saved as an ordinary
checkpoint and runs faster everywhere. In a ResNet every conv that writes into
a stage's residual stream (the block outputs and the projection shortcut) must
keep the same channels; they are ranked by the sum of their L1 norms.
"""

from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn.utils import prune as torch_prune

from kdistill.compress.artifact import read_artifact, write_artifact
from kdistill.errors import CheckpointError, ModelError
from kdistill.models import create_model, rebuild_model
from kdistill.models.cnn import ConvNet
from kdistill.models.mlp import MLP
from kdistill.models.resnet import ResNet
from kdistill.train.checkpoint import load_strict
from kdistill.train.checkpoint_meta import require_model_spec

PRUNABLE = (nn.Linear, nn.Conv2d)


def _check_sparsity(sparsity: float) -> None:
    if not 0.0 <= sparsity < 1.0:
        raise ModelError(f"Pruning sparsity must be in [0, 1), got {sparsity}.")


def magnitude_prune(model: nn.Module, sparsity: float, *, permanent: bool = True) -> nn.Module:
    """Zero the ``sparsity`` fraction of smallest-magnitude weights in each Linear/Conv layer.

    Returns a pruned deep copy. With ``permanent=False`` the masks stay attached
    as ``torch.nn.utils.prune`` reparametrisations, so a fine-tune keeps the
    pruned weights at zero; call :func:`make_permanent` afterwards.
    """
    _check_sparsity(sparsity)
    model = copy.deepcopy(model)
    for module in model.modules():
        if isinstance(module, PRUNABLE):
            torch_prune.l1_unstructured(module, "weight", amount=sparsity)
    return make_permanent(model) if permanent else model


def make_permanent(model: nn.Module) -> nn.Module:
    """Fold pruning masks into the weights (removes the reparametrisation hooks)."""
    for module in model.modules():
        if isinstance(module, PRUNABLE) and torch_prune.is_pruned(module):
            torch_prune.remove(module, "weight")
    return model


def weight_sparsity(model: nn.Module) -> float:
    """Fraction of zero entries over all Linear/Conv weights."""
    zeros = total = 0
    for module in model.modules():
        if isinstance(module, PRUNABLE):
            zeros += int((module.weight == 0).sum())
            total += module.weight.numel()
    return zeros / total if total else 0.0


def nonzero_parameters(model: nn.Module) -> int:
    return sum(int((p != 0).sum()) for p in model.parameters())


# ---------------------------------------------------------------- sparse storage


def sparse_state(model: nn.Module, min_sparsity: float = 0.05) -> tuple[dict[str, Tensor], list[str]]:
    """State dict with every weight of at least ``min_sparsity`` zeros as bitmask + values.

    A sparse tensor ``name`` becomes ``name.__mask`` (uint8, the kept positions
    packed 8 per byte, ``numpy.packbits`` order) and ``name.__values`` (the kept
    entries in row-major order); its shape is recorded in the returned list.
    """
    tensors: dict[str, Tensor] = {}
    sparse: list[str] = []
    for name, tensor in model.state_dict().items():
        t = tensor.detach().to("cpu").contiguous()
        if t.is_floating_point() and t.ndim >= 2 and (t == 0).float().mean().item() >= min_sparsity:
            keep = (t != 0).flatten().numpy()
            tensors[f"{name}.__mask"] = torch.from_numpy(np.packbits(keep))
            tensors[f"{name}.__values"] = t.flatten()[torch.from_numpy(keep)].clone()
            sparse.append(name)
        else:
            tensors[name] = t.clone()
    return tensors, sparse


def dense_state(tensors: dict[str, Tensor], shapes: dict[str, list[int]],
                label: str = "Sparse checkpoint") -> dict[str, Tensor]:
    """Invert :func:`sparse_state`; a mask or values that do not fit the recorded shape are refused."""
    state = {k: v for k, v in tensors.items() if not k.endswith(("__mask", "__values"))}
    for name, shape in shapes.items():
        mask_key, values_key = f"{name}.__mask", f"{name}.__values"
        if mask_key not in tensors or values_key not in tensors:
            raise CheckpointError(f"{label} lacks the mask or values of '{name}'.")
        n = math.prod(shape)
        mask, values = tensors[mask_key], tensors[values_key]
        if mask.dtype != torch.uint8 or mask.dim() != 1 or mask.numel() != (n + 7) // 8 or values.dim() != 1:
            raise CheckpointError(f"{label}: the mask of '{name[:80]}' does not fit its recorded shape {shape}.")
        keep = np.unpackbits(mask.numpy(), count=n).astype(bool)
        if int(keep.sum()) != values.numel():
            raise CheckpointError(f"{label}: '{name[:80]}' keeps {int(keep.sum())} values by its mask but "
                                  f"stores {values.numel()}.")
        dense = torch.zeros(n, dtype=values.dtype)
        dense[torch.from_numpy(keep)] = values
        state[name] = dense.reshape(shape)
    return state


def save_sparse(model: nn.Module, path: str | Path, metadata: dict[str, Any]) -> Path:
    """Write ``model`` as a sparse kdistill checkpoint; its file size reflects the zeros.

    ``metadata`` must carry the ``model_spec`` so :func:`load_sparse` can rebuild it.
    """
    tensors, sparse = sparse_state(model)
    shapes = {name: list(model.state_dict()[name].shape) for name in sparse}
    return write_artifact(path, tensors, dict(metadata, format="sparse-bitmask", sparse_shapes=shapes))


def load_sparse(path: str | Path) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild a model saved by :func:`save_sparse`."""
    tensors, meta = read_artifact(path, expected_format="sparse-bitmask")
    label = f"Model file '{path}'"
    model = rebuild_model(require_model_spec(meta, label), label)
    state = dense_state(tensors, meta.get("sparse_shapes") or {}, label)
    # a file that says sparse-bitmask but holds other tensors (a dense checkpoint relabelled) is refused
    load_strict(model, state, f"{label} does not fit the model it records ({{}}); it was "
                                          "edited or written by another tool.")
    return model.eval(), meta


# ---------------------------------------------------------------- structured pruning


def _keep_count(n: int, sparsity: float) -> int:
    return max(1, int(round(n * (1.0 - sparsity))))


def _top(scores: Tensor, k: int) -> Tensor:
    # sorted indices keep the surviving units in their original order
    return torch.sort(torch.topk(scores, k).indices).values


def _l1_rows(weight: Tensor) -> Tensor:
    return weight.detach().abs().flatten(1).sum(dim=1)


def _take_conv(conv: nn.Conv2d, out_idx: Tensor, in_idx: Tensor | None) -> dict[str, Tensor]:
    w = conv.weight.detach()[out_idx]
    if in_idx is not None:
        w = w[:, in_idx]
    state = {"weight": w}
    if conv.bias is not None:
        state["bias"] = conv.bias.detach()[out_idx]
    return state


def _take_bn(bn: nn.BatchNorm2d, idx: Tensor) -> dict[str, Tensor]:
    state = {k: v.detach()[idx] for k, v in bn.state_dict().items() if v.ndim == 1}
    state["num_batches_tracked"] = bn.num_batches_tracked.detach().clone()
    return state


def _prefixed(prefix: str, state: dict[str, Tensor]) -> dict[str, Tensor]:
    return {f"{prefix}.{k}": v for k, v in state.items()}


def _prune_mlp(model: MLP, sparsity: float) -> tuple[dict[str, Any], dict[str, Tensor]]:
    state: dict[str, Tensor] = {}
    hidden: list[int] = []
    prev: Tensor | None = None
    for i, block in enumerate(model.features):
        linear = block[0]
        keep = _top(_l1_rows(linear.weight), _keep_count(linear.out_features, sparsity))
        w = linear.weight.detach()[keep]
        state[f"features.{i}.0.weight"] = w[:, prev] if prev is not None else w
        state[f"features.{i}.0.bias"] = linear.bias.detach()[keep]
        hidden.append(len(keep))
        prev = keep
    w = model.classifier.weight.detach()
    state["classifier.weight"] = w[:, prev] if prev is not None else w
    state["classifier.bias"] = model.classifier.bias.detach()
    return {"hidden": hidden}, state


def _prune_cnn(model: ConvNet, sparsity: float) -> tuple[dict[str, Any], dict[str, Tensor]]:
    state: dict[str, Tensor] = {}
    widths: list[int] = []
    prev: Tensor | None = None
    convs = 0
    for b, block in enumerate(model.features):
        convs = 0
        for j, layer in enumerate(block):
            if isinstance(layer, nn.Conv2d):
                keep = _top(_l1_rows(layer.weight), _keep_count(layer.out_channels, sparsity))
                state.update(_prefixed(f"features.{b}.{j}", _take_conv(layer, keep, prev)))
                bn = block[j + 1]
                state.update(_prefixed(f"features.{b}.{j + 1}", _take_bn(bn, keep)))
                prev, convs = keep, convs + 1
        widths.append(len(prev))
    linear = model.classifier[-1]
    state[f"classifier.{len(model.classifier) - 1}.weight"] = linear.weight.detach()[:, prev]
    state[f"classifier.{len(model.classifier) - 1}.bias"] = linear.bias.detach()
    return {"widths": widths, "convs_per_block": convs}, state


def _prune_resnet(model: ResNet, sparsity: float) -> tuple[dict[str, Any], dict[str, Tensor]]:
    state: dict[str, Tensor] = {}
    stages = [model.layer1, model.layer2, model.layer3]
    widths = [stage[0].conv2.out_channels for stage in stages]
    # stage 1's stream starts at the stem unless its first block projects
    stream_convs: list[list[nn.Conv2d]] = [[] for _ in stages]
    if isinstance(stages[0][0].shortcut, nn.Identity):
        stream_convs[0].append(model.stem[0])
    for s, stage in enumerate(stages):
        for block in stage:
            stream_convs[s].append(block.conv2)
            if not isinstance(block.shortcut, nn.Identity):
                stream_convs[s].append(block.shortcut[0])
    stream_idx = [_top(sum(_l1_rows(c.weight) for c in convs), _keep_count(w, sparsity))
                  for convs, w in zip(stream_convs, widths)]
    stem_out = stream_idx[0] if model.stem[0] in stream_convs[0] else \
        _top(_l1_rows(model.stem[0].weight), _keep_count(model.stem[0].out_channels, sparsity))
    state.update(_prefixed("stem.0", _take_conv(model.stem[0], stem_out, None)))
    state.update(_prefixed("stem.1", _take_bn(model.stem[1], stem_out)))
    prev = stem_out
    for s, (name, stage) in enumerate(zip(("layer1", "layer2", "layer3"), stages)):
        out = stream_idx[s]
        for i, block in enumerate(stage):
            p = f"{name}.{i}"
            inner = _top(_l1_rows(block.conv1.weight), len(out))
            state.update(_prefixed(f"{p}.conv1", _take_conv(block.conv1, inner, prev)))
            state.update(_prefixed(f"{p}.bn1", _take_bn(block.bn1, inner)))
            state.update(_prefixed(f"{p}.conv2", _take_conv(block.conv2, out, inner)))
            state.update(_prefixed(f"{p}.bn2", _take_bn(block.bn2, out)))
            if not isinstance(block.shortcut, nn.Identity):
                state.update(_prefixed(f"{p}.shortcut.0", _take_conv(block.shortcut[0], out, prev)))
                state.update(_prefixed(f"{p}.shortcut.1", _take_bn(block.shortcut[1], out)))
            prev = out
    state["fc.weight"] = model.fc.weight.detach()[:, prev]
    state["fc.bias"] = model.fc.bias.detach()
    depths = [len(stage) for stage in stages]
    return {"depths": depths, "widths": [len(i) for i in stream_idx]}, state


def structured_prune(
    model: nn.Module, sparsity: float, model_spec: dict[str, Any]
) -> tuple[nn.Module, dict[str, Any]]:
    """Remove the ``sparsity`` fraction of neurons/channels with the smallest L1 norm.

    Returns the smaller dense model and its ``model_spec`` (same registered
    name, narrower ``hidden`` / ``widths`` options), so it saves and reloads as
    an ordinary kdistill checkpoint. Supports the zoo's MLP, ConvNet and
    ResNet; other models raise :class:`ModelError`.
    """
    _check_sparsity(sparsity)
    if isinstance(model, MLP):
        options, state = _prune_mlp(model, sparsity)
    elif isinstance(model, ConvNet):
        options, state = _prune_cnn(model, sparsity)
    elif isinstance(model, ResNet):
        options, state = _prune_resnet(model, sparsity)
    else:
        raise ModelError(
            f"Structured pruning knows the zoo's MLP, ConvNet and ResNet, not {type(model).__name__}; "
            "use unstructured pruning for this model."
        )
    spec = copy.deepcopy(model_spec)
    spec["options"] = {**spec.get("options", {}), **options}
    small = create_model(spec["model"], tuple(spec["input_shape"]), spec["num_classes"], **spec["options"])
    small.load_state_dict({k: v.clone().contiguous() for k, v in state.items()}, strict=True)
    return small.eval(), spec
