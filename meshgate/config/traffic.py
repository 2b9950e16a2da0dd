"""Routing policies: rewrites, header mutation, traffic splits, session affinity, WebSocket.

Each compiles to Envoy's own route settings (prefix/regex rewrite, headers_to_add, weighted
clusters, hash policies, upgrade configs). Splits can be *sticky* so that a client stays in one
variant: by a header the client sends, or by a cookie the gateway sets on the first response.

The checks here are the ones Envoy would otherwise make by NACKing the whole route
configuration (a pseudo-header mutation, a stray ``%`` in a header value), or the ones Envoy
accepts but then silently misbehaves on (a regex substitution naming a group the pattern does
not have, a cookie whose ``Max-Age`` rounds to 0 and so deletes it at once).
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import BeforeValidator, Field, field_validator, model_validator

from meshgate.redact import show

from .regex import Regex, capture_groups
from .resilience import HASH_LB_POLICIES
from .values import (
    CONTROL_CHARS,
    HEADER_NAME_PATTERN,
    Duration,
    Model,
    Name,
    check_header_name,
    exactly_one,
    not_bool,
    reject_control_chars,
)

if TYPE_CHECKING:
    from .gateway import GatewayConfig
    from .routes import Route

#: The request header that tells the upstream (and the access log) which variant it serves.
VARIANT_HEADER = "x-meshgate-variant"

#: One substitution command as Envoy's formatter parses it: ``%NAME%``, ``%NAME(args)%``,
#: optionally truncated with ``:N``. Anything else after a ``%`` makes Envoy NACK the routes.
_COMMAND = re.compile(r"%[A-Z0-9_]+(\([^)]*\))?(:[0-9]+)?%")


def check_header_value(value: Any) -> Any:
    """A header value in Envoy's substitution format: commands or literal text, ``%%`` for %.

    Envoy refuses the whole route configuration for one bad value, so the first offending
    ``%`` is pointed at here. Unknown command *names* (``%FOO%``) are left to the canary Envoy,
    which names them in its error; the list of commands changes with every Envoy release.
    """
    if not isinstance(value, str):
        return value
    reject_control_chars(value, "header value")
    i = 0
    while (i := value.find("%", i)) != -1:
        if value.startswith("%%", i):
            i += 2
            continue
        command = _COMMAND.match(value, i)
        if command is None:
            raise ValueError(
                f"invalid header value {show(value)}: the '%' at position {i} does not start a "
                "substitution command such as %REQ(x-user)% or %DOWNSTREAM_REMOTE_ADDRESS%; "
                "write a literal % as %%"
            )
        i = command.end()
    return value


def check_mutable_header(value: Any) -> Any:
    """Envoy lets routes change neither pseudo-headers nor ``host`` (it NACKs the routes)."""
    if not isinstance(value, str):
        return value
    lowered = value.lower()
    if lowered in ("host", ":authority"):
        raise ValueError(
            f"Envoy does not let routes set, add or remove {show(value)}; "
            "to send another Host upstream use 'rewrite: {host: ...}'"
        )
    if lowered == ":path":
        raise ValueError(
            "Envoy does not let routes set, add or remove ':path'; use 'rewrite' to change the path"
        )
    if value.startswith(":"):
        raise ValueError(
            f"{show(value)} is a pseudo-header; Envoy does not let routes set, add or remove "
            "pseudo-headers"
        )
    return check_header_name(value)


def _check_token(value: Any) -> Any:
    """Names the client sends back (a header, a cookie) cannot be pseudo-headers."""
    if isinstance(value, str) and value.startswith(":"):
        raise ValueError(
            f"{show(value)} is a pseudo-header, set by the HTTP protocol itself; "
            "use an ordinary header or cookie name"
        )
    return value


HeaderName = Annotated[
    str, Field(min_length=1, pattern=HEADER_NAME_PATTERN), BeforeValidator(check_header_name)
]
#: A header a client sends or a cookie name: a token, never a pseudo-header.
TokenName = Annotated[
    str,
    Field(min_length=1, pattern=HEADER_NAME_PATTERN),
    BeforeValidator(_check_token),
    BeforeValidator(check_header_name),
]
MutableHeaderName = Annotated[
    str, Field(min_length=1, pattern=HEADER_NAME_PATTERN), BeforeValidator(check_mutable_header)
]
HeaderValue = Annotated[str, BeforeValidator(check_header_value)]


def _check_cookie_ttl(value: timedelta) -> timedelta:
    """``Max-Age`` is whole seconds: 0.5s would become ``Max-Age=0``, which deletes the cookie."""
    if value.total_seconds() % 1 != 0:
        raise ValueError(
            f"ttl must be whole seconds (it becomes the cookie's Max-Age), got "
            f"{value.total_seconds():g}s; use 0 for a cookie that lasts the browser session"
        )
    return value


def _check_cookie_path(value: str) -> str:
    if not value.startswith("/"):
        raise ValueError(f"a cookie path must start with '/', got {show(value)}")
    if ";" in value or CONTROL_CHARS.search(value) or " " in value:
        raise ValueError(
            f"a cookie path cannot contain ';', spaces or control characters: {show(value)}"
        )
    return value


class RegexRewrite(Model):
    """Rewrite the path by regex substitution (RE2; ``\\1`` refers to a capture group)."""

    pattern: Regex
    substitution: str

    @model_validator(mode="after")
    def _groups_exist(self) -> RegexRewrite:
        # Envoy accepts ``\2`` with one group, then fails the rewrite on every request and
        # forwards the path unchanged; say so now instead.
        reject_control_chars(self.substitution, "substitution")
        groups = capture_groups(self.pattern)
        for ref in re.finditer(r"\\(\d)", self.substitution):
            if int(ref.group(1)) > groups:
                raise ValueError(
                    f"the substitution {show(self.substitution)} refers to group \\{ref.group(1)} "
                    f"but the pattern {show(self.pattern)} has {groups} capture group(s)"
                )
        return self


_HOST = re.compile(r"^[A-Za-z0-9._~!$&'()*+,;=:\[\]-]+$")


class Rewrite(Model):
    """Change the path and/or Host header before the request goes upstream."""

    prefix: str | None = Field(
        default=None, description="replaces the matched prefix (or the whole matched path)"
    )
    regex: RegexRewrite | None = None
    host: str | None = None

    @field_validator("prefix")
    @classmethod
    def _path_like(cls, v: str | None) -> str | None:
        if v is not None and not v.startswith("/"):
            raise ValueError(
                f"must start with '/' (it becomes the start of the path), got {show(v)}"
            )
        return v

    @field_validator("host")
    @classmethod
    def _host_like(cls, v: str | None) -> str | None:
        if v is not None and _HOST.match(v) is None:
            raise ValueError(
                f"invalid host {show(v)}: a host name or address, optionally with ':port' "
                "(no scheme, path or spaces)"
            )
        return v

    @model_validator(mode="after")
    def _one_path_rewrite(self) -> Rewrite:
        if self.prefix is not None and self.regex is not None:
            raise ValueError("a rewrite takes 'prefix' or 'regex', not both")
        if self.prefix is None and self.regex is None and self.host is None:
            raise ValueError("a rewrite needs at least one of 'prefix', 'regex', 'host'")
        return self


class HeaderMutation(Model):
    """Set (overwrite), add (append) and remove headers.

    Values may use Envoy's substitution commands, e.g. ``%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%``
    or ``%REQ(x-user)%``; a literal ``%`` is written ``%%``.
    """

    set: dict[MutableHeaderName, HeaderValue] = Field(default_factory=dict)
    add: dict[MutableHeaderName, HeaderValue] = Field(default_factory=dict)
    remove: list[MutableHeaderName] = Field(default_factory=list)

    @model_validator(mode="after")
    def _each_header_once(self) -> HeaderMutation:
        # Header names are case-insensitive; Envoy would apply both entries, in an order
        # the operator did not choose (remove first, then set, then add).
        seen: dict[str, str] = {}
        for where, names in (("set", self.set), ("add", self.add), ("remove", self.remove)):
            for name in names:
                first = seen.get(name.lower())
                if first is not None:
                    raise ValueError(
                        f"header {name!r} appears in '{first}' and again in '{where}' "
                        "(header names are case-insensitive); name each header once"
                    )
                seen[name.lower()] = where
        return self


class Variant(Model):
    """One arm of a split: a service and its share of traffic."""

    name: Name | None = Field(default=None, description="default: the service name")
    service: str
    weight: Annotated[int, Field(ge=0, le=10_000), BeforeValidator(not_bool)]

    @property
    def label(self) -> str:
        return self.name or self.service


class GatewayCookie(Model):
    """A cookie the gateway sets: name, lifetime (``Max-Age``) and path."""

    name: TokenName
    ttl: Duration
    path: str = "/"

    _ttl = field_validator("ttl")(_check_cookie_ttl)
    _path = field_validator("path")(_check_cookie_path)


class StickyCookie(GatewayCookie):
    """Remembers a client's split variant."""

    name: TokenName = "mg-variant"
    ttl: Duration = timedelta(days=30)


class Sticky(Model):
    """Keep a client in one variant: by a header it sends, or by a cookie the gateway sets."""

    header: TokenName | None = None
    cookie: StickyCookie | None = None

    @model_validator(mode="after")
    def _one(self) -> Sticky:
        exactly_one(self, ("header", "cookie"), "sticky")
        return self


class Split(Model):
    """Weighted split between services (canary, A/B); the variant is visible upstream."""

    variants: list[Variant]
    sticky: Sticky | None = None

    @field_validator("variants")
    @classmethod
    def _weights(cls, variants: list[Variant]) -> list[Variant]:
        if len(variants) < 2:
            raise ValueError(
                f"a split needs at least two variants, got {len(variants)}; "
                "to send everything to one service use 'service' instead of 'split'"
            )
        if sum(v.weight for v in variants) == 0:
            raise ValueError("the variant weights add up to 0: no variant could be chosen")
        labels = [v.label for v in variants]
        dups = sorted({x for x in labels if labels.count(x) > 1})
        if dups:
            raise ValueError(
                f"variant names must be unique; repeated: {', '.join(dups)} "
                "(give variants of the same service a 'name')"
            )
        return variants


class AffinityCookie(GatewayCookie):
    """The gateway sets this cookie on the first response; it pins the client to an endpoint."""

    name: TokenName = "mg-session"
    ttl: Duration = timedelta(hours=1)


class SessionAffinity(Model):
    """Pin a client to one endpoint (needs the service's lb_policy ring_hash or maglev)."""

    cookie: AffinityCookie | None = None
    header: HeaderName | None = None
    source_ip: bool | None = None

    @model_validator(mode="after")
    def _one(self) -> SessionAffinity:
        exactly_one(self, ("cookie", "header", "source_ip"), "session_affinity")
        if self.source_ip is False:
            raise ValueError("source_ip: false means no affinity; remove session_affinity")
        return self


class WebSocket(Model):
    """Allow the WebSocket upgrade on a route."""

    enabled: bool = True
    idle_timeout: Duration | None = Field(
        default=None, description="close an idle WebSocket after this long (route idle timeout)"
    )

    @model_validator(mode="after")
    def _timeout_needs_upgrade(self) -> WebSocket:
        if not self.enabled and self.idle_timeout is not None:
            raise ValueError("'idle_timeout' applies to WebSockets; it needs 'enabled: true'")
        return self


Issue = tuple[tuple[str | int, ...], str]


def route_issues(config: GatewayConfig, route: Route, path: tuple[str | int, ...]) -> list[Issue]:
    """Cross-checks of one route's traffic policies against the services they target."""
    issues: list[Issue] = []
    if route.split is not None:
        for vi, variant in enumerate(route.split.variants):
            if config.service(variant.service) is None:
                # listed only when needed: built for every route, it made checking 10,000
                # routes over 1,000 services take 0.75 s (quadratic)
                known = ", ".join(sorted(s.name for s in config.services)) or "none"
                issues.append(
                    (
                        (*path, "split", "variants", vi, "service"),
                        f"unknown service {show(variant.service)} (defined services: {known})",
                    )
                )
    if route.session_affinity is not None:
        targets = (
            [v.service for v in route.split.variants]
            if route.split is not None
            else [route.service]
            if route.service is not None
            else []
        )
        for name in dict.fromkeys(targets):
            svc = config.service(name)
            if svc is not None and svc.lb_policy not in HASH_LB_POLICIES:
                issues.append(
                    (
                        (*path, "session_affinity"),
                        f"session affinity needs a hashing load balancer, but service "
                        f"{name!r} uses lb_policy {svc.lb_policy!r}; set 'lb_policy: ring_hash' "
                        "(or maglev) on that service",
                    )
                )
    if (
        route.websocket is not None
        and route.websocket.idle_timeout is not None
        and route.idle_timeout is not None
    ):
        issues.append(
            (
                (*path, "websocket", "idle_timeout"),
                "both the route's 'idle_timeout' and 'websocket.idle_timeout' are set; they are "
                "the same Envoy setting (RouteAction.idle_timeout): keep one",
            )
        )
    return issues
