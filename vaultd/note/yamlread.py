"""YAML as vaultd reads it from notes: PyYAML's safe loader, with aliases bounded. Pure.

An alias (``*a``) stands for the whole value its anchor (``&a``) names, so a few hundred
bytes of aliases to aliases (a "billion laughs") stand for billions of values: loading
them is cheap, but anything that walks the value afterwards (a copy, ``json.dumps``, a
rendering) runs out of memory. Every document vaultd reads from a note (a property's
value, a measures block, a measure's field, an earlier result's header) goes through
these loaders, which refuse a document whose aliases add more than
:data:`MAX_ALIAS_VALUES` values, or which holds itself, with a :class:`AliasError`
(a ``yaml.YAMLError`` that has a ``problem`` and a ``problem_mark``, as PyYAML's own errors
do, so callers report it as any other YAML error).
"""

from __future__ import annotations

from typing import Any

import yaml

MAX_ALIAS_VALUES = 10_000


class AliasError(yaml.MarkedYAMLError):
    """Aliases that would expand beyond :data:`MAX_ALIAS_VALUES`, or a value inside itself."""


def check_aliases(root: yaml.Node | None) -> None:
    """Raise :class:`AliasError` if ``root``'s aliases expand too far (see the module)."""
    if root is None:
        return
    sizes: dict[int, int] = {}  # node id -> values in it, aliases expanded; -1 while open
    added = 0

    def size(node: yaml.Node, parent: yaml.Node) -> int:
        nonlocal added
        known = sizes.get(id(node))
        if known is not None:  # a second reference to it: an alias
            if known < 0:
                raise AliasError(None, None, "an alias refers to a value that holds it",
                                 parent.start_mark)
            added += known
            if added > MAX_ALIAS_VALUES:
                raise AliasError(None, None, f"its aliases stand for more than "
                                 f"{MAX_ALIAS_VALUES:,} values (remove the aliases)",
                                 parent.start_mark)
            return known
        sizes[id(node)] = -1
        total = 1
        if isinstance(node, yaml.SequenceNode):
            for child in node.value:
                total += size(child, node)
        elif isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                total += size(key, node) + size(value, node)
        sizes[id(node)] = total
        return total

    size(root, root)


class _Bounded(yaml.composer.Composer):
    def compose_document(self) -> Any:
        node = super().compose_document()
        check_aliases(node)
        return node


class SafeLoader(_Bounded, yaml.SafeLoader):
    """``yaml.SafeLoader`` with aliases bounded."""


class TextLoader(_Bounded, yaml.BaseLoader):
    """``yaml.BaseLoader`` (every scalar as text) with aliases bounded."""


def load(text: str) -> Any:
    """``yaml.safe_load(text)``, with aliases bounded."""
    return yaml.load(text, Loader=SafeLoader)


def load_text(text: str) -> Any:
    """``text`` with every scalar as text (``yaml.BaseLoader``), with aliases bounded."""
    return yaml.load(text, Loader=TextLoader)


def compose(text: str) -> yaml.Node | None:
    """``text``'s node graph (marks give the lines), with aliases bounded."""
    node: yaml.Node | None = yaml.compose(text, Loader=SafeLoader)
    return node
