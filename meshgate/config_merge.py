"""Many files' data -> one config, remembering which file wrote each part.

The top-level lists (``listeners``, ``services``, ``policies``...: every list field of
:class:`~meshgate.config.GatewayConfig`) are joined in file order; any other top-level key may
be set by one file only. Validation and the cross-reference checks then run on the merged
data as if it were one file, and :class:`Origins` maps each path they report
(``policies[7].rules``) back to the file and that file's own path (``policies[2].rules`` of
``policies/payments.yaml``), where the YAML marks give its line and column. Pure: no I/O.
"""

from __future__ import annotations

import typing
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from typing import Any

from meshgate.config import GatewayConfig
from meshgate.problems import ConfigError, Problem
from meshgate.yaml_locate import Loc, Position, positions
from meshgate.yaml_read import problem


def _list_fields() -> tuple[str, ...]:
    return tuple(
        name
        for name, info in GatewayConfig.model_fields.items()
        if typing.get_origin(info.annotation) is list
    )


#: The top-level keys whose lists several files may add to.
LIST_KEYS = _list_fields()


@dataclass(frozen=True)
class SourceText:
    """A file as problems name it, and its text (for line numbers)."""

    path: str
    text: str


@dataclass
class Origins:
    """Which file wrote each part of the merged config, and where in it."""

    root: str
    files: tuple[SourceText, ...]
    #: list key -> (file index, index in that file's list) per merged index
    items: dict[str, list[tuple[int, int]]] = field(default_factory=dict)
    #: top-level key -> the file that set it (the first, for a list key)
    keys: dict[str, int] = field(default_factory=dict)
    _found: dict[int, dict[Loc, Position]] = field(default_factory=dict)

    @classmethod
    def single(cls, path: str, text: str) -> Origins:
        """One file: every path is its own."""
        return cls(path, (SourceText(path, text),))

    @property
    def split(self) -> bool:
        return len(self.files) != 1 or self.files[0].path != self.root

    def origin(self, loc: Loc) -> tuple[int | None, Loc]:
        """(index of the file that wrote ``loc``, the path there); None: no one file did
        (a required top-level key no file sets)."""
        if not self.split:
            return 0, loc
        if not loc:
            return None, loc
        key = loc[0]
        merged = self.items.get(key) if isinstance(key, str) else None
        if merged is not None and len(loc) > 1 and isinstance(loc[1], int):
            if 0 <= loc[1] < len(merged):
                index, local = merged[loc[1]]
                return index, (key, local, *loc[2:])
        if isinstance(key, str) and key in self.keys:
            return self.keys[key], loc
        return None, loc

    def problems(self, found: Sequence[tuple[Loc, str]], omitted: int = 0) -> ConfigError:
        """Each (merged path, message) as a problem at its file's line and column: one
        streaming pass per file that has any (see :func:`~meshgate.yaml_locate.positions`)."""
        placed = [(self.origin(loc), message) for loc, message in found]
        wanted: dict[int, set[Loc]] = {}
        for (index, local), _ in placed:
            if index is not None:
                wanted.setdefault(index, set()).add(local)
        where = {i: positions(self.files[i].text, locs) for i, locs in wanted.items()}
        out: list[Problem] = []
        for (index, local), message in placed:
            if index is None:
                out.append(problem(self.root, local, message, None))
            else:
                out.append(problem(self.files[index].path, local, message, where[index].get(local)))
        return ConfigError(out, omitted)

    def written_at(self, loc: Loc) -> str:
        """``file:line`` of a merged path, for messages that point at a second place
        ("first defined at policies/a.yaml:4"); positions are found once per file."""
        index, local = self.origin(loc)
        if index is None:
            return self.root
        if index not in self._found:
            every = [
                (k, i, "name") for k, pairs in self.items.items() for f, i in pairs if f == index
            ]
            self._found[index] = positions(self.files[index].text, [*every, local])
        pos = self._found[index].get(local)
        if pos is None:
            self._found[index].update(positions(self.files[index].text, [local]))
            pos = self._found[index].get(local)
        path = self.files[index].path
        return f"{path}:{pos[0]}" if pos is not None else path


def _kind(value: Any) -> str:
    if value is None:
        return "nothing"
    if isinstance(value, dict):
        return "a mapping"
    return f"a {type(value).__name__}"


#: What an unknown key is told (the loader words pydantic's ``extra_forbidden`` the same).
UNKNOWN_FIELD = "unknown field (check the spelling; see docs/configuration.md)"


def merge(
    datas: Sequence[tuple[int, dict[str, Any]]],
    origins: Origins,
    list_keys: Collection[str] = LIST_KEYS,
    known: Collection[str] = frozenset(GatewayConfig.model_fields),
) -> tuple[dict[str, Any], list[Problem]]:
    """One config's data from each file's top mapping (``(file index, data)`` in order),
    filling ``origins``; and the problems of the joining: a key set by two files, a list key
    that is not a list. An unknown key is left to validation where it first appears (it
    says so, at that place) and reported here where it appears again."""
    merged: dict[str, Any] = {}
    issues: list[tuple[Loc, str, int]] = []  # (path in the file, message, file index)
    for index, data in datas:
        for key, value in data.items():
            if key in list_keys:
                if not isinstance(value, list):
                    message = (
                        f"expected a list, got {_kind(value)} (the '{key}' lists of the "
                        "config's files are joined into one)"
                    )
                    issues.append(((key,), message, index))
                    continue
                origins.keys.setdefault(key, index)
                pairs = origins.items.setdefault(key, [])
                pairs.extend((index, local) for local in range(len(value)))
                merged.setdefault(key, []).extend(value)
            elif key not in origins.keys:
                origins.keys[key] = index
                merged[key] = value
            elif key not in known:
                issues.append(((key,), UNKNOWN_FIELD, index))
            else:
                issues.append(((key,), _set_twice(origins, key, list_keys), index))
    return merged, _placed(origins, issues)


def _set_twice(origins: Origins, key: str, list_keys: Collection[str]) -> str:
    return (
        f"already set in {origins.written_at((key,))}; a top-level key other than the lists "
        f"({', '.join(list_keys)}) is written in one file only"
    )


def _placed(origins: Origins, issues: list[tuple[Loc, str, int]]) -> list[Problem]:
    by_file: dict[int, set[Loc]] = {}
    for loc, _, index in issues:
        by_file.setdefault(index, set()).add(loc)
    where = {i: positions(origins.files[i].text, locs) for i, locs in by_file.items()}
    return [
        problem(origins.files[index].path, loc, message, where[index].get(loc))
        for loc, message, index in issues
    ]
