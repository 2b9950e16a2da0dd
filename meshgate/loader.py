"""Read a config file and say precisely what is wrong with it: file, line, path, reason.

Every problem is collected (YAML syntax, duplicate keys, schema, cross-references) so an
operator fixes a file in one pass. Locations come from PyYAML's node tree, so an error in
``listeners[0].virtual_hosts[0].routes[3].service`` also says which line of the file that is.
"""

from __future__ import annotations

import hashlib
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import yaml
from pydantic import ValidationError

from meshgate.config import GatewayConfig, reference_errors
from meshgate.problems import ConfigError, ConfigProblem, Problem

__all__ = [
    "ConfigError",
    "ConfigProblem",
    "LoadedConfig",
    "Problem",
    "format_loc",
    "load_config",
    "parse_config",
    "position",
]

Loc = tuple[str | int, ...]


@dataclass(frozen=True)
class LoadedConfig:
    config: GatewayConfig
    source: str
    digest: str


def format_loc(loc: Loc) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def _node_at(root: yaml.Node | None, loc: Loc) -> yaml.Node | None:
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


def position(text: str, loc: Loc) -> tuple[int | None, int | None]:
    """Line and column (1-based) of what ``loc`` names in the YAML ``text`` (the key, for a
    scalar), for problems found after loading, e.g. by Envoy; ``(None, None)`` if not found."""
    try:
        node = _node_at(_compose(text), loc)
    except yaml.YAMLError:
        return None, None
    if node is None:
        return None, None
    return node.start_mark.line + 1, node.start_mark.column + 1


def _duplicate_keys(node: yaml.Node | None, loc: Loc = ()) -> list[tuple[Loc, yaml.Node]]:
    found: list[tuple[Loc, yaml.Node]] = []
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key, value in node.value:
            if key.value in seen:
                found.append(((*loc, key.value), key))
            seen.add(key.value)
            found += _duplicate_keys(value, (*loc, key.value))
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            found += _duplicate_keys(item, (*loc, i))
    return found


def _problem(
    source: str, root: yaml.Node | None, loc: Loc, message: str, node: yaml.Node | None = None
) -> ConfigProblem:
    """A problem located at ``node``, or else at the node that ``loc`` leads to."""
    node = node if node is not None else _node_at(root, loc)
    line = col = None
    if node is not None:
        line, col = node.start_mark.line + 1, node.start_mark.column + 1
    return ConfigProblem(source, format_loc(loc), message, line, col)


#: Pydantic error types whose message is ours (it already names the value) or needs no value.
_OWN_MESSAGE_TYPES = frozenset({"value_error", "assertion_error", "missing", "extra_forbidden"})


def _clean_message(err: dict[str, Any]) -> str:
    msg = str(err["msg"])
    for prefix in ("Value error, ", "Assertion failed, "):
        if msg.startswith(prefix):
            msg = msg[len(prefix) :]
    kind = err["type"]
    if kind == "extra_forbidden":
        return "unknown field (check the spelling; see docs/configuration.md)"
    if kind == "missing":
        return "required field is missing"
    if kind == "too_short" and err.get("ctx", {}).get("min_length") == 1:
        return "must not be empty"
    value = err.get("input")
    if kind not in _OWN_MESSAGE_TYPES and isinstance(value, str | int | float | bool):
        # pydantic's own messages ("Input should be less than or equal to 65535") omit what
        # was written; saying it saves a trip back to the file.
        shown = str(value).lower() if isinstance(value, bool) else repr(value)
        msg += f" (got {shown})"
    return msg


def _clean_loc(loc: Loc, kind: str) -> Loc:
    """Drop the tags pydantic inserts for wrapped validators ("function-after[...]").

    Only parts with brackets are tags; a field name the user wrote (an unknown key such as
    ``connect-timeout``, always the last part of an ``extra_forbidden`` error) is kept as is.
    """
    last = len(loc) - 1
    return tuple(
        p
        for i, p in enumerate(loc)
        if isinstance(p, int) or "[" not in p or (kind == "extra_forbidden" and i == last)
    )


class _DuplicateKeyError(Exception):
    """Raised by the fast loader; the precise report comes from the node tree."""


_FastBase: type[Any] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _LocatedValues:
    """Values YAML parses but Python cannot build (``2024-13-01`` read as a date, a list as a
    mapping key) become YAML errors that say where, instead of escaping as ValueError."""

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep=deep)  # type: ignore[misc]
        except (ValueError, TypeError) as exc:
            raise yaml.constructor.ConstructorError(
                None, None, f"cannot read {node.value!r} here: {exc}", node.start_mark
            ) from None


class _CheckedLoader(_LocatedValues, yaml.SafeLoader):
    """PyYAML's pure-Python loader: slower, used to word errors."""


class _FastLoader(_LocatedValues, _FastBase):  # type: ignore[misc, valid-type]
    """libyaml's parser (when installed) plus a duplicate-key check.

    The fast path builds data only: no node tree is kept, since line numbers are needed only
    when something is wrong. For a 10,000-route file this took the parse from ~10 s (PyYAML's
    pure-Python parser, twice) to under 1 s.
    """

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> Any:
        keys = [k.value for k, _ in node.value if isinstance(k, yaml.ScalarNode)]
        if len(keys) != len(set(keys)):
            raise _DuplicateKeyError
        return super().construct_mapping(node, deep=deep)


def _compose(text: str) -> yaml.Node | None:
    """The node tree, for line numbers; only built when a problem must be located."""
    return yaml.compose(text, Loader=_FastBase)


def _yaml_error(exc: yaml.YAMLError, source: str) -> ConfigError:
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc)
    context = getattr(exc, "context", None)
    context_mark = getattr(exc, "context_mark", None)
    if context and context_mark is not None and context_mark is not mark:
        # The error shows up where the parser gave up; the unclosed '[' or '{' it was
        # parsing is usually the actual mistake, so say where that began.
        context += f" started at line {context_mark.line + 1}, column {context_mark.column + 1}"
    message = f"invalid YAML: {problem}" + (f" ({context})" if context else "")
    line = mark.line + 1 if mark is not None else None
    col = mark.column + 1 if mark is not None else None
    return ConfigError([ConfigProblem(source, "", message, line, col)])


def parse_config(text: str, source: str = "<config>") -> LoadedConfig:
    """Parse and validate config text; raise :class:`ConfigError` with every problem."""
    try:
        data = yaml.load(text, Loader=_FastLoader)  # a SafeLoader subclass
    except _DuplicateKeyError:
        root = _compose(text)
        raise ConfigError(
            [
                _problem(source, root, loc, "duplicate key (YAML keeps only the last one)", node)
                for loc, node in _duplicate_keys(root)
            ]
        ) from None
    except yaml.YAMLError as fast_exc:
        # PyYAML's own parser, for the wording the invalid-config fixtures pin down; where it
        # accepts what libyaml refused (e.g. a lone surrogate escape), libyaml's reason stands.
        try:
            yaml.load(text, Loader=_CheckedLoader)
        except yaml.YAMLError as exc:
            raise _yaml_error(exc, source) from None
        raise _yaml_error(fast_exc, source) from None
    if data is None:
        raise ConfigError([ConfigProblem(source, "", "the file is empty")])
    if not isinstance(data, dict):
        raise ConfigError(
            [
                _problem(
                    source,
                    _compose(text),
                    (),
                    f"expected a mapping at the top, got {type(data).__name__}",
                )
            ]
        )
    try:
        config = GatewayConfig.model_validate(data)
    except ValidationError as exc:
        root = _compose(text)
        problems = [
            _problem(source, root, _clean_loc(tuple(e["loc"]), e["type"]), _clean_message(dict(e)))
            for e in exc.errors()
        ]
        raise ConfigError(problems) from None
    refs = reference_errors(config)
    if refs:
        root = _compose(text)
        raise ConfigError([_problem(source, root, loc, msg) for loc, msg in refs])
    digest = hashlib.sha256(text.encode()).hexdigest()[:12]
    return LoadedConfig(config, source, digest)


def load_config(path: str | Path) -> LoadedConfig:
    """Read and validate a config file."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError([ConfigProblem(str(p), "", "file not found")]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([ConfigProblem(str(p), "", f"cannot read file: {exc}")]) from None
    return parse_config(text, str(p))


def print_problems(exc: ConfigError, file: TextIO | None = None) -> None:
    """One ``error: file:line:col: path: message`` line per problem (stderr by default)."""
    out = file if file is not None else sys.stderr
    for problem in exc.problems:
        print(f"error: {problem}", file=out)
