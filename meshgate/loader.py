"""Read a config file and say precisely what is wrong with it: file, line, path, reason.

Problems are collected (YAML syntax, duplicate keys, schema, cross-references) so an operator
fixes a file in one pass. Locations come from the YAML parser's marks (one streaming pass,
:mod:`meshgate.yaml_locate`, only when something is wrong), so an error in
``listeners[0].virtual_hosts[0].routes[3].service`` also says which line of the file that is.

Nothing here trusts the file: reading is bounded (:mod:`meshgate.files`), so is the YAML
(:mod:`meshgate.yaml_bounds`), at most :data:`~meshgate.problems.MAX_PROBLEMS` problems are
worded, and values quoted in messages go through :mod:`meshgate.redact`.
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
from meshgate.config_files import DEFAULT_MAX_CONFIG_FILES, ConfigFiles, read_config_files
from meshgate.config_includes import INCLUDE_KEY
from meshgate.config_merge import UNKNOWN_FIELD, Origins, SourceText, merge
from meshgate.files import DEFAULT_MAX_CONFIG_BYTES
from meshgate.problems import MAX_PROBLEMS, ConfigError, ConfigProblem, Problem, more_problems
from meshgate.redact import hide_values, is_sensitive_name, show
from meshgate.yaml_bounds import DEFAULT_LIMITS, YamlLimits
from meshgate.yaml_locate import Loc, positions
from meshgate.yaml_read import check_bounds, format_loc, load_checked, problem

__all__ = [
    "ConfigError",
    "ConfigProblem",
    "LoadedConfig",
    "Loc",
    "Problem",
    "YamlLimits",
    "format_loc",
    "load_config",
    "parse_config",
    "parse_files",
    "position",
    "print_problems",
]


@dataclass(frozen=True)
class LoadedConfig:
    """A valid config, what it was read from, its content digest, and which file wrote
    each part of it (to locate problems found later, e.g. by Envoy)."""

    config: GatewayConfig
    source: str
    digest: str
    origins: Origins

    @property
    def files(self) -> tuple[str, ...]:
        return tuple(f.path for f in self.origins.files)

    def problems_at(self, found: list[tuple[Loc, str]]) -> list[Problem]:
        """Each (path in the merged config, message) as a problem at its file:line:col."""
        return self.origins.problems(found).problems


def position(text: str, loc: Loc) -> tuple[int | None, int | None]:
    """Line and column (1-based) of what ``loc`` names in the YAML ``text`` (the key, for a
    scalar), for problems found after loading, e.g. by Envoy; ``(None, None)`` if not found.
    Only for text :func:`parse_config` accepted (its bounds hold)."""
    try:
        found = positions(text, [loc]).get(loc)
    except yaml.YAMLError:
        return None, None
    return found if found is not None else (None, None)


#: Pydantic error types whose message is ours (it already names the value) or needs no value.
_OWN_MESSAGE_TYPES = frozenset({"value_error", "assertion_error", "missing", "extra_forbidden"})


def _value_at(data: Any, loc: Loc) -> Any:
    """The Python value along ``loc`` (``None`` where the path leaves the data)."""
    for part in loc:
        if isinstance(data, dict) and part in data:
            data = data[part]
        elif isinstance(data, list) and isinstance(part, int) and 0 <= part < len(data):
            data = data[part]
        else:
            return None
    return data


#: Fields whose keys are header names (``set: {Authorization: ...}``).
_HEADER_MAPS = frozenset({"set", "add", "headers"})


def sensitive_location(data: Any, loc: Loc) -> bool:
    """Whether the value at ``loc`` may be a credential, judged by where it is written.

    By a field name along the path that names a credential (``api_key``, ``client_secret``),
    by the header a header map sets (``request_headers.set.Authorization``), or by the header
    a header match tests (``{name: cookie, exact: ...}``).
    """
    for i, part in enumerate(loc):
        if not isinstance(part, str):
            continue
        if is_sensitive_name(part, header=i > 0 and loc[i - 1] in _HEADER_MAPS):
            return True
        if part == "headers" and i + 1 < len(loc) and isinstance(loc[i + 1], int):
            match = _value_at(data, loc[: i + 2])
            name = match.get("name") if isinstance(match, dict) else None
            if isinstance(name, str) and is_sensitive_name(name, header=True):
                return True
    return False


def _clean_message(err: dict[str, Any], sensitive: bool) -> str:
    msg = str(err["msg"])
    for prefix in ("Value error, ", "Assertion failed, "):
        if msg.startswith(prefix):
            msg = msg[len(prefix) :]
    kind = err["type"]
    if kind == "extra_forbidden":
        return UNKNOWN_FIELD
    if kind == "missing":
        return "required field is missing"
    if kind == "too_short" and err.get("ctx", {}).get("min_length") == 1:
        return "must not be empty"
    value = err.get("input")
    if kind not in _OWN_MESSAGE_TYPES and isinstance(value, str | int | float | bool):
        # pydantic's own messages ("Input should be less than or equal to 65535") omit what
        # was written; saying it saves a trip back to the file.
        msg += f" (got {show(value, sensitive=sensitive)})"
    elif sensitive:
        # Our validators quote values with show(); in a credential's place none may appear.
        msg = hide_values(msg, [value])
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


def _schema_error(exc: ValidationError, data: Any, origins: Origins) -> ConfigError:
    """The first :data:`MAX_PROBLEMS` schema errors, located and worded; the rest counted."""
    errors = exc.errors(include_url=False)
    first = [
        (loc, _clean_message(dict(err), sensitive_location(data, loc)))
        for err in errors[:MAX_PROBLEMS]
        for loc in [_clean_loc(tuple(err["loc"]), err["type"])]
    ]
    return origins.problems(first, omitted=len(errors) - len(first))


def _located(source: str, text: str, found: list[tuple[Loc, str]], omitted: int = 0) -> ConfigError:
    """Problems at their lines: one streaming pass over the text finds them all."""
    where = positions(text, [loc for loc, _ in found])
    return ConfigError(
        [problem(source, loc, message, where.get(loc)) for loc, message in found], omitted
    )


def parse_config(
    text: str, source: str = "<config>", limits: YamlLimits = DEFAULT_LIMITS
) -> LoadedConfig:
    """Parse and validate one config text; raise :class:`ConfigError` with its problems.

    Text has no place to include other files from: an ``include`` key is a problem here
    (:func:`load_config` reads a path and resolves them)."""
    check_bounds(text, source, limits)
    digest = hashlib.sha256(text.encode()).hexdigest()[:12]
    return _parse(Origins.single(source, text), digest, includes_read=False)


def parse_files(files: ConfigFiles) -> LoadedConfig:
    """Validate the config made of ``files`` (read, bounds-checked and with their includes
    resolved by :func:`~meshgate.config_files.read_config_files`)."""
    if files.problems:
        raise files.error()
    texts = tuple(SourceText(f.path, f.text) for f in files.files)
    return _parse(Origins(files.root, texts), files.digest, includes_read=True)


def _top(origins: Origins, index: int, includes_read: bool) -> dict[str, Any] | None:
    """One file's top mapping (None: an empty file of a split config); ConfigError if it
    is not a mapping or cannot be built."""
    src = origins.files[index]
    data = load_checked(src.text, src.path)
    if data is None:
        if origins.split:
            return None
        raise ConfigError([ConfigProblem(src.path, "", "the file is empty")])
    if not isinstance(data, dict):
        message = f"expected a mapping at the top, got {type(data).__name__}"
        raise _located(src.path, src.text, [((), message)])
    if INCLUDE_KEY in data and not includes_read:
        message = "files are included only when the config is read from a path"
        raise _located(src.path, src.text, [((INCLUDE_KEY,), message)])
    data.pop(INCLUDE_KEY, None)
    return data


def _parse(origins: Origins, digest: str, includes_read: bool) -> LoadedConfig:
    tops: list[tuple[int, dict[str, Any]]] = []
    problems: list[Problem] = []
    omitted = 0
    for index in range(len(origins.files)):
        try:
            data = _top(origins, index, includes_read)
        except ConfigError as exc:  # every file's YAML mistakes at once
            problems += exc.problems
            omitted += exc.omitted
            continue
        if data is not None:
            tops.append((index, data))
    if problems:
        raise ConfigError(problems, omitted)
    joined: list[Problem] = []
    if origins.split:
        merged, joined = merge(tops, origins)
    else:
        merged = tops[0][1]
    try:
        config = GatewayConfig.model_validate(merged)
    except ValidationError as exc:
        schema = _schema_error(exc, merged, origins)
        raise ConfigError([*joined, *schema.problems], schema.omitted) from None
    if joined:
        raise ConfigError(joined)
    refs = reference_errors(config, origins.written_at if origins.split else None)
    if refs:
        first = refs[:MAX_PROBLEMS]
        raise origins.problems(first, omitted=len(refs) - len(first))
    return LoadedConfig(config, origins.root, digest, origins)


def load_config(
    path: str | Path,
    max_bytes: int = DEFAULT_MAX_CONFIG_BYTES,
    limits: YamlLimits = DEFAULT_LIMITS,
    max_files: int = DEFAULT_MAX_CONFIG_FILES,
) -> LoadedConfig:
    """Read (regular files only, at most ``max_bytes`` and ``max_files`` together) and
    validate the config at ``path``: a file, or a directory of files (see
    :mod:`meshgate.config_files`)."""
    return parse_files(read_config_files(path, max_bytes, limits, max_files=max_files))


def print_problems(exc: ConfigError, file: TextIO | None = None) -> None:
    """One ``error: file:line:col: path: message`` line per problem (stderr by default),
    then ``... and N more problems`` when the list was cut."""
    out = file if file is not None else sys.stderr
    for found in exc.problems:
        print(f"error: {found}", file=out)
    if exc.omitted:
        print(more_problems(exc.omitted), file=out)
