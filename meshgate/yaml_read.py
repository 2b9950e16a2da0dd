"""YAML text -> Python data, with every YAML mistake as a located problem.

The fast path is libyaml (``CSafeLoader``) building data only: no node tree is kept, since
line numbers are needed only when something is wrong. For a 10,000-route file this took the
parse from ~10 s (PyYAML's pure-Python parser, twice) to well under 1 s. Before it, the text's
parser events are scanned against :class:`~meshgate.yaml_bounds.YamlLimits`, so that nothing
after (the duplicate-key report, pydantic, the compiler) can be made to do exponential work
or recurse without bound.

On an error, PyYAML's pure-Python parser re-reads small files for its wording, which the
invalid-config fixtures pin down; it is iterative and scanned with the same limits.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from typing import Any

import yaml
from yaml.events import Event

from meshgate.problems import ConfigError, Problem
from meshgate.redact import escape, excerpt, hide_values, looks_like_credential, redacted, show
from meshgate.yaml_bounds import DEFAULT_LIMITS, YamlLimits, check_events
from meshgate.yaml_locate import Loc, Position, duplicate_keys

#: Largest text re-read by PyYAML's pure-Python parser to word a syntax error (it reads about
#: 0.5 MB/s); for larger files libyaml's own message, as precise but terser, is used.
WORDING_MAX_CHARS = 256 * 1024


#: Longest key shown in a path; keys are names, but a hostile file may use anything.
PATH_PART_CHARS = 64


def _part(part: str) -> str:
    """A key as a path shows it: escaped, shortened, and never a credential-shaped text."""
    if looks_like_credential(part):
        return redacted(part)
    return excerpt(part, PATH_PART_CHARS)


def format_loc(loc: Loc) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{_part(part)}" if out else _part(part)
    return out


def problem(source: str, loc: Loc, message: str, pos: Position | None) -> Problem:
    """A problem at ``loc``, with its line and column when known."""
    line, col = pos if pos is not None else (None, None)
    return Problem(source, format_loc(loc), message, line, col)


class _DuplicateKeyError(Exception):
    """Raised by the fast loader; the precise report comes from :mod:`meshgate.yaml_locate`."""


_FastBase: type[Any] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _reason(exc: Exception, node: yaml.Node) -> str:
    text = str(exc)
    if "integer string conversion" in text:  # Python's guard against quadratic int parsing
        return f"an integer of more than {sys.get_int_max_str_digits()} digits"
    return excerpt(hide_values(text, [node.value]), 200)


class _LocatedValues:
    """Values YAML parses but Python cannot build (``2024-13-01`` read as a date, a list as a
    mapping key) become YAML errors that say where, instead of escaping as ValueError."""

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep=deep)  # type: ignore[misc]
        except (ValueError, TypeError) as exc:
            message = f"cannot read {show(node.value)} here: {_reason(exc, node)}"
            raise yaml.constructor.ConstructorError(None, None, message, node.start_mark) from None


class _CheckedLoader(_LocatedValues, yaml.SafeLoader):
    """PyYAML's pure-Python loader: slower, used to word errors."""


class _FastLoader(_LocatedValues, _FastBase):  # type: ignore[misc, valid-type]
    """libyaml's parser (when installed) plus a duplicate-key check."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> Any:
        keys = [k.value for k, _ in node.value if isinstance(k, yaml.ScalarNode)]
        if len(keys) != len(set(keys)):
            raise _DuplicateKeyError
        return super().construct_mapping(node, deep=deep)


_STR_TAG = "tag:yaml.org,2002:str"
_MAP_TAG = "tag:yaml.org,2002:map"
_SEQ_TAG = "tag:yaml.org,2002:seq"


class _Generic(Exception):
    """Something the fast builder leaves to PyYAML's constructor (a recursive alias)."""


def _build(loader: _FastLoader, node: yaml.Node, memo: dict[int, Any]) -> Any:
    """Plain mappings, lists and strings straight from the node tree; anything else (numbers,
    booleans, dates, merge keys) through the loader's constructor. PyYAML's generic
    constructor spent ~0.25 s of a 10,000-route file's 0.45 s on bookkeeping this skips.
    Aliased collections are built once and shared, as PyYAML does.
    """
    tag = node.tag
    if tag == _STR_TAG and isinstance(node, yaml.ScalarNode):
        return node.value
    if isinstance(node, yaml.MappingNode) and tag == _MAP_TAG:
        if id(node) in memo:
            return _shared(memo, node)
        if any(k.tag != _STR_TAG or not isinstance(k, yaml.ScalarNode) for k, _ in node.value):
            return loader.construct_object(node, deep=True)  # merge keys, non-string keys
        out: dict[str, Any] = {}
        memo[id(node)] = None  # in progress: seeing it again means a recursive alias
        for key, value in node.value:
            if key.value in out:
                raise _DuplicateKeyError
            out[key.value] = _build(loader, value, memo)
        memo[id(node)] = out
        return out
    if isinstance(node, yaml.SequenceNode) and tag == _SEQ_TAG:
        if id(node) in memo:
            return _shared(memo, node)
        memo[id(node)] = None
        items = [_build(loader, item, memo) for item in node.value]
        memo[id(node)] = items
        return items
    return loader.construct_object(node, deep=True)


def _shared(memo: dict[int, Any], node: yaml.Node) -> Any:
    built = memo[id(node)]
    if built is None:
        raise _Generic
    return built


def fast_load(text: str) -> Any:
    """libyaml's parser and composer, then :func:`_build`; PyYAML's own constructor for what
    the builder leaves to it. Same data, same errors as ``yaml.load(text, _FastLoader)``."""
    loader = _FastLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        try:
            return _build(loader, node, {})
        except (_Generic, RecursionError):
            return loader.construct_document(node)
    finally:
        loader.dispose()


def _reader_error(exc: yaml.reader.ReaderError, source: str, text: str) -> ConfigError:
    """A character YAML does not allow anywhere (NUL, DEL, other control characters).

    PyYAML counts the position in characters, libyaml in UTF-8 bytes.
    """
    pos = exc.position
    if exc.encoding != "unicode":
        pos = len(text.encode("utf-8")[:pos].decode("utf-8", errors="ignore"))
    line = text.count("\n", 0, pos) + 1
    col = pos - (text.rfind("\n", 0, pos) + 1) + 1
    char = exc.character if isinstance(exc.character, int) else 0
    message = (
        f"invalid YAML: the character '{escape(chr(char))}' (U+{char:04X}) is not allowed in a "
        "YAML file; write it as an escape in a double-quoted string"
    )
    return ConfigError([Problem(source, "", message, line, col)])


def yaml_error(exc: yaml.YAMLError, source: str, text: str = "") -> ConfigError:
    if isinstance(exc, yaml.reader.ReaderError):
        return _reader_error(exc, source, text)
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc)
    context = getattr(exc, "context", None)
    context_mark = getattr(exc, "context_mark", None)
    if "maximum nesting depth" in problem:  # libyaml's own limit (1000 levels)
        problem, context = "nesting deeper than libyaml's limit of 1000 levels", None
    if context and context_mark is not None and context_mark is not mark:
        # The error shows up where the parser gave up; the unclosed '[' or '{' it was
        # parsing is usually the actual mistake, so say where that began.
        context += f" started at line {context_mark.line + 1}, column {context_mark.column + 1}"
    message = f"invalid YAML: {problem}" + (f" ({context})" if context else "")
    line = mark.line + 1 if mark is not None else None
    col = mark.column + 1 if mark is not None else None
    return ConfigError([Problem(source, "", excerpt(message, 500), line, col)])


Tap = Callable[[Iterator[Event]], Iterator[Event]]


def _untapped(events: Iterator[Event]) -> Iterator[Event]:
    return events


def check_bounds(
    text: str, source: str, limits: YamlLimits = DEFAULT_LIMITS, tap: Tap = _untapped
) -> int:
    """Refuse text that would cost too much to build (see :mod:`meshgate.yaml_bounds`);
    return the number of nodes it builds. ``tap`` sees every parser event on the way (the
    include scan of :mod:`meshgate.config_files` reads the top-level keys there, so a file
    is streamed once for both)."""
    try:
        return check_events(tap(yaml.parse(text, Loader=_FastBase)), source, limits)
    except yaml.YAMLError as fast_exc:
        if len(text) <= WORDING_MAX_CHARS:
            try:
                check_events(yaml.parse(text, Loader=yaml.SafeLoader), source, limits)
            except yaml.YAMLError as exc:
                raise yaml_error(exc, source, text) from None
        raise yaml_error(fast_exc, source, text) from None


def read_yaml(text: str, source: str, limits: YamlLimits = DEFAULT_LIMITS) -> Any:
    """The data of ``text``, or :class:`ConfigError` for YAML mistakes and excesses."""
    check_bounds(text, source, limits)
    return load_checked(text, source)


def load_checked(text: str, source: str) -> Any:
    """The data of ``text`` whose bounds :func:`check_bounds` has accepted."""
    try:
        return fast_load(text)  # _FastLoader, a SafeLoader subclass
    except _DuplicateKeyError:
        found, count = duplicate_keys(text)
        problems = [
            problem(source, loc, "duplicate key (YAML keeps only the last one)", pos)
            for loc, pos in found
        ]
        if not problems:  # never an error without a reason, even if the walk missed it
            problems, count = [Problem(source, "", "duplicate key in a mapping")], 1
        raise ConfigError(problems, omitted=count - len(found)) from None
    except yaml.YAMLError as fast_exc:
        # Where PyYAML accepts what libyaml refused (e.g. a lone surrogate escape), libyaml's
        # reason stands. Safe to run: the bounds hold, so it cannot recurse deep or expand.
        if len(text) <= WORDING_MAX_CHARS:
            try:
                yaml.load(text, Loader=_CheckedLoader)
            except yaml.YAMLError as exc:
                raise yaml_error(exc, source, text) from None
        raise yaml_error(fast_exc, source, text) from None
