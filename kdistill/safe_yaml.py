"""Reading YAML that a user (or anyone who sent them a file) wrote: plain data, bounded in size.

:func:`load_yaml` is ``yaml.safe_load`` with four extra guarantees, each a
:class:`~kdistill.errors.ConfigError` with a one-line reason instead of a
traceback or gigabytes of memory:

* a document may expand to at most :data:`MAX_NODES` nodes and
  :data:`MAX_CHARS` characters of scalars *after* its aliases are expanded, so
  a "billion laughs" file (anchors referring to anchors) is refused while it is
  composed, before anything is built from it; recursive aliases are refused;
* nesting is at most :data:`MAX_DEPTH` levels (the composer is recursive);
* only plain data: tags that build bytes, dates, sets or ordered pairs
  (``!!binary``, ``!!timestamp``, ``!!set``, ``!!omap``, ``!!pairs``) are
  refused like ``!!python/...`` tags, and an unquoted date stays a string;
* a value that does not fit its tag (``!!int x``, ``!!float abc``,
  ``!!bool maybe``) or a key given twice is an error, not a crash or a
  silently dropped value;
* YAML 1.1's surprising number forms are not numbers: an unquoted ``1:00``
  stays that text (YAML 1.1 reads it as 60, base 60) and ``010`` is not the
  octal 8; a schema field that wants a number then refuses the text.

Messages give the line and column, never the text of the file.
"""

from __future__ import annotations

import re
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from kdistill.errors import ConfigError, quote

MAX_CONFIG_BYTES = 1 << 20  # 1 MiB: real experiment files are a few hundred bytes
MAX_NODES = 100_000
MAX_CHARS = 4 << 20
MAX_DEPTH = 64

_PLAIN_TAGS = "strings, numbers, booleans, null, lists and mappings"


class YamlRefused(yaml.YAMLError):
    """Raised while loading; :func:`load_yaml` turns it into a ConfigError."""


class YamlTagRefused(YamlRefused):
    """A tag that would build something other than plain data."""


def _where(node_or_mark: Any) -> str:
    mark = getattr(node_or_mark, "start_mark", node_or_mark)
    if mark is None:
        return ""
    return f"line {mark.line + 1}, column {mark.column + 1}"


def _children(node: Node) -> list[Node]:
    if isinstance(node, SequenceNode):
        return list(node.value)
    if isinstance(node, MappingNode):
        return [part for pair in node.value for part in pair]
    return []


def check_expanded_size(root: Node) -> None:
    """Refuse a node graph whose alias expansion exceeds the limits, or that contains itself.

    Sizes are memoised per node, so this is linear in the composed graph (which
    is at most the file's size) however many times the aliases multiply it.
    """
    sizes: dict[int, tuple[int, int]] = {}
    open_nodes: set[int] = set()
    stack: list[tuple[Node, bool]] = [(root, False)]
    while stack:
        node, finished = stack.pop()
        key = id(node)
        if finished:
            kids = _children(node)
            count = 1 + sum(sizes[id(k)][0] for k in kids)
            chars = (len(node.value) if isinstance(node, ScalarNode) else 0) + sum(sizes[id(k)][1] for k in kids)
            if count > MAX_NODES or chars > MAX_CHARS:
                raise YamlRefused(
                    f"its aliases expand to more than {MAX_NODES:,} values or {MAX_CHARS:,} characters "
                    f"(at {_where(node)}); an experiment file is a few hundred values, so this looks "
                    "like an alias bomb: write the values out, or use fewer anchors")
            sizes[key] = (count, chars)
            open_nodes.discard(key)
            continue
        if key in sizes:
            continue
        if key in open_nodes:
            raise YamlRefused(f"an alias at {_where(node)} refers to a value that contains it "
                              "(a recursive structure); configs must be trees")
        open_nodes.add(key)
        stack.append((node, True))
        stack.extend((kid, False) for kid in _children(node) if id(kid) not in sizes)


def _refuse_tag(loader: yaml.SafeLoader, node: Node) -> Any:
    raise YamlTagRefused(f"{node.tag.replace('tag:yaml.org,2002:', '!!')} at {_where(node)}")


# YAML 1.1's integers and floats without the base-60 forms (1:00 is 60) and C-style octals (010 is 8):
# what is left reads as a YAML 1.2 reader and a person would read it
_INT = re.compile(r"""^(?:[-+]?0b[0-1_]+
                    |[-+]?(?:0|[1-9][0-9_]*)
                    |[-+]?0x[0-9a-fA-F_]+)$""", re.X)
_FLOAT = re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+][0-9]+)?
                    |\.[0-9_]+(?:[eE][-+][0-9]+)?
                    |[-+]?\.(?:inf|Inf|INF)
                    |\.(?:nan|NaN|NAN))$""", re.X)
_REPLACED = {"tag:yaml.org,2002:int": _INT, "tag:yaml.org,2002:float": _FLOAT}


class BoundedSafeLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` with size, depth and plain-data limits (see the module docstring)."""

    # an unquoted 2024-01-01 stays the string it looks like, not a datetime.date
    yaml_implicit_resolvers = {
        first: [(tag, _REPLACED.get(tag, regexp)) for tag, regexp in resolvers
                if tag != "tag:yaml.org,2002:timestamp"]
        for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
    }

    def __init__(self, stream: Any) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: Node | None, index: Any) -> Node:
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise YamlRefused(f"it nests more than {MAX_DEPTH} levels deep "
                                  f"(at {_where(self.peek_event())})")
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def compose_document(self) -> Node:
        node = super().compose_document()
        check_expanded_size(node)
        return node

    def construct_object(self, node: Node, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep)
        # KeyError: !!bool with a word that is no boolean (maybe)
        except (ValueError, TypeError, OverflowError, ArithmeticError, KeyError) as error:
            shown = f"the value {quote(node.value)}" if isinstance(node, ScalarNode) else "a value"
            tag = node.tag.replace("tag:yaml.org,2002:", "!!")
            raise YamlRefused(f"{shown} at {_where(node)} cannot be read as {tag} "
                              f"({type(error).__name__})") from None

    def construct_mapping(self, node: Node, deep: bool = False) -> dict:
        if isinstance(node, MappingNode):
            self.flatten_mapping(node)
            seen: dict[Any, Node] = {}
            for key_node, _ in node.value:
                if not isinstance(key_node, ScalarNode):
                    continue
                key = self.construct_object(key_node)
                try:
                    if key in seen:
                        raise YamlRefused(f"the key {quote(key)} appears twice in one mapping "
                                          f"(at {_where(seen[key])} and {_where(key_node)}); "
                                          "YAML would silently keep the last one")
                    seen[key] = key_node
                except TypeError:
                    continue
        return super().construct_mapping(node, deep)


for _tag in ("binary", "timestamp", "set", "omap", "pairs"):
    BoundedSafeLoader.add_constructor(f"tag:yaml.org,2002:{_tag}", _refuse_tag)


def describe_yaml_error(error: yaml.YAMLError) -> str:
    """A one-line reason with line and column, without quoting the document."""
    if isinstance(error, YamlRefused):
        return str(error)
    if isinstance(error, yaml.MarkedYAMLError):
        parts = [p for p in (error.context, error.problem) if p]
        mark = error.problem_mark or error.context_mark
        where = f" at {_where(mark)}" if mark is not None else ""
        return f"{'; '.join(parts) or 'invalid YAML'}{where}"
    if isinstance(error, yaml.reader.ReaderError):
        return f"it holds a character YAML does not allow ({error.reason}, code {error.character!r})"
    return type(error).__name__


def load_yaml(text: str, source: str) -> Any:
    """Parse one YAML document of plain data; ``source`` starts every error message."""
    if len(text) > MAX_CONFIG_BYTES:
        raise ConfigError(f"{source} is {len(text):,} characters long; kdistill reads YAML of at most "
                          f"{MAX_CONFIG_BYTES:,} bytes (a config is a few hundred).")

    def refused(what: Any) -> str:
        return (f"{source} uses a YAML tag that kdistill refuses ({what}); configs are plain data "
                f"({_PLAIN_TAGS}) and can never construct objects or import code.")

    loader = None
    try:
        loader = BoundedSafeLoader(text)  # the reader checks every character here
        return loader.get_single_data()
    except YamlTagRefused as error:
        raise ConfigError(refused(error)) from None
    except yaml.constructor.ConstructorError as error:
        if error.problem and "constructor" in error.problem:
            tag = quote(error.problem.rsplit(" ", 1)[-1], 60)
            raise ConfigError(refused(f"{tag} at {_where(error.problem_mark)}")) from None
        raise ConfigError(f"{source} is not valid YAML: {describe_yaml_error(error)}.") from None
    except yaml.YAMLError as error:
        raise ConfigError(f"{source} is not valid YAML: {describe_yaml_error(error)}.") from None
    except RecursionError:
        raise ConfigError(f"{source} nests too deeply to read.") from None
    finally:
        if loader is not None:
            loader.dispose()
