"""Capture intermediate outputs by module path, without touching model code."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from torch import nn

from kdistill.errors import ConfigError


def module_paths(model: nn.Module) -> list[str]:
    return [name for name, _ in model.named_modules() if name]


def resolve_module(model: nn.Module, path: str, role: str = "model") -> nn.Module:
    modules = dict(model.named_modules())
    if path not in modules or not path:
        import difflib

        valid = module_paths(model)
        close = difflib.get_close_matches(path, valid, n=3)
        hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        raise ConfigError(
            f"The {role} has no module '{path}'.{hint} Valid module paths: {', '.join(valid)}."
        )
    return modules[path]


class FeatureHooks:
    """Forward hooks that store the outputs of named modules in ``self.features``.

    ``every_call=True`` keeps every call's output, ``{path: [call 1, call 2, ...]}``, for modules a
    model runs several times per forward pass (a detection head shared across FPN levels); the
    store is then emptied whenever the hooked model's own forward starts, so hooks left on a model
    after training never accumulate outputs.
    """

    def __init__(self, model: nn.Module, paths: Iterable[str], role: str = "model", *,
                 every_call: bool = False) -> None:
        self.features: dict[str, Any] = {}
        self.every_call = every_call
        self._handles = []
        for path in dict.fromkeys(paths):
            module = resolve_module(model, path, role)
            self._handles.append(module.register_forward_hook(self._make_hook(path)))
        if every_call:
            self._handles.append(model.register_forward_pre_hook(lambda _m, _i: self.features.clear()))

    def _make_hook(self, path: str):
        def hook(_module: nn.Module, _inputs: tuple, output: object) -> None:
            if self.every_call:
                self.features.setdefault(path, []).append(output)
                return
            if isinstance(output, tuple):
                output = output[0]
            self.features[path] = output

        return hook

    def pop(self) -> dict[str, Any]:
        features, self.features = self.features, {}
        return features

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def __len__(self) -> int:
        return len(self._handles)
