"""Bound the work a YAML text can cause before any Python data is built from it.

YAML aliases make a DAG out of a tree: ``a: &a [...]`` then ``b: &b [*a, *a, ...]`` nine times
deep is a 300-byte file whose *expanded* tree has billions of nodes. Building the data is
still linear (PyYAML shares the aliased objects), but everything that walks it as a tree
afterwards (pydantic, the duplicate-key report, the compiler) does the exponential work: one
such file took 11 s and 337 MB and printed 597,871 errors. Deep nesting (``[`` x 100,000)
makes the pure-Python parts recurse until ``RecursionError``, and a flat list of millions of
scalars costs gigabytes as a node tree.

So the text is first read as a stream of parser events (libyaml's parser, iterative, one
event object at a time and nothing kept), counting as it goes:

- **depth**: open collections, including the depth an alias brings with it;
- **nodes**: every scalar and collection of the *expanded* tree, an alias counting as the full
  size of what it names (sizes are remembered per anchor, so this is linear in the text);
- **aliases**: how many there are;
- **recursion**: an alias naming a collection that is still open (``&a [*a]``) would make a
  cyclic structure.

The first limit crossed stops the scan with a precise problem at the event's line:column.
The scan costs about a tenth of the full load of the same text (see docs/performance.md).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import NoReturn, Protocol

from yaml.events import (
    AliasEvent,
    DocumentStartEvent,
    Event,
    MappingEndEvent,
    MappingStartEvent,
    ScalarEvent,
    SequenceEndEvent,
    SequenceStartEvent,
)

from meshgate.problems import ConfigError, Problem
from meshgate.redact import excerpt


@dataclass(frozen=True)
class YamlLimits:
    """How much work one config text may cause (see docs/configuration.md, "Limits")."""

    #: Nested collections; a real config is under 15 deep.
    max_depth: int = 100
    #: Nodes of the expanded tree (keys, values, collections). A 100,000-route file has about
    #: 1,100,000, so this is room for ~270,000 routes; loading costs ~2-5 us a node in the
    #: compile worker (off the event loop), so a file at the limit loads in seconds there, and
    #: a flat list of tens of millions of scalars is refused while streaming.
    max_nodes: int = 3_000_000
    #: Aliases (``*name``), merge keys (``<<: *name``) included.
    max_aliases: int = 100_000
    #: Nodes that aliases may add to the tree: this many, or ``alias_ratio`` times the nodes
    #: written out in the text so far, whichever is more. A shared block reused by every
    #: route stays well within it; a 1 kB file cannot make pydantic check a million nodes.
    max_alias_nodes: int = 100_000
    alias_ratio: int = 10


DEFAULT_LIMITS = YamlLimits()


class _Mark(Protocol):
    """Where an event starts (libyaml's and PyYAML's marks both have these)."""

    @property
    def line(self) -> int: ...
    @property
    def column(self) -> int: ...


_START = (MappingStartEvent, SequenceStartEvent)
_END = (MappingEndEvent, SequenceEndEvent)


def _alias(name: str) -> str:
    return f"*{excerpt(name)}"


def _at(mark: _Mark | None) -> str:
    return f"line {mark.line + 1}, column {mark.column + 1}" if mark is not None else "?"


class _Open:
    """A collection whose end has not been seen yet."""

    __slots__ = ("anchor", "height", "size")

    def __init__(self, anchor: str | None) -> None:
        self.anchor = anchor
        self.size = 1
        self.height = 1


class _Scan:
    """The counters of one pass; ``run`` raises :class:`ConfigError` at the first excess."""

    def __init__(self, limits: YamlLimits, source: str) -> None:
        self.limits = limits
        self.source = source
        self.nodes = 0
        self.aliases = 0
        self.alias_nodes = 0
        self.stack: list[_Open] = []
        self.open_anchors: dict[str, _Mark | None] = {}
        #: anchor -> (expanded size, height) of the node it names.
        self.anchors: dict[str, tuple[int, int]] = {}

    def fail(self, message: str, mark: _Mark | None) -> NoReturn:
        line = mark.line + 1 if mark is not None else None
        col = mark.column + 1 if mark is not None else None
        raise ConfigError([Problem(self.source, "", message, line, col)])

    def _too_many_nodes(self, mark: _Mark | None, alias: str | None = None) -> NoReturn:
        n = self.limits.max_nodes
        if alias is not None:
            self._too_much_expansion(n, alias, mark)
        self.fail(f"the YAML has more than {n} nodes (keys, values and collections)", mark)

    def _too_much_expansion(self, n: int, alias: str, mark: _Mark | None) -> NoReturn:
        self.fail(f"aliases expand to more than {n} nodes (alias {alias} at {_at(mark)})", mark)

    def run(self, events: Iterable[Event]) -> None:
        max_nodes, max_depth = self.limits.max_nodes, self.limits.max_depth
        stack = self.stack
        for ev in events:
            kind = type(ev)
            if kind is ScalarEvent:
                self.nodes += 1
                if self.nodes > max_nodes:
                    self._too_many_nodes(ev.start_mark)
                if stack:
                    stack[-1].size += 1
                anchor = ev.anchor  # type: ignore[attr-defined]
                if anchor:
                    self.anchors[anchor] = (1, 0)
            elif kind in _START:
                self.nodes += 1
                if self.nodes > max_nodes:
                    self._too_many_nodes(ev.start_mark)
                if len(stack) >= max_depth:
                    self.fail(f"nesting deeper than {max_depth} levels", ev.start_mark)
                anchor = ev.anchor  # type: ignore[attr-defined]
                stack.append(_Open(anchor))
                if anchor:
                    self.open_anchors[anchor] = ev.start_mark
            elif kind in _END:
                done = stack.pop()
                self._close(done.size, done.height)
                if done.anchor:
                    self.open_anchors.pop(done.anchor, None)
                    self.anchors[done.anchor] = (done.size, done.height)
            elif kind is AliasEvent:
                self._alias(ev)
            elif kind is DocumentStartEvent:
                self.anchors.clear()

    def _close(self, size: int, height: int) -> None:
        """Add a finished node (or an alias's expansion) to the collection around it."""
        if self.stack:
            parent = self.stack[-1]
            parent.size += size
            if height + 1 > parent.height:
                parent.height = height + 1

    def _alias(self, ev: Event) -> None:
        limits = self.limits
        name: str = ev.anchor  # type: ignore[attr-defined]
        self.aliases += 1
        if self.aliases > limits.max_aliases:
            self.fail(f"more than {limits.max_aliases} aliases", ev.start_mark)
        if name in self.open_anchors:
            self.fail(
                f"alias {_alias(name)} refers to a collection that contains it (anchor "
                f"&{excerpt(name)} at {_at(self.open_anchors[name])}); a config cannot be "
                "a recursive structure",
                ev.start_mark,
            )
        # An undefined alias counts as one node; the parser reports it right after.
        size, height = self.anchors.get(name, (1, 0))
        if len(self.stack) + height > limits.max_depth:
            self.fail(
                f"nesting deeper than {limits.max_depth} levels (through alias {_alias(name)})",
                ev.start_mark,
            )
        self.nodes += size
        if self.nodes > limits.max_nodes:
            self._too_many_nodes(ev.start_mark, _alias(name))
        self.alias_nodes += size
        written = self.nodes - self.alias_nodes
        allowed = max(limits.max_alias_nodes, limits.alias_ratio * written)
        if self.alias_nodes > allowed:
            self._too_much_expansion(allowed, _alias(name), ev.start_mark)
        self._close(size, height)


def check_events(events: Iterable[Event], source: str, limits: YamlLimits = DEFAULT_LIMITS) -> int:
    """Raise :class:`ConfigError` if the event stream crosses a limit; YAML syntax errors
    raised by the parser while iterating pass through unchanged. Returns the number of nodes
    of the expanded tree, so that the files of one config can share one budget."""
    scan = _Scan(limits, source)
    scan.run(events)
    return scan.nodes
