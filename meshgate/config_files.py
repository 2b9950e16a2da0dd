"""Which files make up the config, and their text: a file, a directory, and what they include.

A security team owns its policies, a platform team its listeners: the config may be split
across files. The config path is either

- a **file**, read as ever; or
- a **directory**: every ``*.yaml`` / ``*.yml`` file directly in it (not in subdirectories;
  names starting with ``.`` are skipped, such as Kubernetes' ``..data``), in sorted name order;

and any file may name more files in a top-level ``include:`` (paths relative to it; a ``*``,
``?`` or ``[...]`` pattern in the file name part). Each file is read by the bounded reader of
:mod:`meshgate.files` (regular files only, never blocking), once it is left alone for
``settle`` seconds, and scanned against the YAML limits while its includes are read off the
same event stream (:mod:`meshgate.config_includes`). Nothing here builds data: the compile
worker compares the digest first and skips a config that did not change.

Bounds cover the whole set, not each file: at most ``max_files`` files, ``max_bytes`` bytes
and ``limits.max_nodes`` YAML nodes together; a directory listing stops after
:data:`MAX_DIR_ENTRIES` entries; includes nest at most :data:`MAX_INCLUDE_DEPTH` deep. A file
is part of the config once: an include cycle, or a file included twice (or included although
its directory already brings it in), is a precise problem at the ``include`` entry, and
the include entries of all files together are at most ``max_files`` (each names a file).

Every path looked at (files, listed directories, an include that names a missing file) is
returned with its stat signature, so the watcher can tell when any of them changes.
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import NoReturn

from meshgate.config_includes import IncludeEntry, IncludeTap
from meshgate.files import (
    DEFAULT_MAX_CONFIG_BYTES,
    Signature,
    file_kind,
    read_settled,
    signature,
)
from meshgate.problems import MAX_PROBLEMS, ConfigError, Problem
from meshgate.redact import excerpt
from meshgate.yaml_bounds import DEFAULT_LIMITS, YamlLimits
from meshgate.yaml_read import check_bounds

#: Default most files one config may be made of (directory files and includes together).
DEFAULT_MAX_CONFIG_FILES = 1000
#: Most entries read from one directory listing, config files or not.
MAX_DIR_ENTRIES = 100_000
#: Deepest chain of includes (a file including a file including ...).
MAX_INCLUDE_DEPTH = 16
#: Suffixes of the files a config directory contributes.
CONFIG_SUFFIXES = (".yaml", ".yml")

_MAGIC = frozenset("*?[")


@dataclass(frozen=True)
class ConfigFile:
    """One file of the config: the path problems name, and its text."""

    path: str
    text: str


@dataclass(frozen=True)
class ConfigFiles:
    """What was read: the files in order, the problems found, and every path looked at."""

    root: str
    files: tuple[ConfigFile, ...]
    #: YAML, bounds and include problems (content), and read problems (see ``unreadable``).
    problems: tuple[Problem, ...] = ()
    omitted: int = 0
    #: A file or directory could not be read at all: the content is not known.
    unreadable: bool = False
    #: Every path looked at, with its signature as read (None: missing); the watcher's list.
    watched: tuple[tuple[str, Signature | None], ...] = ()
    digest: str = ""

    @property
    def split(self) -> bool:
        """More than one file, or a directory: locations need the file of each part."""
        return len(self.files) != 1 or self.files[0].path != self.root

    def error(self) -> ConfigError:
        return ConfigError(self.problems, self.omitted)


def digest_of(files: tuple[ConfigFile, ...], single: bool) -> str:
    """The content digest (``meshgate status`` shows it): of the text for a single file, as
    it always was; of every file's path and text, framed by their lengths, for a set."""
    if single:
        return hashlib.sha256(files[0].text.encode()).hexdigest()[:12]
    h = hashlib.sha256()
    for f in files:
        for part in (f.path.encode(), f.text.encode()):
            h.update(len(part).to_bytes(8, "big"))
            h.update(part)
    return h.hexdigest()[:12]


def _quoted(path: str) -> str:
    return f"'{excerpt(path, 200)}'"


class _Full(Exception):
    """A bound of the whole set was crossed: stop reading."""


#: One file on the include chain: (real path, path as shown).
_Link = tuple[str, str]
_Accept = Callable[[str], bool]


@dataclass
class _Reader:
    max_bytes: int
    limits: YamlLimits
    settle: float
    max_files: int
    files: list[ConfigFile] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    unreadable: bool = False
    watched: dict[str, Signature | None] = field(default_factory=dict)
    #: real path -> how the file came in ("a file of the directory d", "included by a:3:5")
    members: dict[str, str] = field(default_factory=dict)
    omitted: int = 0
    size: int = 0
    nodes: int = 0
    #: include entries seen so far (each names at least one file, or is a mistake)
    entries: int = 0

    def fail(self, problem: Problem, *, unreadable: bool = True) -> None:
        self.note([problem])
        self.unreadable = self.unreadable or unreadable

    def note(self, found: list[Problem], omitted: int = 0) -> None:
        """Keep the first :data:`MAX_PROBLEMS` problems, count the rest: a hostile config's
        thousands of mistakes cost a counter, not memory."""
        room = max(0, MAX_PROBLEMS - len(self.problems))
        self.problems += found[:room]
        self.omitted += len(found) - len(found[:room]) + omitted

    # -- what the path names ---------------------------------------------------------------
    def root(self, path: str) -> None:
        try:
            is_dir = stat.S_ISDIR(os.stat(path).st_mode)
        except (OSError, ValueError):
            is_dir = False  # the reader words the reason
        if not is_dir:
            self.file(path, "the config path", ())
            return
        names = self.listing(path, None, path, _config_name)
        if names is None:
            return
        if not names:
            self.fail(
                Problem(path, "", "the directory holds no config file (*.yaml, *.yml)"),
                unreadable=False,
            )
        came = f"a file of the directory {path}"
        mine: list[str] = []
        for name in names:  # registered first: an include of a sibling is a mistake
            shown = os.path.join(path, name)
            real = os.path.realpath(shown)
            if real in self.members:
                self.fail(
                    Problem(
                        shown,
                        "",
                        f"the same file as {_quoted(self.members[real])} (a symbolic link to "
                        "it?); each file is part of the config once",
                    ),
                    unreadable=False,
                )
                continue
            self.members[real] = shown
            mine.append(shown)
        for shown in mine:
            self.members[os.path.realpath(shown)] = came
        for shown in mine:
            self.file(shown, came, (), member=True)

    def listing(
        self, directory: str, site: _Site | None, shown: str, accept: _Accept
    ) -> list[str] | None:
        """The sorted names in ``directory`` that ``accept`` takes; None if it cannot be
        listed (a problem at ``site``, the include entry that asked, says why)."""
        self.watched[directory] = signature(directory)
        names: list[str] = []
        try:
            with os.scandir(directory) as entries:
                for n, entry in enumerate(entries):
                    if n >= MAX_DIR_ENTRIES:
                        message = (
                            f"the directory {_quoted(directory)} has more than "
                            f"{MAX_DIR_ENTRIES} entries; a config directory holds the "
                            "config's files"
                        )
                        self._at(site, shown, message, unreadable=True)
                        return None
                    if accept(entry.name):
                        names.append(entry.name)
                        if len(names) > self.max_files:
                            self.too_many(shown, site)
        except (OSError, ValueError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            message = f"cannot list the directory {_quoted(directory)}: {reason}"
            self._at(site, shown, message, unreadable=True)
            return None
        return sorted(names)

    def too_many(self, where: str, site: _Site | None) -> NoReturn:
        message = (
            f"the config is made of more than {self.max_files} files "
            "(raise the limit with --max-config-files)"
        )
        self._at(site, where, message, unreadable=True)
        raise _Full

    # -- one file --------------------------------------------------------------------------
    def file(
        self,
        path: str,
        came: str,
        chain: tuple[_Link, ...],
        site: _Site | None = None,
        *,
        member: bool = False,
    ) -> None:
        real = os.path.realpath(path)
        if any(real == r for r, _ in chain):
            start = next(i for i, (r, _) in enumerate(chain) if r == real)
            loop = " -> ".join(_quoted(shown) for _, shown in (*chain[start:], (real, path)))
            self._at(site, path, f"include cycle: {loop}")
            return
        if real in self.members and not member:
            self._at(
                site, path, f"{_quoted(path)} is already part of the config ({self.members[real]})"
            )
            return
        if len(self.files) >= self.max_files:
            self.too_many(path, site)
        if site is not None and _kind(path) == "a directory":
            self.watched[path] = signature(path)
            pattern = site[1].value.rstrip("/") + "/*.yaml"
            self._at(
                site,
                path,
                f"{_quoted(path)} is a directory; to include its files, write {_quoted(pattern)}",
            )
            return
        text = self.read(path)
        if text is None:
            return
        self.members[real] = came
        self.files.append(ConfigFile(path, text))
        tap = IncludeTap(path, max_entries=self.max_files)
        try:
            self.count(check_bounds(text, path, self.limits, tap), path)
        except ConfigError as exc:
            self.note(exc.problems, exc.omitted)
            return  # a broken file's includes are not followed
        self.note(tap.problems, tap.more_problems)
        self.entries += tap.count
        if self.entries > self.max_files:
            message = (
                f"the config's includes name more than {self.max_files} files (raise the "
                "limit with --max-config-files)"
            )
            first = (path, tap.entries[0]) if tap.entries else None
            self._at(first, path, message, unreadable=True)
            raise _Full
        if tap.entries and len(chain) >= MAX_INCLUDE_DEPTH:
            self._at(
                (path, tap.entries[0]),
                path,
                f"includes nest more than {MAX_INCLUDE_DEPTH} files deep",
            )
            return
        for entry in tap.entries:
            self.include(path, entry, (*chain, (real, path)))

    def read(self, path: str) -> str | None:
        """The file's text within what is left of the byte budget; None after a problem."""
        left = self.max_bytes - self.size
        sig = signature(path)
        self.watched[path] = sig
        if sig is not None and left < sig[2] <= self.max_bytes:
            self.fail(
                Problem(
                    path,
                    "",
                    f"the config's files together are more than {self.max_bytes} bytes "
                    "(raise the limit with --max-config-bytes)",
                )
            )
            raise _Full
        # a file larger than the limit by itself is refused by the reader, in its words
        limit = self.max_bytes if sig is not None and sig[2] > self.max_bytes else left
        try:
            text, sig = read_settled(path, limit, self.settle)
        except ConfigError as exc:
            self.note(exc.problems, exc.omitted)
            self.unreadable = True
            return None
        self.watched[path] = sig
        self.size += len(text.encode())
        return text

    def count(self, nodes: int, path: str) -> None:
        self.nodes += nodes
        if self.nodes > self.limits.max_nodes:
            self.fail(
                Problem(
                    path,
                    "",
                    f"with the files before it, the config has more than "
                    f"{self.limits.max_nodes} YAML nodes (keys, values and collections)",
                ),
                unreadable=False,
            )
            raise _Full

    def _at(self, site: _Site | None, path: str, message: str, *, unreadable: bool = False) -> None:
        """A problem at the include entry that brought ``path`` in (at ``path`` itself
        when it came from the directory)."""
        found = site[1].problem(site[0], message) if site else Problem(path, "", message)
        self.fail(found, unreadable=unreadable)

    # -- includes --------------------------------------------------------------------------
    def include(self, including: str, entry: IncludeEntry, chain: tuple[_Link, ...]) -> None:
        target = os.path.normpath(os.path.join(os.path.dirname(including), entry.value))
        head, tail = os.path.split(target)
        came = f"included by {including}:{entry.line}:{entry.column}"
        site = (including, entry)
        if _MAGIC & set(head):
            message = "a pattern (*, ?, [...]) may only be in the file name, not in a directory"
            self._at(site, target, message)
            return
        if not _MAGIC & set(tail):
            if not os.path.lexists(target):
                self.watched[target] = None
                self._at(site, target, f"{_quoted(target)}: file not found", unreadable=True)
                return
            self.file(target, came, chain, site)
            return
        names = self.listing(head or ".", site, including, _matcher(tail))
        if names is None:
            return
        if not names:
            self._at(site, target, f"{_quoted(target)} matches no file", unreadable=True)
        for name in names:
            self.file(os.path.join(head, name), came, chain, site)


#: Where an include entry is written: (the including file, the entry).
_Site = tuple[str, IncludeEntry]


def _config_name(name: str) -> bool:
    return not name.startswith(".") and name.endswith(CONFIG_SUFFIXES)


def _matcher(pattern: str) -> _Accept:
    hidden = pattern.startswith(".")
    return lambda name: (hidden or not name.startswith(".")) and fnmatchcase(name, pattern)


def _kind(path: str) -> str | None:
    try:
        st = os.stat(path)
    except (OSError, ValueError):
        return None
    return None if stat.S_ISREG(st.st_mode) else file_kind(st.st_mode)


def read_config_files(
    path: str | os.PathLike[str],
    max_bytes: int = DEFAULT_MAX_CONFIG_BYTES,
    limits: YamlLimits = DEFAULT_LIMITS,
    *,
    settle: float = 0.0,
    max_files: int = DEFAULT_MAX_CONFIG_FILES,
) -> ConfigFiles:
    """The config's files as they are now, with every problem met on the way; never raises
    :class:`ConfigError` (the caller decides: see :attr:`ConfigFiles.unreadable`)."""
    root = os.fspath(path)
    reader = _Reader(max_bytes, limits, settle, max_files)
    try:
        reader.root(root)
    except _Full:
        pass
    files = tuple(reader.files)
    error = ConfigError(reader.problems, reader.omitted) if reader.problems else None
    single = len(files) == 1 and files[0].path == root
    return ConfigFiles(
        root,
        files,
        tuple(error.problems) if error else (),
        error.omitted if error else 0,
        reader.unreadable,
        tuple(reader.watched.items()),
        digest_of(files, single) if files else "empty",
    )
