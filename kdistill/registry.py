"""One generic name -> factory registry, used for models, datasets and methods.

Users extend kdistill by registering their own entries::

    from kdistill import register_model

    @register_model("my-net")
    def my_net(input_shape, num_classes, **kwargs):
        return MyNet(...)

after which ``model: my-net`` works in a config. From the command line such a
module is a plugin (``kdistill train job.yaml --plugin my_nets.py``); each
entry remembers the plugin that registered it (:func:`plugin_of`), so a
checkpoint can say which plugin rebuilds its model.
"""

from __future__ import annotations

import contextlib
import contextvars
import difflib
import importlib
from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

from kdistill.errors import UnknownNameError

F = TypeVar("F", bound=Callable[..., Any])

# the plugin (a module name or a .py path, as the user gave it) being imported now, if any
_loading_plugin: contextvars.ContextVar[str | None] = contextvars.ContextVar("kdistill_plugin", default=None)


@contextlib.contextmanager
def loading_plugin(name: str) -> Iterator[None]:
    """Within the block, registrations are recorded as made by plugin ``name``."""
    token = _loading_plugin.set(name)
    try:
        yield
    finally:
        _loading_plugin.reset(token)


class Registry(Generic[F]):
    """A mapping from a kind's names (``"resnet-deep"``) to factories.

    Lookups (``get``, ``names``, ``in``, ...) see kdistill's own entries
    whatever has been imported so far: the first one imports the modules
    ``builtin_modules`` names, each of which registers its entries when
    imported. Registering does not, so a module may register while it is
    being imported.
    """

    def __init__(self, kind: str, builtin_modules: tuple[str, ...] = ()) -> None:
        self.kind = kind
        self.builtin_modules = builtin_modules
        self._builtins_loaded = False
        self._entries: dict[str, F] = {}
        self._plugins: dict[str, str] = {}  # name -> the plugin that registered it
        # "source/NAME" lookups answered by a library (e.g. timm/resnet18), not by registration
        self._prefixes: dict[str, Callable[[str], F]] = {}

    def load_builtins(self) -> None:
        """Import :attr:`builtin_modules` once (the first lookup does)."""
        if self._builtins_loaded:
            return
        self._builtins_loaded = True  # set first: a lookup made while a module loads must not start over
        try:
            for module in self.builtin_modules:
                importlib.import_module(module)
        except BaseException:
            self._builtins_loaded = False
            raise

    def register(self, name: str, *, overwrite: bool = False) -> Callable[[F], F]:
        """Decorator that adds ``fn`` under ``name``."""

        def decorator(fn: F) -> F:
            if name in self._entries and not overwrite:
                raise ValueError(f"{self.kind} '{name}' is already registered")
            self._entries[name] = fn
            plugin = _loading_plugin.get()
            if plugin is not None:
                self._plugins[name] = plugin
            return fn

        return decorator

    def register_prefix(self, prefix: str, resolve: Callable[[str], F]) -> None:
        """Answer ``get("prefix/NAME")`` with ``resolve("NAME")`` (which raises for unknown names)."""
        self._prefixes[prefix] = resolve

    def get(self, name: str) -> F:
        self.load_builtins()
        if name in self._entries:
            return self._entries[name]
        prefix, slash, rest = name.partition("/")
        if slash and prefix in self._prefixes:
            return self._prefixes[prefix](rest)
        # "resnet18" or "timmm/resnet18" is matched against "timm/resnet18" too
        guesses = [f"{p}/{rest if slash else name}" for p in sorted(self._prefixes)]
        known = self.names() + [f"{p}/<name>" for p in sorted(self._prefixes)]
        raise UnknownNameError(self.kind, name, known, candidates=guesses) from None

    def plugin_of(self, name: str) -> str | None:
        """The plugin that registered ``name``, or for a factory registered by an ordinary import
        outside kdistill, its importable module; ``None`` for kdistill's own entries."""
        self.load_builtins()
        if name in self._plugins:
            return self._plugins[name]
        module = getattr(self._entries.get(name), "__module__", None)
        if not module or module == "__main__" or module.split(".")[0] == "kdistill":
            return None
        return module

    def names(self) -> list[str]:
        self.load_builtins()
        return sorted(self._entries)

    def suggest(self, name: str) -> list[str]:
        return difflib.get_close_matches(name, self.names(), n=3)

    def __contains__(self, name: object) -> bool:
        self.load_builtins()
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        self.load_builtins()
        return len(self._entries)


# The modules whose import registers kdistill's own entries: the core packages, then the optional parts
# that sit beside the core and register themselves (detection; text; the variational student's KL term). The
# core never imports an optional part; these lists are the one place that names them, imported by name
# on a registry's first lookup, so `import kdistill.models` stays free of detection and a lookup still
# finds every name.
MODELS: Registry[Callable[..., Any]] = Registry(
    "model", ("kdistill.models", "kdistill.detection.models", "kdistill.text.models", "kdistill.text.rnn"))
DATASETS: Registry[Callable[..., Any]] = Registry(
    "dataset", ("kdistill.data", "kdistill.detection.data", "kdistill.text.data"))
METHODS: Registry[Callable[..., Any]] = Registry(
    "method", ("kdistill.methods", "kdistill.detection.methods", "kdistill.methods.variational"))
# How to export and check models that read something other than one float tensor (text: token ids and an
# attention mask); see kdistill.compress.export.ModelInputs. An image or tabular model needs no entry.
EXPORTERS: Registry[Any] = Registry("exporter", ("kdistill.text.deploy",))
# Models trained in another form than the one they deploy in, named by a key of the checkpoint's model_spec
# (the variational student: Bayesian layers in training, sparse Linear/Conv2d after); see
# kdistill.compress.load.ModelVariant. An ordinary model needs no entry.
MODEL_VARIANTS: Registry[Any] = Registry("model variant", ("kdistill.compress.variational",))


def load_builtins() -> None:
    """Register all of kdistill's own models, data sets and methods now (before a plugin's, say)."""
    for registry in (MODELS, DATASETS, METHODS, EXPORTERS, MODEL_VARIANTS):
        registry.load_builtins()


def register_model(name: str, *, overwrite: bool = False):
    """Register a model factory ``fn(input_shape, num_classes, **kwargs) -> nn.Module``."""
    return MODELS.register(name, overwrite=overwrite)


def register_dataset(name: str, *, overwrite: bool = False):
    """Register a dataset loader ``fn(**options) -> DataSplits``."""
    return DATASETS.register(name, overwrite=overwrite)


def register_method(name: str, *, overwrite: bool = False):
    """Register a distillation method class (an ``nn.Module`` returning a dict of losses)."""
    return METHODS.register(name, overwrite=overwrite)
