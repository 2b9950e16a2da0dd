"""Regular expressions as Envoy's RE2 engine sees them, checked before Envoy sees them."""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import BeforeValidator

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
    lookahead.
    """
    i, n, in_class = 0, len(pattern), False
    while i < n:
        c = pattern[i]
        if c == "\\":
            nxt = pattern[i + 1 : i + 2]
            if not in_class and nxt in tuple("123456789"):
                return "backreferences"
            if nxt == "Z":
                return "\\Z (use $)"
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


def check_regex(pattern: str) -> str:
    """Reject what Envoy's RE2 engine would reject, before Envoy sees it.

    Messages quote the pattern as written (not ``repr``), so ``\\1`` is not shown as ``\\\\1``.

    Python's ``re`` accepts a superset of RE2 for the features people reach for by mistake
    (lookaround, backreferences, atomic groups, possessive quantifiers), so those are named
    explicitly; the canary Envoy still has the final word on anything subtler.
    """
    try:
        re.compile(pattern)
    except re.error as exc:
        raise ValueError(f"invalid regex '{pattern}': {exc}") from None
    what = _re2_unsupported(pattern)
    if what is not None:
        raise ValueError(f"invalid regex '{pattern}': RE2 (used by Envoy) has no {what}")
    return pattern


Regex = Annotated[str, BeforeValidator(lambda v: check_regex(v) if isinstance(v, str) else v)]
