"""Line and column of config paths, found on the YAML event stream instead of a node tree.

Locating a problem used to mean composing the whole node tree again: for a file near the size
limit with a problem in every entry, that was seconds of work and hundreds of megabytes just
to print 100 line numbers. The parser's events carry the same marks, so one streaming pass
that follows only the paths asked for (and skips every other subtree) finds them, keeping
nothing but those marks. The same pass finds duplicate keys: each mapping of the text is seen
once, so a duplicate inside an aliased mapping is one problem at the place it is written.

A path is located as a reader expects: a scalar by the key that names it (``port:``), a
mapping or list by its first line, and a path that does not exist (a missing field) by the
deepest part of it that does. An alias is located where the alias is written.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import yaml
from yaml.events import (
    AliasEvent,
    DocumentStartEvent,
    MappingEndEvent,
    MappingStartEvent,
    ScalarEvent,
    SequenceEndEvent,
    SequenceStartEvent,
)

from meshgate.problems import MAX_PROBLEMS

Loc = tuple[str | int, ...]
Position = tuple[int, int]

_Loader: type[Any] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


_STARTS = (MappingStartEvent, SequenceStartEvent)
_ENDS = (MappingEndEvent, SequenceEndEvent)
_NODES = (ScalarEvent, AliasEvent, MappingStartEvent, SequenceStartEvent)


def _pos(event: Any) -> Position:
    mark = event.start_mark
    return mark.line + 1, mark.column + 1


class _Frame:
    """An open collection: its path, where its next child goes, the keys it has so far."""

    __slots__ = ("is_map", "key", "key_pos", "next_index", "path", "relevant", "seen", "want_key")

    def __init__(self, path: Loc | None, is_map: bool) -> None:
        self.path = path  # None: nothing asked for lies under it
        self.is_map = is_map
        self.want_key = is_map
        self.key: str | int | None = None
        self.key_pos: Position | None = None
        self.next_index = 0
        self.seen: set[Any] = set()
        self.relevant = path is not None


class _Walk:
    def __init__(self, wanted: set[Loc] | None) -> None:
        #: The paths asked for and all their prefixes; None: every path (duplicate keys).
        self.prefixes: set[Loc] | None = None
        if wanted is not None:
            self.prefixes = {loc[:i] for loc in wanted for i in range(len(loc) + 1)}
        #: path -> (position of the node, position of the key naming it, is a collection)
        self.found: dict[Loc, tuple[Position, Position | None, bool]] = {}
        self.duplicates: list[tuple[Loc, Position]] = []
        self.duplicate_count = 0
        #: anchor -> value of the scalars anchored so far, for an alias used as a key
        #: (``&k name: a`` then ``*k : b`` in the same mapping is a duplicate of ``name``).
        self.scalar_anchors: dict[str, str] = {}

    def _child_path(self, frame: _Frame | None) -> Loc | None:
        if frame is None:
            return ()
        if frame.path is None:
            return None
        part = frame.key if frame.is_map else frame.next_index
        if part is None:  # a complex (non-scalar) key's value: nothing asked for lies there
            return None
        path = (*frame.path, part)
        if self.prefixes is not None and path not in self.prefixes:
            return None
        return path

    def _node(self, stack: list[_Frame], event: Any, is_collection: bool) -> Loc | None:
        """Record a value node; return its path (None when irrelevant)."""
        frame = stack[-1] if stack else None
        path = self._child_path(frame)
        if path is not None and self.prefixes is not None and path not in self.found:
            key_pos = frame.key_pos if frame is not None and frame.is_map else None
            self.found[path] = (_pos(event), key_pos, is_collection)
        if frame is not None:
            if frame.is_map:
                frame.want_key = True
            else:
                frame.next_index += 1
        return path

    def _key(self, frame: _Frame, event: Any) -> None:
        frame.want_key = False
        if isinstance(event, ScalarEvent):
            value: str | None = event.value
        elif isinstance(event, AliasEvent):
            value = self.scalar_anchors.get(event.anchor or "")
        else:
            value = None
        if value is None:  # a complex key, or an alias of one
            frame.key = frame.key_pos = None
            return
        frame.key, frame.key_pos = value, _pos(event)
        if self.prefixes is None and frame.path is not None:
            if value in frame.seen:
                self.duplicate_count += 1
                if len(self.duplicates) < MAX_PROBLEMS:
                    self.duplicates.append(((*frame.path, value), _pos(event)))
            frame.seen.add(value)

    def run(self, text: str) -> None:
        stack: list[_Frame] = []
        # Complex keys (a mapping or list used as a key) are skipped whole.
        skip = 0
        for event in yaml.parse(text, Loader=_Loader):
            kind = type(event)
            if isinstance(event, ScalarEvent) and event.anchor is not None:
                self.scalar_anchors[event.anchor] = event.value
            if skip:
                if kind in _STARTS:
                    skip += 1
                elif kind in _ENDS:
                    skip -= 1
                continue
            if kind in _ENDS:
                stack.pop()
                continue
            if kind not in _NODES:
                if kind is DocumentStartEvent:
                    stack.clear()
                continue
            frame = stack[-1] if stack else None
            if frame is not None and frame.want_key:
                self._key(frame, event)
                if kind in _STARTS:
                    skip = 1
                continue
            is_collection = kind in _STARTS
            path = self._node(stack, event, is_collection)
            if is_collection:
                stack.append(_Frame(path, kind is MappingStartEvent))

    def position(self, loc: Loc) -> Position | None:
        for i in range(len(loc), -1, -1):
            hit = self.found.get(loc[:i])
            if hit is None:
                continue
            pos, key_pos, is_collection = hit
            if i == len(loc) and key_pos is not None and not is_collection:
                return key_pos
            return pos
        return None


def positions(text: str, locs: Iterable[Loc]) -> dict[Loc, Position]:
    """Where each of ``locs`` is written in ``text`` (text that loaded, so it parses);
    a path that cannot be placed at all is left out."""
    wanted = set(locs)
    walk = _Walk(wanted)
    walk.run(text)
    out: dict[Loc, Position] = {}
    for loc in wanted:
        pos = walk.position(loc)
        if pos is not None:
            out[loc] = pos
    return out


def duplicate_keys(text: str) -> tuple[list[tuple[Loc, Position]], int]:
    """The first :data:`MAX_PROBLEMS` duplicate keys (path, position of the second key) and
    how many there are in all."""
    walk = _Walk(None)
    walk.run(text)
    return walk.duplicates, walk.duplicate_count
