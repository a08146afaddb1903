"""Rebuild a model from any kdistill model file: a training checkpoint, a dense, pruned or int8 file.

It sits with the file formats, below the run assembly (:mod:`kdistill.experiment`
re-exports :func:`load_model`), so that exporting, the study and user code
load models without importing how runs are put together.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

from torch import nn

from kdistill.compress.artifact import read_artifact
from kdistill.compress.prune import load_sparse
from kdistill.compress.quantize import load_quantized
from kdistill.errors import CheckpointError, shorten
from kdistill.models import rebuild_model
from kdistill.registry import MODEL_VARIANTS
from kdistill.train import read_checkpoint
from kdistill.train.checkpoint import load_into, weights_prefix
from kdistill.train.checkpoint_meta import require_model_spec
from kdistill.train.targets import TargetScale, fold

__all__ = ["ModelVariant", "load_artifact", "load_model", "missing_model"]


class ModelVariant(Protocol):
    """A model trained in another form than the one it deploys in, named by a ``model_spec`` key.

    Optional parts register one in :data:`kdistill.registry.MODEL_VARIANTS`
    under that key (the variational student registers ``variational``: its
    training checkpoint holds Bayesian layers, the model it returns is sparse).
    ``settings`` is the key's value in the checkpoint's (validated) metadata.
    """

    def prepare(self, model: nn.Module, settings: Any, tensors: dict[str, Any]) -> bool:
        """Turn the freshly built ``model`` into the trained form, in place, before the weights are
        loaded; ``False`` when ``tensors`` hold the ordinary form (nothing to do)."""
        ...

    def finish(self, model: nn.Module, settings: Any) -> nn.Module:
        """The model to return once the trained form holds its weights."""
        ...


_LOADING: set[str] = set()  # checkpoints being rebuilt now: one whose model names itself loops


def load_model(checkpoint: str | Path) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild a model from a kdistill checkpoint (architecture from its metadata).

    A ``model_spec`` that names an unknown model or options the model refuses
    raises :class:`CheckpointError`: the file, not the user's config, is wrong.
    """
    tensors, meta = read_checkpoint(checkpoint)
    spec = meta.get("model_spec")
    if not spec:
        raise CheckpointError(
            f"Checkpoint '{checkpoint}' does not record which registered model it holds: it was saved "
            "for a module that kdistill.create_model() did not build (your own nn.Module), so it cannot "
            "be rebuilt from the file alone. In Python, build the module as for training and load the "
            "weights with kdistill.train.load_weights(module, path) (docs/EVALUATE.md); to use it from "
            "the command line, register the model with @kdistill.register_model and train it through "
            "create_model()."
        )
    fmt = meta.get("format")  # one of checkpoint_meta.FORMATS, checked when the file was read
    if fmt == "sparse-bitmask":  # a pruned or sparsified model file
        return load_sparse(checkpoint)
    if fmt is not None and fmt.startswith("int8-"):
        raise CheckpointError(f"Checkpoint '{checkpoint}' holds an int8 model (format '{fmt}'), which runs "
                              "in ONNX Runtime, not PyTorch; load it with "
                              "kdistill.compress.quantize.load_quantized.")
    spec = require_model_spec(meta, f"Checkpoint '{checkpoint}'")
    key = str(Path(checkpoint).resolve())
    if key in _LOADING:
        raise CheckpointError(f"Checkpoint '{checkpoint}' records a model built from itself; it cannot be "
                              "rebuilt.")
    _LOADING.add(key)
    try:
        model = rebuild_model(spec, f"Checkpoint '{checkpoint}'",  # never a download: weights are here
                              missing=lambda: missing_model(checkpoint, spec))
    finally:
        _LOADING.discard(key)
    # e.g. a variational training checkpoint: rebuilt as trained, returned sparsified
    variants = [(MODEL_VARIANTS.get(key), spec[key]) for key in MODEL_VARIANTS.names() if spec.get(key)]
    variants = [(variant, settings) for variant, settings in variants if variant.prepare(model, settings, tensors)]
    load_into(model, tensors, weights_prefix(tensors, meta), f"'{checkpoint}'")
    for variant, settings in variants:
        model = variant.finish(model, settings)
    scale = TargetScale.from_dict(meta.get("target_scale"))
    if scale is not None:  # trained on standardised targets: predict in the data's own units
        try:
            fold(model, scale)
        except ValueError as error:
            raise CheckpointError(f"Checkpoint '{checkpoint}' records a target scale, but {error}.") from None
    model.eval()
    return model, meta


def missing_model(checkpoint: str | Path, spec: dict[str, Any]) -> str:
    """Why a checkpoint's model is not registered here, and which ``--plugin`` registers it."""
    name, plugin = shorten(spec["model"], 100), spec.get("plugin")
    if plugin:
        return (f"Checkpoint '{shorten(checkpoint, 200)}' holds model '{name}', registered by plugin "
                f"'{shorten(plugin, 300)}', which is not loaded: pass --plugin {shorten(plugin, 300)} "
                "(in Python, import that module first).")
    return (f"Checkpoint '{shorten(checkpoint, 200)}' holds model '{name}', which is not registered here: "
            "pass --plugin MODULE_OR_FILE.py naming the code that registers it with "
            f"@register_model('{name}') (in Python, import that module first).")


def load_artifact(path: str | Path) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild any model file the study writes: dense, sparse (pruned) or int8."""
    _, meta = read_artifact(path)
    fmt = meta.get("format", "checkpoint")
    if fmt == "sparse-bitmask":
        return load_sparse(path)
    if fmt.startswith("int8-"):
        return load_quantized(path)
    return load_model(path)
