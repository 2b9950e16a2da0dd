"""The declarative gateway config: what operators write and every later feature extends.

Pydantic v2 models with ``extra="forbid"`` so a typo is an error, not a silently ignored key.
Cross-references (a route naming a service that does not exist, two virtual hosts claiming the
same domain) are checked by :func:`reference_errors`, which returns one precise path per
mistake instead of stopping at the first. The models are plain data: no I/O, no defaults read
from the environment, so the compiler that consumes them stays a pure function.
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    field_validator,
    model_validator,
)

_DURATION_RE = re.compile(r"^\s*(-?\d+(?:\.\d+)?)\s*(ms|s|m|h)\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
NAME_PATTERN = r"^[a-z0-9]([a-z0-9._-]{0,61}[a-z0-9])?$"


def parse_duration(value: Any) -> timedelta:
    """Accept ``"250ms"``, ``"5s"``, ``"1.5m"``, ``"1h"`` or a number of seconds."""
    if isinstance(value, timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, bool):
        raise ValueError("a duration must be a number of seconds or a string like '5s'")
    elif isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        m = _DURATION_RE.match(value)
        if m is None:
            raise ValueError(
                f"invalid duration {value!r}: use a number with a unit: ms, s, m or h "
                "(for example '250ms' or '5s')"
            )
        seconds = float(m.group(1)) * _UNIT_SECONDS[m.group(2)]
    else:
        raise ValueError("a duration must be a number of seconds or a string like '5s'")
    if seconds < 0:
        raise ValueError(f"duration must not be negative, got {value!r}")
    return timedelta(seconds=seconds)


def _format_duration(value: timedelta) -> str:
    ms = round(value.total_seconds() * 1000)
    return f"{ms // 1000}s" if ms % 1000 == 0 else f"{ms}ms"


#: A non-negative duration; ``0`` means "disabled" where Envoy gives it that meaning.
Duration = Annotated[
    timedelta, BeforeValidator(parse_duration), PlainSerializer(_format_duration, return_type=str)
]
Name = Annotated[
    str,
    Field(
        pattern=NAME_PATTERN,
        description="lower-case letters, digits, '.', '_' and '-', 1-63 characters",
    ),
]
HttpMethod = Literal["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "CONNECT"]


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def check_regex(pattern: str) -> str:
    """Reject what Envoy's RE2 engine would reject, before Envoy sees it.

    Python's ``re`` accepts a superset of RE2 for the features people reach for by mistake
    (lookaround, backreferences), so those are named explicitly; the canary Envoy still has
    the final word on anything subtler.
    """
    for token, what in (
        ("(?=", "lookahead"),
        ("(?!", "negative lookahead"),
        ("(?<=", "lookbehind"),
        ("(?<!", "negative lookbehind"),
    ):
        if token in pattern:
            raise ValueError(f"invalid regex {pattern!r}: RE2 (used by Envoy) has no {what}")
    if re.search(r"\\[1-9]", pattern):
        raise ValueError(f"invalid regex {pattern!r}: RE2 (used by Envoy) has no backreferences")
    try:
        re.compile(pattern)
    except re.error as exc:
        raise ValueError(f"invalid regex {pattern!r}: {exc}") from None
    return pattern


Regex = Annotated[str, BeforeValidator(lambda v: check_regex(v) if isinstance(v, str) else v)]


def _exactly_one(model: BaseModel, fields: tuple[str, ...], what: str) -> None:
    given = [f for f in fields if getattr(model, f) is not None]
    if len(given) != 1:
        choices = ", ".join(f"'{f}'" for f in fields)
        found = ", ".join(f"'{f}'" for f in given) or "none"
        raise ValueError(f"{what} needs exactly one of {choices} (found: {found})")


class HeaderMatch(Model):
    """Match a request header by exact value, prefix, regex or mere presence."""

    name: Annotated[str, Field(min_length=1, pattern=r"^:?[A-Za-z0-9!#$%&'*+.^_`|~-]+$")]
    exact: str | None = None
    prefix: str | None = None
    regex: Regex | None = None
    present: bool | None = None
    invert: bool = False

    @model_validator(mode="after")
    def _one_matcher(self) -> HeaderMatch:
        _exactly_one(self, ("exact", "prefix", "regex", "present"), "a header match")
        return self


class RouteMatch(Model):
    """Which requests a route takes: one path matcher, optionally narrowed by method and headers."""

    prefix: str | None = None
    path: str | None = None
    regex: Regex | None = None
    methods: list[HttpMethod] = Field(default_factory=list)
    headers: list[HeaderMatch] = Field(default_factory=list)
    case_sensitive: bool = True

    @field_validator("prefix", "path")
    @classmethod
    def _starts_with_slash(cls, v: str | None) -> str | None:
        if v is not None and not v.startswith("/"):
            raise ValueError(f"must start with '/', got {v!r}")
        return v

    @model_validator(mode="after")
    def _one_path_matcher(self) -> RouteMatch:
        _exactly_one(self, ("prefix", "path", "regex"), "a route match")
        return self


class DirectResponse(Model):
    """Envoy answers by itself, without an upstream (health pages, redirects, stubs)."""

    status: Annotated[int, Field(ge=200, le=599)] = 200
    body: str = ""
    content_type: str = "text/plain"


class Route(Model):
    """One route: a match, and either an upstream service or a direct response."""

    name: Name | None = None
    match: RouteMatch
    service: str | None = None
    direct_response: DirectResponse | None = None
    timeout: Duration | None = Field(
        default=None,
        description="whole-request upstream timeout; 0 disables it; default 15s (Envoy's)",
    )

    @model_validator(mode="after")
    def _one_action(self) -> Route:
        _exactly_one(self, ("service", "direct_response"), "a route")
        if self.direct_response is not None and self.timeout is not None:
            raise ValueError("'timeout' applies only to routes with a 'service'")
        return self


class VirtualHost(Model):
    name: Name
    domains: list[Annotated[str, Field(min_length=1)]] = Field(default_factory=lambda: ["*"])
    routes: Annotated[list[Route], Field(min_length=1)]


class Listener(Model):
    name: Name
    address: str = "0.0.0.0"
    port: Annotated[int, Field(ge=1, le=65535)]
    virtual_hosts: Annotated[list[VirtualHost], Field(min_length=1)]


class Endpoint(Model):
    address: Annotated[str, Field(min_length=1)]
    port: Annotated[int, Field(ge=1, le=65535)]
    weight: Annotated[int, Field(ge=1, le=128)] | None = None


class Service(Model):
    """An upstream: static endpoints here, more from discovery sources later."""

    name: Name
    endpoints: list[Endpoint] = Field(default_factory=list)
    connect_timeout: Duration = Field(default=timedelta(seconds=1))
    protocol: Literal["http1", "http2"] = "http1"

    @field_validator("connect_timeout")
    @classmethod
    def _positive(cls, v: timedelta) -> timedelta:
        if v.total_seconds() <= 0:
            raise ValueError("connect_timeout must be greater than 0")
        return v


class DemoUpstream(Model):
    """A tiny echo server that ``meshgate up`` starts itself, so the quickstart answers at once.

    It is a convenience for trying meshgate out and for examples; production upstreams are
    services with endpoints.
    """

    name: Name
    port: Annotated[int, Field(ge=1, le=65535)]
    address: str = "127.0.0.1"


class GatewayConfig(Model):
    """The whole config file."""

    listeners: Annotated[list[Listener], Field(min_length=1)]
    services: list[Service] = Field(default_factory=list)
    demo_upstreams: list[DemoUpstream] = Field(default_factory=list)

    def service(self, name: str) -> Service | None:
        return next((s for s in self.services if s.name == name), None)


def route_name(vhost: VirtualHost, index: int, route: Route) -> str:
    """A route's name, or a stable generated one (shown in access logs and ``render``)."""
    return route.name or f"{vhost.name}-{index}"


Issue = tuple[tuple[str | int, ...], str]


def _duplicates(
    items: list[Any], key: str, path: tuple[str | int, ...], what: str
) -> list[Issue]:
    seen: dict[Any, int] = {}
    issues: list[Issue] = []
    for i, item in enumerate(items):
        value = getattr(item, key)
        if value in seen:
            issues.append(
                ((*path, i, key), f"duplicate {what} {value!r} (first defined at index {seen[value]})")
            )
        else:
            seen[value] = i
    return issues


def reference_errors(config: GatewayConfig) -> list[Issue]:
    """Every cross-reference mistake, each with the path of the offending value."""
    issues: list[Issue] = []
    issues += _duplicates(config.listeners, "name", ("listeners",), "listener name")
    issues += _duplicates(config.services, "name", ("services",), "service name")
    issues += _duplicates(config.demo_upstreams, "name", ("demo_upstreams",), "demo upstream")
    bound: dict[tuple[str, int], str] = {}
    for li, listener in enumerate(config.listeners):
        key = (listener.address, listener.port)
        if key in bound:
            issues.append(
                (
                    ("listeners", li, "port"),
                    f"port {listener.port} on {listener.address} is already used by listener "
                    f"{bound[key]!r}",
                )
            )
        bound.setdefault(key, listener.name)
        path: tuple[str | int, ...] = ("listeners", li, "virtual_hosts")
        issues += _duplicates(listener.virtual_hosts, "name", path, "virtual host name")
        claimed: dict[str, str] = {}
        for vi, vhost in enumerate(listener.virtual_hosts):
            for di, domain in enumerate(vhost.domains):
                lowered = domain.lower()
                if lowered in claimed:
                    issues.append(
                        (
                            (*path, vi, "domains", di),
                            f"domain {domain!r} is already served by virtual host "
                            f"{claimed[lowered]!r} on this listener",
                        )
                    )
                claimed.setdefault(lowered, vhost.name)
            names: dict[str, int] = {}
            for ri, route in enumerate(vhost.routes):
                rpath = (*path, vi, "routes", ri)
                rname = route_name(vhost, ri, route)
                if rname in names:
                    issues.append(
                        ((*rpath, "name"), f"duplicate route name {rname!r} in this virtual host")
                    )
                names.setdefault(rname, ri)
                if route.service is not None and config.service(route.service) is None:
                    known = ", ".join(sorted(s.name for s in config.services)) or "none"
                    issues.append(
                        (
                            (*rpath, "service"),
                            f"unknown service {route.service!r} (defined services: {known})",
                        )
                    )
    return issues
