"""The top-level ``include:`` key of a config file, read off the parser's event stream.

A file's includes decide which other files belong to the config, and so what its content
digest is. The compile worker answers "unchanged" for a touched but unchanged config without
building its data (a 100,000-route file takes seconds to build and validate), so the includes
must be known before the data is built. The bounds scan (:func:`meshgate.yaml_read.
check_bounds`) already streams every event of every file; :class:`IncludeTap` rides along on
that stream and keeps the entries of the top-level ``include`` key with their line and
column, and nothing else.

``include`` is a path or a list of paths (each may end in a ``*``/``?``/``[...]`` pattern);
anything else is a problem located at the entry.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

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

from meshgate.problems import MAX_PROBLEMS, Problem

#: The top-level key whose value names the other files of the config.
INCLUDE_KEY = "include"

#: Plain scalars YAML reads as null: an entry that names no file.
_NULLS = frozenset({"", "~", "null", "Null", "NULL"})
_STARTS = (MappingStartEvent, SequenceStartEvent)
_ENDS = (MappingEndEvent, SequenceEndEvent)


@dataclass(frozen=True)
class IncludeEntry:
    """One path written under ``include``, and where (``index`` None: ``include: a.yaml``)."""

    value: str
    index: int | None
    line: int
    column: int

    @property
    def path(self) -> str:
        return INCLUDE_KEY if self.index is None else f"{INCLUDE_KEY}[{self.index}]"

    def problem(self, source: str, message: str) -> Problem:
        return Problem(source, self.path, message, self.line, self.column)


def _pos(event: Event) -> tuple[int, int]:
    mark = event.start_mark
    return (mark.line + 1, mark.column + 1) if mark is not None else (0, 0)


@dataclass
class IncludeTap:
    """Passes events through unchanged, keeping the top-level ``include`` entries: at most
    ``max_entries`` of them and :data:`MAX_PROBLEMS` problems, the rest only counted (a
    hostile file may hold millions)."""

    source: str
    max_entries: int = 1000
    entries: list[IncludeEntry] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    #: entries beyond ``max_entries``; problems beyond MAX_PROBLEMS
    more_entries: int = 0
    more_problems: int = 0

    @property
    def count(self) -> int:
        return len(self.entries) + self.more_entries

    def _problem(self, found: Problem) -> None:
        if len(self.problems) < MAX_PROBLEMS:
            self.problems.append(found)
        else:
            self.more_problems += 1

    def __call__(self, events: Iterator[Event]) -> Iterator[Event]:
        depth = 0  # open collections
        top_is_map = False
        want_key = True  # in the top mapping: the next node at depth 1 is a key
        capture = False  # the next value at depth 1 is include's
        in_list = False  # inside include's list
        index = 0
        for event in events:
            yield event
            kind = type(event)
            if kind is DocumentStartEvent:
                depth, top_is_map, want_key, capture, in_list = 0, False, True, False, False
                continue
            if kind in _ENDS:
                depth -= 1
                if in_list and depth == 1:
                    in_list = False
                continue
            if kind not in (ScalarEvent, AliasEvent, *_STARTS):
                continue
            if depth == 0:
                top_is_map = kind is MappingStartEvent
            elif depth == 1 and top_is_map:
                if want_key:
                    capture = kind is ScalarEvent and event.value == INCLUDE_KEY  # type: ignore[attr-defined]
                else:
                    if capture:
                        in_list, index = self._value(event), 0
                    capture = False
                want_key = not want_key
            elif depth == 2 and in_list:
                self._entry(event, index)
                index += 1
            if kind in _STARTS:
                depth += 1

    def _value(self, event: Event) -> bool:
        """``include``'s value: one path, or a list (True: its entries follow)."""
        if isinstance(event, SequenceStartEvent):
            return True
        if isinstance(event, ScalarEvent):
            self._scalar(event, None)
        else:
            line, col = _pos(event)
            self._problem(
                Problem(
                    self.source,
                    INCLUDE_KEY,
                    "expected a file path or a list of file paths (relative to this file)",
                    line,
                    col,
                )
            )
        return False

    def _entry(self, event: Event, index: int) -> None:
        if isinstance(event, ScalarEvent):
            self._scalar(event, index)
            return
        line, col = _pos(event)
        what = "an alias" if isinstance(event, AliasEvent) else "a list or mapping"
        self._problem(
            Problem(
                self.source,
                f"{INCLUDE_KEY}[{index}]",
                f"expected a file path, got {what}",
                line,
                col,
            )
        )

    def _scalar(self, event: ScalarEvent, index: int | None) -> None:
        line, col = _pos(event)
        entry = IncludeEntry(event.value, index, line, col)
        plain = bool(event.implicit and event.implicit[0])
        if not event.value or (plain and event.value in _NULLS):
            self._problem(entry.problem(self.source, "empty; name a file to include"))
        elif "\0" in event.value:
            self._problem(entry.problem(self.source, "the path contains a NUL character"))
        elif len(self.entries) < self.max_entries:
            self.entries.append(entry)
        else:
            self.more_entries += 1
