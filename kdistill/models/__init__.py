"""The model zoo.

``create_model(name, input_shape, num_classes, **kwargs)`` builds any model
registered in :data:`kdistill.registry.MODELS`; importing this package
registers the built-in families:

* ``mlp-simple`` / ``mlp-medium`` / ``mlp-deep`` (:mod:`kdistill.models.mlp`)
* ``cnn-simple`` / ``cnn-medium`` / ``cnn-deep`` (:mod:`kdistill.models.cnn`)
* ``resnet-simple`` / ``resnet-medium`` / ``resnet-deep`` (:mod:`kdistill.models.resnet`)
* ``hinton-teacher`` / ``hinton-student`` (:mod:`kdistill.models.hinton`)
* ``timm/<name>`` and ``torchvision/<name>``: any classification model of
  those libraries (needs ``kdistill[vision]``; :mod:`kdistill.models.external`,
  names and options in docs/MODELS.md)
* detectors, on canvases: ``fcos-simple`` / ``fcos-medium`` / ``fcos-deep``,
  registered by :mod:`kdistill.detection.models` (the registry imports it on
  its first lookup; this package does not)
* text, on token ids (needs ``kdistill[nlp]``): ``hf-classifier``, ``hf-distil``,
  ``tiny-transformer`` (:mod:`kdistill.text.models`), ``bilstm``, ``text-cnn``
  (:mod:`kdistill.text.rnn`), registered by the text package the same way

Every model maps a batch to logits of shape ``(batch, num_classes)``, or
``(batch, 1)`` for regression (``num_classes == 0``).
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable, Sequence
from typing import Any

from torch import nn

from kdistill.errors import CheckpointError, ConfigError, ModelError, UnknownNameError, shorten
from kdistill.models import cnn, external, hinton, mlp, resnet  # noqa: F401  (registers the zoo)
from kdistill.models.cnn import ConvNet
from kdistill.models.mlp import MLP
from kdistill.models.resnet import BasicBlock, ResNet
from kdistill.registry import MODELS, register_model

# the attribute create_model leaves on a module it built (see built_as)
_ORIGIN = "_kdistill_built_as"

for _source in external.SOURCES:
    MODELS.register_prefix(_source, external.resolver(_source))

__all__ = [
    "MLP",
    "BasicBlock",
    "ConvNet",
    "ResNet",
    "built_as",
    "create_model",
    "rebuild_spec",
    "list_models",
    "rebuild_model",
    "register_model",
]


def create_model(
    name: str, input_shape: Sequence[int], num_classes: int, /, **kwargs: Any
) -> nn.Module:
    """Build the model registered as ``name``, or a library's (``timm/resnet18``).

    Raises :class:`~kdistill.errors.UnknownNameError` (a ``ConfigError``) listing
    the registered names when ``name`` is unknown, and ``ConfigError`` naming the
    allowed options when a keyword is not understood.
    """
    factory = MODELS.get(name)
    clash = sorted({"input_shape", "num_classes"} & set(kwargs))
    # library models check these against the data themselves; the zoo takes them from the data only
    if clash and not getattr(factory, "checks_shape_options", False):
        raise ConfigError(f"Model '{name}': {', '.join(clash)} come(s) from the data set and cannot be "
                          "set as an option; remove it from the model's options.")
    _check_options(name, factory, kwargs)
    model = factory(tuple(input_shape), num_classes, **kwargs)
    _record_origin(model, name, kwargs)
    return model


def _record_origin(model: nn.Module, name: str, options: dict[str, Any]) -> None:
    """Note on the module how it was built, so that ``fit`` can record it in its checkpoints.

    Only plain-data options are kept (a teacher module passed as an option
    cannot be written to a checkpoint); :func:`built_as` reads the note.
    """
    try:
        json.dumps(options)
    except (TypeError, ValueError):
        return
    if isinstance(model, nn.Module):
        model.__dict__[_ORIGIN] = {"model": name, "options": dict(options)}


def rebuild_spec(name: str, options: dict[str, Any], model: nn.Module | None, input_shape: Sequence[int],
                 num_classes: int, dataset: str) -> dict[str, Any]:
    """What a checkpoint records (``model_spec``) so that :func:`create_model` can rebuild ``model``.

    A model may resolve its options (e.g. a pretrained folder into the config
    it read, as ``rebuild_options``) so a checkpoint rebuilds the architecture
    without the files it was first built from.
    """
    return {
        "model": name,
        "options": getattr(model, "rebuild_options", None) or options,
        "input_shape": [int(d) for d in input_shape],
        "num_classes": int(num_classes),
        "dataset": dataset,
    }


def built_as(model: nn.Module) -> dict[str, Any] | None:
    """``{"model": NAME, "options": {...}}`` when :func:`create_model` built ``model``, else ``None``."""
    origin = model.__dict__.get(_ORIGIN) if isinstance(model, nn.Module) else None
    return dict(origin) if origin is not None else None


def _check_options(name: str, factory: Any, kwargs: dict[str, Any]) -> None:
    """Factories with explicit keyword options refuse others by name, not with a TypeError."""
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):  # a builtin or C callable: let it check its own arguments
        return
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return  # the factory checks its own options (see kdistill.models._common.merge_kwargs)
    allowed = [p for p in list(params)[2:] if params[p].kind in (params[p].KEYWORD_ONLY,
                                                                  params[p].POSITIONAL_OR_KEYWORD)]
    unknown = sorted(str(k) for k in kwargs if k not in allowed)
    if unknown:
        raise ConfigError(f"Model '{name}' got unknown option(s) {shorten(', '.join(unknown), 200)}. "
                          f"Allowed options: {', '.join(allowed) or '(none)'}.")


def list_models() -> list[str]:
    """Names of every registered model, sorted."""
    return MODELS.names()


def offline_options(name: str, options: dict[str, Any]) -> dict[str, Any]:
    """A saved model's options with every download switched off: its weights come from the file.

    A checkpoint's ``model_spec`` is not trusted to make kdistill contact the
    network: ``pretrained`` (and torchvision's ``weights``) of a library model
    are dropped, and ``pretrained: true`` of any other model becomes false.
    """
    options = dict(options)
    if isinstance(name, str) and name.split("/", 1)[0] in external.SOURCES:
        options.pop("weights", None)
        options["pretrained"] = False
    elif options.get("pretrained") is True:
        options["pretrained"] = False
    return options


def rebuild_model(spec: dict[str, Any], label: str, missing: Callable[[], str] | None = None) -> nn.Module:
    """The untrained model a checkpoint's ``model_spec`` describes, built without any download.

    ``label`` starts the :class:`CheckpointError` raised when the spec names
    an unknown model or options the model refuses: the file, not the user's
    config, is wrong then. ``missing()``, when given, is the message for a
    model name nothing registered (a user's model whose plugin is not loaded).
    """
    options = offline_options(spec["model"], spec.get("options") or {})
    try:
        return create_model(spec["model"], tuple(spec["input_shape"]), spec["num_classes"], **options)
    except UnknownNameError as error:
        if missing is not None and error.kind == "model" and error.name == spec["model"]:
            raise CheckpointError(missing()) from None
        raise CheckpointError(f"{label} records a model that cannot be rebuilt: {error}") from None
    except (ConfigError, ModelError) as error:
        raise CheckpointError(f"{label} records a model that cannot be rebuilt: {error}") from None
