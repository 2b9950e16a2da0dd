"""Regular expressions as Envoy's RE2 engine sees them, checked by RE2 before Envoy sees them.

Envoy compiles every ``safe_regex`` (route and header matches, CORS origin patterns, regex
rewrites) with RE2 and refuses the whole resource if one fails, in two ways:

- RE2 itself refuses the pattern: syntax RE2 does not have (lookaround, backreferences),
  a repetition over 1000 (``a{1001}``, also nested: ``(a{10}){101}``), a program over RE2's
  memory budget;
- the compiled program is larger than Envoy's ``re2.max_program_size.error_level`` runtime
  setting, 100 by default (``^/a{96}$`` is 100 and passes; ``^/a{97}$`` is 101 and is NACKed).

The ``google-re2`` wheel is the same engine, so ``meshgate validate`` answers as Envoy would
without starting it. Where RE2 refuses a construct Python's ``re`` knows, its name is given
("RE2 has no lookbehind") rather than RE2's terse "invalid perl operator: (?<".

Messages quote the pattern shortened (:func:`meshgate.redact.show`): a pattern may be long,
and in a header match on ``Authorization`` it may hold a credential (the loader redacts it).
"""

from __future__ import annotations

from typing import Annotated

import re2
from pydantic import BeforeValidator

from meshgate.redact import show

#: Envoy's default ``re2.max_program_size.error_level``: larger programs are refused.
ENVOY_MAX_PROGRAM_SIZE = 100
#: RE2's largest repetition count ({n}, {n,m}), also as the product of nested repetitions.
RE2_MAX_REPEAT = 1000

_OPTIONS = re2.Options()
_OPTIONS.log_errors = False  # RE2 would print the refused pattern to stderr

#: Group openers Python's ``re`` accepts and RE2 refuses, longest first.
_RE2_UNSUPPORTED_GROUPS: tuple[tuple[str, str], ...] = (
    ("(?<=", "lookbehind"),
    ("(?<!", "negative lookbehind"),
    ("(?=", "lookahead"),
    ("(?!", "negative lookahead"),
    ("(?>", "atomic groups"),
    ("(?(", "conditional groups"),
    ("(?P=", "backreferences"),
)


def _re2_unsupported(pattern: str) -> str | None:
    """The first construct in ``pattern`` that Python's ``re`` accepts but RE2 does not.

    The scan skips escaped characters and character classes, so ``\\\\1`` (a backslash then
    '1') and ``[(?=]`` (three literal characters) are not mistaken for a backreference or a
    lookahead. Only consulted once RE2 has refused the pattern, to name the reason.
    """
    i, n, in_class = 0, len(pattern), False
    while i < n:
        c = pattern[i]
        if c == "\\":
            nxt = pattern[i + 1 : i + 2]
            if not in_class and nxt in tuple("123456789"):
                return "backreferences"
            if nxt == "Z":
                return "\\Z (use \\z or $)"
            i += 2
            continue
        if in_class:
            if c == "]":
                in_class = False
            i += 1
            continue
        if c == "[":
            i += 1
            i += int(pattern[i : i + 1] == "^")
            i += int(pattern[i : i + 1] == "]")  # a leading ']' is a member, not the end
            in_class = True
            continue
        if c == "(":
            for token, what in _RE2_UNSUPPORTED_GROUPS:
                if pattern.startswith(token, i):
                    return what
        quantifier = c in "*+?" or (c == "}" and pattern[i - 1 : i] in tuple("0123456789,"))
        if quantifier and pattern[i + 1 : i + 2] == "+":
            return "possessive quantifiers"
        i += 1
    return None


def _unclosed_group(pattern: str) -> int | None:
    """The position of the first '(' that is never closed (escapes and classes skipped)."""
    opened: list[int] = []
    i, n, in_class = 0, len(pattern), False
    while i < n:
        c = pattern[i]
        if c == "\\":
            i += 2
            continue
        if in_class:
            in_class = c != "]"
        elif c == "[":
            i += 1 + int(pattern[i + 1 : i + 2] == "^")
            i += int(pattern[i : i + 1] == "]")
            in_class = True
            continue
        elif c == "(":
            opened.append(i)
        elif c == ")" and opened:
            opened.pop()
        i += 1
    return opened[0] if opened else None


def _re2_reason(pattern: str, error: str) -> str:
    """RE2's error ("<what>: <fragment of the pattern>"), with the fragment shortened."""
    what, sep, fragment = error.partition(": ")
    unclosed = _unclosed_group(pattern) if what == "missing )" else None
    if unclosed is not None:
        return f"missing ), the '(' at position {unclosed} is never closed (RE2, used by Envoy)"
    if what == "invalid repetition size":
        return (
            f"invalid repetition {show(fragment)}: RE2 (used by Envoy) repeats at most "
            f"{RE2_MAX_REPEAT} times, nested repetitions multiplied"
        )
    if not sep or fragment == pattern:
        return f"{what} (RE2, used by Envoy)"
    return f"{what} at {show(fragment)} (RE2, used by Envoy)"


def compile_re2(pattern: str) -> re2._Regexp:
    """The compiled pattern, or ValueError worded for the operator."""
    try:
        return re2.compile(pattern, _OPTIONS)
    except re2.error as exc:
        what = _re2_unsupported(pattern)
        if what is not None:
            raise ValueError(
                f"invalid regex {show(pattern)}: RE2 (used by Envoy) has no {what}"
            ) from None
        error = exc.args[0] if exc.args else str(exc)
        if isinstance(error, bytes):
            error = error.decode("utf-8", errors="replace")
        raise ValueError(f"invalid regex {show(pattern)}: {_re2_reason(pattern, error)}") from None


def check_regex(pattern: str) -> str:
    """Reject what Envoy would reject (see the module docstring), before Envoy sees it."""
    compiled = compile_re2(pattern)
    size = compiled._regexp.ProgramSize()
    if size > ENVOY_MAX_PROGRAM_SIZE:
        raise ValueError(
            f"regex {show(pattern)} is too complex for Envoy: its RE2 program size is {size}, "
            f"more than Envoy's limit of {ENVOY_MAX_PROGRAM_SIZE} "
            "(re2.max_program_size.error_level); prefer '+' or '*' to large counted "
            "repetitions like {n,m}, and avoid \\p classes"
        )
    return pattern


def capture_groups(pattern: str) -> int:
    """How many capture groups RE2 sees in a pattern :func:`check_regex` accepted."""
    return int(compile_re2(pattern)._regexp.NumberOfCapturingGroups())


Regex = Annotated[str, BeforeValidator(lambda v: check_regex(v) if isinstance(v, str) else v)]
