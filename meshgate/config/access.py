"""What a policy means, apart from how it is enforced: path patterns and role inheritance.

The compiler turns these into Envoy RBAC rules, the reference checks use them to reject a
policy that cannot mean anything (a role cycle, a grant of nothing), and a later ext_authz
decision or ``meshgate explain`` can answer "would this request pass?" with the same
semantics. :meth:`PathPattern.matches` is the definition a pattern's Envoy matchers are tested
against; :class:`RoleGraph` is the one place inheritance is flattened.

Patterns match the path as Envoy sees it after normalisation (``/a/../b`` is ``/b``, ``//`` is
``/``) and without the query string: ``/a/b`` is exactly that path, ``*`` as a whole segment is
one segment, and a trailing ``/**`` is any rest, the bare prefix included (``/orders/**``
covers ``/orders``, ``/orders/`` and everything below).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import BeforeValidator

from meshgate.redact import show

from .regex import ENVOY_MAX_PROGRAM_SIZE, compile_re2

if TYPE_CHECKING:
    from .identity import Permission, Role
    from .routes import Route, VirtualHost

ONE_SEGMENT = "*"
ANY_REST = "**"
_FORBIDDEN = re.compile(r"[\s?#\x00-\x1f\x7f]")
#: Path parameters after a segment (``/a;jsessionid=1/b``), which some servers drop.
_PARAMS = "(?:;[^/]*)?"


@dataclass(frozen=True)
class PathPattern:
    """A parsed path pattern: literal segments and ``*``, optionally ending with ``/**``."""

    text: str
    #: Literal segments or ``*``; a last ``""`` is a trailing slash (``/a/`` is ``("a", "")``).
    segments: tuple[str, ...]
    #: A trailing ``/**``: any rest of the path, nothing included.
    rest: bool

    @property
    def has_wildcard(self) -> bool:
        return ONE_SEGMENT in self.segments

    def base(self) -> str:
        """The pattern without its ``/**`` (``""`` for ``/**`` itself)."""
        return "".join(f"/{s}" for s in self.segments)

    def regex(self, ignore_case: bool = False) -> str:
        """The RE2 regex (matched against the whole path) that means this pattern; needed
        only for a pattern with ``*`` segments (the others are exact and prefix matches)."""
        body = "".join("/[^/]+" if s == ONE_SEGMENT else f"/{re.escape(s)}" for s in self.segments)
        if self.rest:
            body += "(?:/.*)?"
        return f"(?i){body}" if ignore_case else body

    def loose_regex(self) -> str:
        """The RE2 regex of every path an upstream may take for one this pattern means: any
        case, path parameters (``;...``) after any literal segment, and a trailing slash.

        Envoy routes on the path as sent (normalised), but many servers read it more loosely:
        Tomcat and Jetty drop ``;jsessionid=...`` from every segment, Express ignores case and
        a trailing slash by default, Spring MVC before 6 a trailing slash. A deny rule written
        for ``/orders/*/refund`` must therefore also refuse ``/orders/7/Refund/`` and
        ``/orders/7/refund;x=1``, or it would not deny what the upstream serves
        (:meth:`matches_loosely` is the same in Python).
        """
        segments = list(self.segments)
        if segments and segments[-1] == "":
            segments.pop()
        body = "".join(
            "/[^/]+" if s == ONE_SEGMENT else f"/{re.escape(s)}{_PARAMS}" for s in segments
        )
        body += "(?:/.*)?" if self.rest else "/?"
        return f"(?i){body}"

    def matches_loosely(self, path: str) -> bool:
        """Whether an upstream may take ``path`` for one this pattern means: case, path
        parameters and one trailing slash aside (see :meth:`loose_regex`)."""
        if not path.startswith("/"):
            return False
        parts = path[1:].split("/")
        if parts[-1] == "":
            parts.pop()
        want = list(self.segments)
        if want and want[-1] == "":
            want.pop()
        if self.rest:
            if len(parts) < len(want):
                return False
            parts = parts[: len(want)]
        elif len(parts) != len(want):
            return False
        return all(_loose_segment(w, got) for w, got in zip(want, parts, strict=True))

    def matches(self, path: str, case_sensitive: bool = True) -> bool:
        """Whether the (normalised, query-less) ``path`` is one this pattern means."""
        if not path.startswith("/"):
            return False
        parts = path[1:].split("/")
        want = list(self.segments)
        if self.rest:
            if not want:
                return True
            if len(parts) < len(want):
                return False
            parts = parts[: len(want)]
        elif len(parts) != len(want):
            return False
        return all(_segment_matches(w, p, case_sensitive) for w, p in zip(want, parts, strict=True))


def _loose_segment(want: str, got: str) -> bool:
    if want == ONE_SEGMENT:
        return got != ""
    want, got = want.casefold(), got.casefold()
    return got == want or got.startswith(f"{want};")


def _segment_matches(want: str, got: str, case_sensitive: bool) -> bool:
    if want == ONE_SEGMENT:
        return got != ""
    return want == got if case_sensitive else want.casefold() == got.casefold()


def parse_pattern(text: str) -> PathPattern:
    """``text`` as a :class:`PathPattern`; ``ValueError`` says what is wrong with it."""
    if not text.startswith("/"):
        raise ValueError(f"a path pattern starts with '/', got {show(text)}")
    bad = _FORBIDDEN.search(text)
    if bad is not None:
        raise ValueError(
            f"invalid path pattern {show(text)}: no whitespace, control characters, '?' or "
            "'#' (a pattern matches the path without its query string)"
        )
    segments = text[1:].split("/")
    rest = segments[-1] == ANY_REST
    if rest:
        segments.pop()
    for index, segment in enumerate(segments):
        last = index == len(segments) - 1
        if segment == "" and not (last and not rest):
            raise ValueError(
                f"invalid path pattern {show(text)}: an empty segment ('//') never matches, "
                "because Envoy merges slashes before matching"
            )
        if segment in (".", ".."):
            raise ValueError(
                f"invalid path pattern {show(text)}: '.' and '..' segments never match, "
                "because Envoy resolves them before matching"
            )
        if segment == ANY_REST:
            raise ValueError(
                f"invalid path pattern {show(text)}: '**' (any rest of the path) can only be "
                "the last segment, as in '/orders/**'"
            )
        if "*" in segment and segment != ONE_SEGMENT:
            raise ValueError(
                f"invalid path pattern {show(text)}: '*' stands for one whole segment (as in "
                f"'/orders/*/items'); it cannot be part of one ({show(segment)})"
            )
    pattern = PathPattern(text, tuple(segments), rest)
    if pattern.has_wildcard:
        # Case-insensitive routes use the (?i) form, the larger of the two.
        size = compile_re2(pattern.regex(ignore_case=True))._regexp.ProgramSize()
        if size > ENVOY_MAX_PROGRAM_SIZE:
            raise ValueError(
                f"invalid path pattern {show(text)}: too long for a pattern with '*' (Envoy "
                f"matches it with a regex whose RE2 program size would be {size}, more than "
                f"its limit of {ENVOY_MAX_PROGRAM_SIZE}); end it earlier with '/**', or list "
                "the paths the '*' stands for"
            )
    return pattern


def check_pattern(value: Any) -> Any:
    """Pydantic ``BeforeValidator`` for path patterns."""
    if isinstance(value, str):
        parse_pattern(value)
    return value


#: A path pattern in the config (``/a/b``, ``/a/*/c``, ``/a/**``), checked when loaded.
PathPatternStr = Annotated[str, BeforeValidator(check_pattern)]


def _check_claim_value(value: Any) -> Any:
    if isinstance(value, str) and (not value or len(value) > 256 or re.search(r"\s", value)):
        raise ValueError(
            f"invalid role claim value {show(value)}: 1-256 characters without whitespace "
            "(a 'scope' claim separates its values by spaces)"
        )
    return value


#: A value a role claim may carry (a role name, a scope such as ``orders:read``, a group).
ClaimValue = Annotated[str, BeforeValidator(_check_claim_value)]


class RoleError(ValueError):
    """A role that does not exist, or inheritance that goes round in a circle."""


@dataclass
class RoleGraph:
    """Role inheritance, flattened once per config.

    A caller *holds* a role when its token names that role or any role inheriting it
    (:meth:`heirs`); a role *grants* its own permissions and those of every role it inherits
    (:meth:`lineage`, :meth:`permissions`). The reference checks reject cycles and unknown
    names in a file; a config built past them gets :class:`RoleError` here, never a guess.
    """

    roles: dict[str, Role]
    _children: dict[str, list[str]] = field(default_factory=dict, repr=False)
    _lineage: dict[str, tuple[str, ...]] = field(default_factory=dict, repr=False)

    @classmethod
    def of(cls, roles: Iterable[Role]) -> RoleGraph:
        table: dict[str, Role] = {}
        for role in roles:
            table.setdefault(role.name, role)  # the first definition, like GatewayConfig.role()
        graph = cls(table)
        for role in table.values():
            for parent in role.inherits:
                graph._children.setdefault(parent, []).append(role.name)
        return graph

    def role(self, name: str) -> Role:
        found = self.roles.get(name)
        if found is None:
            raise RoleError(f"unknown role {show(name)}")
        return found

    def lineage(self, name: str) -> tuple[str, ...]:
        """``name``, then every role it inherits (directly or not), each once, nearest first."""
        if name not in self._lineage:
            self._lineage[name] = self._walk(name, [])
        return self._lineage[name]

    def _walk(self, name: str, trail: list[str]) -> tuple[str, ...]:
        if name in trail:
            cycle = " -> ".join([*trail[trail.index(name) :], name])
            raise RoleError(f"role inheritance cycle: {cycle}")
        role = self.role(name)
        out = [name]
        for parent in role.inherits:
            for inherited in self._walk(parent, [*trail, name]):
                if inherited not in out:
                    out.append(inherited)
        return tuple(out)

    def heirs(self, name: str) -> tuple[str, ...]:
        """``name`` and every role that inherits it: whoever holds one of them holds ``name``."""
        self.lineage(name)  # unknown or cyclic: raise here, not half-way
        out = [name]
        queue = [name]
        while queue:
            for child in self._children.get(queue.pop(0), []):
                if child not in out:
                    self.lineage(child)
                    out.append(child)
                    queue.append(child)
        return tuple(out)

    def permissions(self, name: str) -> tuple[Permission, ...]:
        """Every permission ``name`` grants: its own, then its ancestors', without repeats."""
        out: list[Permission] = []
        for role_name in self.lineage(name):
            for permission in self.role(role_name).permissions:
                if permission not in out:
                    out.append(permission)
        return tuple(out)


def claim_values(role: Role) -> Sequence[str]:
    """The values in a token's role claims that mean ``role``."""
    return role.claim_values or [role.name]


def effective_policy(vhost: VirtualHost, route: Route) -> str | None:
    """The name of the policy that applies to ``route``: its own, else its virtual host's,
    none for a ``public`` route."""
    if route.policy is not None:
        return route.policy
    if route.public:
        return None
    return vhost.policy
