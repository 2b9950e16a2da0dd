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
from typing import Any

import yaml

from meshgate.problems import MAX_PROBLEMS, ConfigError, Problem
from meshgate.redact import escape, excerpt, hide_values, show
from meshgate.yaml_bounds import DEFAULT_LIMITS, YamlLimits, check_events

Loc = tuple[str | int, ...]

#: Largest text re-read by PyYAML's pure-Python parser to word a syntax error (it reads about
#: 0.5 MB/s); for larger files libyaml's own message, as precise but terser, is used.
WORDING_MAX_CHARS = 256 * 1024


def format_loc(loc: Loc) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def node_at(root: yaml.Node | None, loc: Loc) -> yaml.Node | None:
    """The deepest YAML node along ``loc`` (the key node for a missing/extra mapping key)."""
    node = root
    last = len(loc) - 1
    for i, part in enumerate(loc):
        if isinstance(node, yaml.MappingNode):
            match = next(((k, v) for k, v in node.value if k.value == str(part)), None)
            if match is None:
                return node
            key, value = match
            node = value if i != last or isinstance(value, yaml.CollectionNode) else key
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
            if part >= len(node.value):
                return node
            node = node.value[part]
        else:
            return node
    return node


def problem_at(
    source: str, root: yaml.Node | None, loc: Loc, message: str, node: yaml.Node | None = None
) -> Problem:
    """A problem located at ``node``, or else at the node that ``loc`` leads to."""
    node = node if node is not None else node_at(root, loc)
    line = col = None
    if node is not None:
        line, col = node.start_mark.line + 1, node.start_mark.column + 1
    return Problem(source, format_loc(loc), message, line, col)


class _DuplicateKeyError(Exception):
    """Raised by the fast loader; the precise report comes from the node tree."""


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


def compose(text: str) -> yaml.Node | None:
    """The node tree, for line numbers; only built when a problem must be located (and only
    for text that passed :func:`read_yaml`'s bounds)."""
    return yaml.compose(text, Loader=_FastBase)


def duplicate_keys(root: yaml.Node | None) -> tuple[list[tuple[Loc, yaml.Node]], int]:
    """The first :data:`MAX_PROBLEMS` duplicate keys (path, key node) and how many there are.

    Each collection node is visited once, at the first path that reaches it: a duplicate
    inside an aliased mapping is one mistake at one place in the file, however often it is
    aliased (the alias bomb of issue 6 printed it 597,871 times).
    """
    found: list[tuple[Loc, yaml.Node]] = []
    count = 0
    visited: set[int] = set()

    def walk(node: yaml.Node, loc: Loc) -> None:
        nonlocal count
        if id(node) in visited:
            return
        visited.add(id(node))
        if isinstance(node, yaml.MappingNode):
            seen: set[str] = set()
            for key, value in node.value:
                if not isinstance(key, yaml.ScalarNode):
                    continue
                if key.value in seen:
                    count += 1
                    if len(found) < MAX_PROBLEMS:
                        found.append(((*loc, key.value), key))
                seen.add(key.value)
                walk(value, (*loc, key.value))
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                walk(item, (*loc, i))

    if root is not None:
        walk(root, ())  # recursion depth is bounded by YamlLimits.max_depth, checked before
    return found, count


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


def check_bounds(text: str, source: str, limits: YamlLimits = DEFAULT_LIMITS) -> None:
    """Refuse text that would cost too much to build (see :mod:`meshgate.yaml_bounds`)."""
    try:
        check_events(yaml.parse(text, Loader=_FastBase), source, limits)
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
    try:
        return yaml.load(text, Loader=_FastLoader)  # a SafeLoader subclass
    except _DuplicateKeyError:
        found, count = duplicate_keys(compose(text))
        problems = [
            problem_at(source, None, loc, "duplicate key (YAML keeps only the last one)", node)
            for loc, node in found
        ]
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
