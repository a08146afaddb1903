"""User code on the command line: ``--plugin MODULE_OR_FILE.py`` and the ``kdistill.plugins`` entry points.

Configs are plain data and never import code. A user's models, methods, data
sets and schemes reach the command line as plugins: Python modules that
register them with the usual decorators (``@register_model("my-net")``,
``@register_method``, ``@register_dataset``, ``@register_scheme``) when
imported. The user chooses them, never the config:

* ``--plugin nets.py`` (a path to a Python file) or ``--plugin my_package.nets``
  (an importable module), on every command, repeatable;
* the entry points of group ``kdistill.plugins`` of every installed
  distribution, loaded when any command starts; a package declares one in its
  ``pyproject.toml``::

      [project.entry-points."kdistill.plugins"]
      my-nets = "my_package.nets"

A plugin that cannot be found or fails while importing is a
:class:`~kdistill.errors.PluginError` (exit code 2) naming it. Checkpoints
record the plugin that registered their model, so ``kdistill evaluate`` of a
checkpoint whose model is missing says which ``--plugin`` to pass.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import re
import sys
import traceback
from collections.abc import Iterable
from pathlib import Path
from types import ModuleType

from kdistill.errors import PluginError, shorten
from kdistill.registry import loading_plugin

ENTRY_POINT_GROUP = "kdistill.plugins"

# loaded plugins by resolved file path or module name: a second --plugin of the same one is a no-op
_LOADED: dict[str, ModuleType] = {}


def is_file_plugin(spec: str) -> bool:
    """``nets.py`` and ``plugins/nets`` are files; ``my_package.nets`` is a module name."""
    return spec.endswith(".py") or "/" in spec or "\\" in spec


def load_plugin(spec: str) -> ModuleType:
    """Import the plugin ``spec`` (a ``.py`` path or a dotted module name) once, recording what it registers."""
    if not spec.strip():
        raise PluginError("--plugin needs a module name or a path to a .py file, got an empty value.")
    if is_file_plugin(spec):
        return _load_file(spec)
    if spec in _LOADED:
        return _LOADED[spec]
    if not re.fullmatch(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*", spec):
        raise PluginError(f"Plugin '{shorten(spec, 200)}' is neither a path to a .py file nor a module name "
                          "(names joined by dots, e.g. my_package.nets).")
    with loading_plugin(spec):
        try:
            module = importlib.import_module(spec)
        except ModuleNotFoundError as error:
            missing = error.name or ""
            if spec == missing or spec.startswith(missing + "."):  # the plugin itself, not an import in it
                raise PluginError(
                    f"Plugin '{spec}' cannot be imported: there is no module named '{missing}' in this "
                    "Python environment. Install the package that provides it, add its folder to PYTHONPATH, "
                    "or give a file by its path (--plugin ./nets.py).") from None
            raise _failed(f"Plugin '{spec}'", error, None) from None
        except Exception as error:  # whatever the user's module raises while importing
            raise _failed(f"Plugin '{spec}'", error, None) from None
    _LOADED[spec] = module
    return module


def _load_file(spec: str) -> ModuleType:
    path = Path(spec).expanduser()
    try:
        resolved = path.resolve()
        is_dir, is_file = resolved.is_dir(), resolved.is_file()
    except (OSError, ValueError):
        is_dir = is_file = False
        resolved = path
    key = str(resolved)
    if key in _LOADED:
        return _LOADED[key]
    if is_dir:
        raise PluginError(f"Plugin '{shorten(spec, 200)}' is a folder; give the .py file that registers your "
                          "models or methods, or an installed package's module name.")
    if not is_file:
        raise PluginError(f"Plugin '{shorten(spec, 200)}' does not exist (looked for '{shorten(resolved, 200)}'); "
                          "give the path to a .py file, or an installed module's name.")
    name = _module_name(resolved)
    module_spec = importlib.util.spec_from_file_location(name, resolved)
    if module_spec is None or module_spec.loader is None:
        raise PluginError(f"Plugin '{shorten(spec, 200)}' is not a Python file Python can import; give a .py file.")
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[name] = module  # dataclasses and pickling look their module up by name
    # a checkpoint records the absolute path: evaluate may run from another folder
    with loading_plugin(key):
        try:
            module_spec.loader.exec_module(module)
        except BaseException as error:
            sys.modules.pop(name, None)
            if not isinstance(error, Exception):  # Ctrl-C and SystemExit stay what they are
                raise
            raise _failed(f"Plugin '{shorten(spec, 200)}'", error, resolved) from None
    _LOADED[key] = module
    return module


def _module_name(path: Path) -> str:
    """A module name for a plugin file that no other module has: ``kdistill_plugin_<stem>[_N]``."""
    stem = re.sub(r"\W", "_", path.stem) or "plugin"
    name, n = f"kdistill_plugin_{stem}", 1
    while name in sys.modules:
        n += 1
        name = f"kdistill_plugin_{stem}_{n}"
    return name


def _failed(label: str, error: Exception, path: Path | None,
            fix: str = "Fix the plugin, or leave it out.") -> PluginError:
    """``label`` failed while importing: the error and the line of the plugin that raised it."""
    if isinstance(error, SyntaxError):
        where = f" (line {error.lineno})" if error.lineno else ""
        return PluginError(f"{label} has a syntax error{where}: {error.msg}. {fix}")
    frames = traceback.extract_tb(error.__traceback__)
    own = [f for f in frames if path is not None and Path(f.filename) == path] or frames[-1:]
    where = f" (at {shorten(own[-1].filename, 200)}, line {own[-1].lineno})" if own else ""
    text = shorten(str(error), 300)
    return PluginError(f"{label} failed while importing{where}: {type(error).__name__}"
                       f"{': ' + text if text else ''}. {fix}")


def load_entry_point_plugins(entries: Iterable[importlib.metadata.EntryPoint] | None = None) -> list[str]:
    """Load every installed ``kdistill.plugins`` entry point (or those of ``entries``); return their names."""
    names = []
    for entry in entries if entries is not None else importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        key = f"entry point {entry.name}={entry.value}"
        if key in _LOADED:
            names.append(entry.name)
            continue
        dist = getattr(entry, "dist", None)
        origin = f" from {dist.name} {dist.version}" if dist is not None else ""
        label = f"Installed plugin '{entry.name}' ({ENTRY_POINT_GROUP} entry point '{entry.value}'{origin})"
        with loading_plugin(entry.module):
            try:
                loaded = entry.load()
            except Exception as error:  # whatever the installed module raises while importing
                uninstall = f" (pip uninstall {dist.name})" if dist is not None else ""
                raise _failed(label, error, None, "An installed plugin loads on every command: fix it or "
                              f"uninstall its package{uninstall}.") from None
        _LOADED[key] = loaded if isinstance(loaded, ModuleType) else sys.modules[entry.module]
        names.append(entry.name)
    return names


def load_plugins(specs: list[str]) -> None:
    """What every command does first: the installed entry points, then each ``--plugin`` in order."""
    entries = importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)
    if specs or entries:
        load_builtins()
    load_entry_point_plugins(entries)
    for spec in specs:
        load_plugin(spec)


def load_builtins() -> None:
    """Register kdistill's own models, methods, data sets and schemes before any plugin's.

    They register when their packages are first imported; a plugin imported
    earlier could take a built-in name, and the built-in would then fail to
    register in the middle of a run instead of the plugin failing at once.
    """
    # imported here, not at the top: `kdistill --help` stays fast
    from kdistill.registry import load_builtins as load_registered
    from kdistill.schemes import scheme_names

    load_registered()
    scheme_names()
