"""Models from timm and torchvision by name: ``model: timm/<name>`` or ``torchvision/<name>``.

Needs ``pip install 'kdistill[vision]'``. The data set decides the shape of
the model: ``num_classes`` comes from the data (an explicit ``num_classes``
option must agree with it) and the first convolution takes the data's
channels (timm's ``in_chans``; for torchvision the first ``Conv2d`` is
replaced, and with pretrained weights its filters are summed over the RGB
channels for one channel, or repeated and rescaled for other counts).

Options (``teacher: {model: timm/resnet18, options: {...}}``):

* ``pretrained`` (default ``false``): download the library's pretrained
  weights (needs internet or a filled cache; timm reads the Hugging Face
  Hub, torchvision ``download.pytorch.org``). The classifier is replaced by
  a fresh one for the data's classes.
* ``weights`` (torchvision only): a weights name such as ``DEFAULT`` or
  ``IMAGENET1K_V1`` (``ResNet18_Weights.IMAGENET1K_V1`` also works).
* ``in_chans``, ``num_classes``: checked against the data set.
* any other option is passed to the library's constructor (e.g.
  ``drop_rate``, ``img_size`` and ``patch_size`` for timm ViTs on 28x28).

Every built model carries ``default_feature_layer``, the module path of its
last feature map (timm's last ``feature_info`` stage, ``layer4`` on a
torchvision ResNet, ``features`` on VGG / MobileNet / EfficientNet), and
``rebuild_options``, the options a checkpoint rebuilds it from (without the
download: the weights come from the checkpoint).
"""

from __future__ import annotations

import copy
import difflib
import fnmatch
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from kdistill.errors import ConfigError, ModelError
from kdistill.models._common import image_shape, output_size
from kdistill.optional_deps import import_torchvision

SOURCES = ("timm", "torchvision")
INSTALL = "pip install 'kdistill[vision]'"
# options that would make the library read a file or pickle (weights must come from a
# kdistill checkpoint or the library's own pretrained download)
_REFUSED = {"checkpoint_path", "pretrained_cfg", "pretrained_cfg_overlay", "pretrained_strict",
            "features_only"}


def _import(source: str) -> Any:
    try:
        import_torchvision()
        if source == "timm":
            import timm

            return timm
        import torchvision.models

        return torchvision.models
    except ImportError as error:
        raise ConfigError(f"Model source '{source}/' needs {source}, which is not installed "
                          f"({error}); install it with: {INSTALL}") from None
    except (RuntimeError, AttributeError, OSError) as error:  # e.g. a torchvision built for another torch
        raise ConfigError(f"{source} is installed but cannot be imported beside torch "
                          f"{torch.__version__} ({str(error).splitlines()[0]}); install matching "
                          f"versions, e.g. {INSTALL} in a fresh environment.") from None


def available(source: str) -> list[str]:
    """Classification model names of ``source`` (``timm`` or ``torchvision``), sorted."""
    lib = _import(source)
    if source == "timm":
        return sorted(lib.list_models())
    return sorted(lib.list_models(module=lib))


def _close(name: str, known: list[str]) -> list[str]:
    close = difflib.get_close_matches(name, known, n=5, cutoff=0.6)
    if not close:  # a fragment such as "resnet" still finds the family
        close = fnmatch.filter(known, f"*{name}*")[:5]
    return close


def check_name(full_name: str) -> tuple[str, str]:
    """Split ``timm/resnet18`` into its source and name; ConfigError if either is unknown."""
    source, _, name = full_name.partition("/")
    if source not in SOURCES:
        close = difflib.get_close_matches(source, SOURCES, n=1)
        hint = f" Did you mean '{close[0]}/{name}'?" if close else ""
        raise ConfigError(f"Unknown model source '{source}/' in '{full_name}'.{hint} Models from other "
                          f"libraries are named {' or '.join(s + '/NAME' for s in SOURCES)}.")
    lib = _import(source)
    known = available(source)
    if not name or not (lib.is_model(name) if source == "timm" else name in known):
        close = _close(name, known)
        hint = f" Close matches: {', '.join(f'{source}/{c}' for c in close)}." if close else ""
        listing = ("timm.list_models()" if source == "timm"
                   else "torchvision.models.list_models(module=torchvision.models)")
        raise ConfigError(f"{source} has no classification model '{name}'.{hint} The names are "
                          f"listed by {listing}; see docs/MODELS.md.")
    return source, name


def _on_meta() -> bool:
    """Whether models are being built on the meta device (a config check before training)."""
    return torch.empty(0).device.type == "meta"


def _check_given(full_name: str, options: dict[str, Any], key: str, value: int, what: str) -> None:
    given = options.pop(key, None)
    if given is not None and given != value:
        raise ConfigError(f"Model '{full_name}': option {key}={given!r} does not fit the data set, "
                          f"which has {what} {value}; leave {key} out (it is taken from the data).")


def _pretrained_error(full_name: str, error: Exception) -> ModelError:
    first = str(error).splitlines()[0][:300] if str(error) else type(error).__name__
    return ModelError(
        f"Could not load pretrained weights for '{full_name}' ({type(error).__name__}: {first}). "
        "Downloading them needs internet access (or the weights already in the library's cache: "
        "HF_HOME for timm, TORCH_HOME for torchvision). Set pretrained: false (and no weights) "
        "to start from random weights, or point teacher.checkpoint at a saved model.")


def _timm(full_name: str, name: str, shape: tuple[int, int, int], classes: int,
          options: dict[str, Any]) -> nn.Module:
    timm = _import("timm")
    pretrained = bool(options.pop("pretrained", False))
    if "weights" in options:
        raise ConfigError(f"Model '{full_name}': 'weights' is a torchvision option; timm takes "
                          "pretrained: true, and a weights tag in the name (e.g. timm/resnet18.a1_in1k).")
    try:
        model = timm.create_model(name, pretrained=pretrained, num_classes=classes, in_chans=shape[0],
                                  **options)
    except TypeError as error:
        raise ConfigError(f"Model '{full_name}' does not take these options: {error}.") from None
    except Exception as error:  # downloads fail with OSError, httpx or hub errors alike
        if _on_meta() and not pretrained:
            raise  # some constructors need real tensors; the real build reports real problems
        if pretrained:
            raise _pretrained_error(full_name, error) from None
        raise ModelError(f"timm could not build '{full_name}': {error}") from None
    return model


def _torchvision_weights(full_name: str, name: str, lib: Any, weights: Any) -> Any:
    if weights is None or weights is False:
        return None
    enum = lib.get_model_weights(name)
    choices = ["DEFAULT", *(w.name for w in enum)]
    text = "DEFAULT" if weights is True else str(weights).rsplit(".", 1)[-1]
    if text not in choices:
        raise ConfigError(f"Model '{full_name}': unknown weights '{weights}'; choose one of "
                          f"{', '.join(choices)}.")
    return enum.DEFAULT if text == "DEFAULT" else enum[text]


def _torchvision(full_name: str, name: str, shape: tuple[int, int, int], classes: int,
                 options: dict[str, Any]) -> nn.Module:
    lib = _import("torchvision")
    weights = options.pop("weights", None)
    if options.pop("pretrained", False) and weights is None:
        weights = "DEFAULT"
    enum = _torchvision_weights(full_name, name, lib, weights)
    # pretrained heads predict the weights' categories; they are replaced below
    head = len(enum.meta["categories"]) if enum is not None else classes
    try:
        model = lib.get_model(name, weights=enum, num_classes=head, **options)
    except TypeError as error:
        raise ConfigError(f"Model '{full_name}' does not take these options: {error}.") from None
    except Exception as error:  # a failed download: URLError, OSError, a torch.load error
        if _on_meta() and enum is None:
            raise  # some constructors need real tensors; the real build reports real problems
        if enum is not None:
            raise _pretrained_error(full_name, error) from None
        raise ModelError(f"torchvision could not build '{full_name}': {error}") from None
    if enum is not None and head != classes:
        _replace_head(full_name, model, head, classes)
    _adapt_first_conv(full_name, model, shape[0])
    return model


def _replace(model: nn.Module, path: str, module: nn.Module) -> None:
    parent, _, child = path.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, module)


def _replace_head(full_name: str, model: nn.Module, old: int, classes: int) -> None:
    heads = [(p, m) for p, m in model.named_modules() if isinstance(m, nn.Linear) and m.out_features == old]
    if not heads:
        raise ModelError(f"Model '{full_name}': found no final nn.Linear with {old} outputs to replace "
                         f"by a {classes}-class head; use pretrained: false.")
    path, last = heads[-1]
    _replace(model, path, nn.Linear(last.in_features, classes, bias=last.bias is not None))


def _adapt_first_conv(full_name: str, model: nn.Module, channels: int) -> None:
    """Make the first ``Conv2d`` read ``channels`` input channels, keeping pretrained filters useful."""
    first = next(((p, m) for p, m in model.named_modules() if isinstance(m, nn.Conv2d)), None)
    if first is None or first[1].in_channels == channels:
        return
    path, conv = first
    if conv.groups != 1:
        raise ModelError(f"Model '{full_name}': its first convolution is grouped, so it cannot be "
                         f"adapted to {channels} input channel(s).")
    new = nn.Conv2d(channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                    conv.dilation, bias=conv.bias is not None, padding_mode=conv.padding_mode)
    with torch.no_grad():
        w = conv.weight
        if channels == 1:
            new.weight.copy_(w.sum(dim=1, keepdim=True))
        else:  # cycle through the original channels, rescaled so activations keep their size
            idx = torch.arange(channels) % w.shape[1]
            new.weight.copy_(w[:, idx] * (w.shape[1] / channels))
        if conv.bias is not None:
            new.bias.copy_(conv.bias)
    _replace(model, path, new)


_HEAD_NAMES = {"fc", "head", "heads", "classifier", "avgpool", "global_pool", "pool", "flatten",
               "dropout", "head_drop", "fc_norm", "pre_logits"}


def feature_layer(model: nn.Module) -> str:
    """The module path of the model's last feature map, before pooling and the classifier."""
    info = getattr(model, "feature_info", None)
    if isinstance(info, list) and info and isinstance(info[-1], dict) and info[-1].get("module"):
        # timm names some stages with "_" for "." (its feature wrappers flatten the paths)
        for path in dict.fromkeys((str(info[-1]["module"]), str(info[-1]["module"]).replace("_", "."))):
            try:
                model.get_submodule(path)
                return path
            except AttributeError:
                continue
    children = [(n, m) for n, m in model.named_children()
                if n not in _HEAD_NAMES and any(True for _ in m.parameters())
                and not isinstance(m, (nn.Linear, nn.Dropout, nn.Flatten))]
    if not children:
        raise ModelError(f"{type(model).__name__} has no sub-module to take features from.")
    return children[-1][0]


@torch.no_grad()
def _probe(full_name: str, model: nn.Module, shape: tuple[int, int, int], outputs: int) -> None:
    """One forward pass on a zero image: a model that cannot take the data's size fails here."""
    was_training = model.training
    model.eval()
    try:
        out = model(torch.zeros(1, *shape))
    except Exception as error:  # the libraries raise many kinds on a too-small image
        if _on_meta():
            raise  # meta tensors lack some operations; the real build probes again
        first = str(error).splitlines()[0][:300] if str(error) else type(error).__name__
        raise ModelError(
            f"Model '{full_name}' cannot run on images of shape {shape} ({type(error).__name__}: "
            f"{first}). Choose a model that accepts this size (convolutional nets such as "
            f"resnet18 take 28x28), or for a vision transformer pass img_size: {list(shape[1:])} "
            "and a patch_size that divides it.") from None
    finally:
        model.train(was_training)
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != (1, outputs):
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ModelError(f"Model '{full_name}' returns {got}, not logits of shape (batch, {outputs}); "
                         "only classification models can be used.")


_BUILDERS: dict[str, Callable[..., nn.Module]] = {"timm": _timm, "torchvision": _torchvision}


def create_external(full_name: str, input_shape: Sequence[int], num_classes: int, /,
                    **options: Any) -> nn.Module:
    """Build ``timm/<name>`` or ``torchvision/<name>`` for ``input_shape`` and ``num_classes``."""
    source, name = check_name(full_name)
    shape = image_shape(full_name, input_shape)
    outputs = output_size(full_name, num_classes)
    opts = dict(options)
    refused = sorted(_REFUSED & set(opts))
    if refused:
        raise ConfigError(f"Model '{full_name}': option(s) {', '.join(refused)} are not supported; "
                          "weights come from pretrained: true or from a kdistill checkpoint.")
    _check_given(full_name, opts, "num_classes", outputs, "number of outputs")
    _check_given(full_name, opts, "in_chans", shape[0], "image channels")
    rebuild = {**{k: v for k, v in opts.items() if k not in ("pretrained", "weights")}, "pretrained": False}
    model = _BUILDERS[source](full_name, name, shape, outputs, copy.deepcopy(opts))
    _probe(full_name, model, shape, outputs)
    model.default_feature_layer = feature_layer(model)
    # a checkpoint holds the trained weights: rebuilding must not download anything
    model.rebuild_options = rebuild
    return model


def resolver(source: str) -> Callable[[str], Callable[..., nn.Module]]:
    """The MODELS registry's lookup for ``source/NAME``: checks the name, returns a factory."""

    def resolve(name: str) -> Callable[..., nn.Module]:
        full_name = f"{source}/{name}"
        check_name(full_name)

        def factory(input_shape: Sequence[int], num_classes: int, /, **options: Any) -> nn.Module:
            return create_external(full_name, input_shape, num_classes, **options)

        factory.checks_shape_options = True  # type: ignore[attr-defined]
        factory.__name__ = factory.__qualname__ = full_name.replace("/", "_")
        return factory

    return resolve
