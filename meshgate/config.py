"""The declarative gateway config: what operators write and every later feature extends.

Pydantic v2 models with ``extra="forbid"`` so a typo is an error, not a silently ignored key.
Cross-references (a route naming a service that does not exist, two virtual hosts claiming the
same domain) are checked by :func:`reference_errors`, which returns one precise path per
mistake instead of stopping at the first. The models are plain data: no I/O, no defaults read
from the environment, so the compiler that consumes them stays a pure function.
"""

from __future__ import annotations

import ipaddress
import math
import re
from datetime import timedelta
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    ValidationInfo,
    field_validator,
    model_validator,
)

_DURATION_RE = re.compile(r"^\s*(-?\d+(?:\.\d+)?)\s*(ms|s|m|h)\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
NAME_PATTERN = r"^[a-z0-9]([a-z0-9._-]{0,61}[a-z0-9])?$"
HEADER_NAME_PATTERN = r"^:?[A-Za-z0-9!#$%&'*+.^_`|~-]+$"
#: google.protobuf.Duration's range; a longer duration cannot be sent to Envoy at all.
MAX_DURATION_SECONDS = 315_576_000_000
#: Envoy's default ``max_direct_response_body_size_bytes``; a longer body is NACKed.
MAX_DIRECT_RESPONSE_BODY_BYTES = 4096


def parse_duration(value: Any) -> timedelta:
    """Accept ``"250ms"``, ``"5s"``, ``"1.5m"``, ``"1h"`` or a number of seconds."""
    if isinstance(value, timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, bool):
        raise ValueError("a duration must be a number of seconds or a string like '5s'")
    elif isinstance(value, int | float):
        seconds = float(value)
        if math.isnan(seconds):
            raise ValueError("a duration must be a number of seconds or a string like '5s'")
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
    if seconds > MAX_DURATION_SECONDS:
        # Checked before timedelta() so that "1e300" is an error message, not an OverflowError.
        raise ValueError(
            f"duration {value!r} is too long: at most {MAX_DURATION_SECONDS}s (about 10000 years)"
        )
    return timedelta(seconds=seconds)


def _format_duration(value: timedelta) -> str:
    ms = round(value.total_seconds() * 1000)
    return f"{ms // 1000}s" if ms % 1000 == 0 else f"{ms}ms"


#: A non-negative duration; ``0`` means "disabled" where Envoy gives it that meaning.
Duration = Annotated[
    timedelta, BeforeValidator(parse_duration), PlainSerializer(_format_duration, return_type=str)
]


def _check_name(value: Any) -> Any:
    """Say what a valid name looks like instead of echoing the raw regex back."""
    if isinstance(value, str) and re.match(NAME_PATTERN, value) is None:
        raise ValueError(
            f"invalid name {value!r}: use 1-63 lower-case letters, digits, '.', '_' or '-', "
            "starting and ending with a letter or digit"
        )
    return value


def _check_header_name(value: Any) -> Any:
    if isinstance(value, str) and re.match(HEADER_NAME_PATTERN, value) is None:
        raise ValueError(
            f"invalid header name {value!r}: use letters, digits and !#$%&'*+.^_`|~- only "
            "(a leading ':' for pseudo-headers)"
        )
    return value


def _not_bool(value: Any) -> Any:
    """Pydantic's lax mode reads ``true`` as 1; for a port, weight or status that is a typo."""
    if isinstance(value, bool):
        raise ValueError(f"expected an integer, got {str(value).lower()}")
    return value


Name = Annotated[
    str,
    Field(
        pattern=NAME_PATTERN,
        description="lower-case letters, digits, '.', '_' and '-', 1-63 characters",
    ),
    BeforeValidator(_check_name),
]
Port = Annotated[int, Field(ge=1, le=65535), BeforeValidator(_not_bool)]

HTTP_METHODS = ("GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "CONNECT")


def _check_method(value: Any) -> Any:
    """Methods are case-sensitive on the wire, so ``get`` is refused with a hint, not upcased."""
    if isinstance(value, str) and value not in HTTP_METHODS:
        hint = f"; did you mean {value.upper()!r}?" if value.upper() in HTTP_METHODS else ""
        raise ValueError(
            f"unknown HTTP method {value!r} (expected one of {', '.join(HTTP_METHODS)}){hint}"
        )
    return value


HttpMethod = Annotated[
    Literal["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "CONNECT"],
    BeforeValidator(_check_method),
]


def _check_ip(value: Any) -> Any:
    """Listeners bind and EDS endpoints connect to IP literals: Envoy resolves no names there."""
    if isinstance(value, str):
        try:
            ipaddress.ip_address(value)
        except ValueError:
            raise ValueError(
                f"must be an IP address such as 127.0.0.1 or ::1, got {value!r} "
                "(Envoy does not resolve host names here)"
            ) from None
    return value


IpAddress = Annotated[str, BeforeValidator(_check_ip)]


def _address_key(address: str) -> str:
    """One spelling per address, so that '::' and '0:0::0' count as the same socket."""
    return ipaddress.ip_address(address).compressed


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


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


def _exactly_one(model: BaseModel, fields: tuple[str, ...], what: str) -> None:
    given = [f for f in fields if getattr(model, f) is not None]
    if len(given) != 1:
        choices = ", ".join(f"'{f}'" for f in fields)
        found = ", ".join(f"'{f}'" for f in given) or "none"
        raise ValueError(f"{what} needs exactly one of {choices} (found: {found})")


class HeaderMatch(Model):
    """Match a request header by exact value, prefix, regex or mere presence."""

    name: Annotated[
        str, Field(min_length=1, pattern=HEADER_NAME_PATTERN), BeforeValidator(_check_header_name)
    ]
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

    status: Annotated[int, Field(ge=200, le=599), BeforeValidator(_not_bool)] = 200
    body: str = ""
    content_type: str = "text/plain"

    @field_validator("body")
    @classmethod
    def _fits_envoy_limit(cls, v: str) -> str:
        size = len(v.encode("utf-8"))
        if size > MAX_DIRECT_RESPONSE_BODY_BYTES:
            raise ValueError(
                f"body is {size} bytes; Envoy serves at most {MAX_DIRECT_RESPONSE_BODY_BYTES} "
                "bytes in a direct response"
            )
        return v


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

    @field_validator("timeout")
    @classmethod
    def _timeout_needs_service(cls, v: timedelta | None, info: ValidationInfo) -> timedelta | None:
        # A field validator (not the model one) so the error points at the 'timeout' line;
        # 'direct_response' is declared first and so is already in info.data.
        if v is not None and info.data.get("direct_response") is not None:
            raise ValueError(
                "'timeout' applies only to routes with a 'service', not to a 'direct_response'"
            )
        return v

    @model_validator(mode="after")
    def _one_action(self) -> Route:
        _exactly_one(self, ("service", "direct_response"), "a route")
        return self


class VirtualHost(Model):
    name: Name
    # Envoy refuses a virtual host without domains, so an empty list is an error here too.
    domains: Annotated[list[Annotated[str, Field(min_length=1)]], Field(min_length=1)] = Field(
        default_factory=lambda: ["*"]
    )
    routes: Annotated[list[Route], Field(min_length=1)]


class Listener(Model):
    name: Name
    address: IpAddress = "0.0.0.0"
    port: Port
    virtual_hosts: Annotated[list[VirtualHost], Field(min_length=1)]
    request_id: Literal["preserve_or_generate", "generate"] = Field(
        default="preserve_or_generate",
        description="keep a client's x-request-id (for end-to-end correlation) or always "
        "replace it with a fresh UUID (when clients must not choose ids)",
    )


class Endpoint(Model):
    address: IpAddress
    port: Port
    weight: Annotated[int, Field(ge=1, le=128), BeforeValidator(_not_bool)] | None = None


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
    port: Port
    address: IpAddress = "127.0.0.1"


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


def _duplicates(items: list[Any], key: str, path: tuple[str | int, ...], what: str) -> list[Issue]:
    seen: dict[Any, int] = {}
    issues: list[Issue] = []
    for i, item in enumerate(items):
        value = getattr(item, key)
        if value in seen:
            issues.append(
                (
                    (*path, i, key),
                    f"duplicate {what} {value!r} (first defined at index {seen[value]})",
                )
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
        key = (_address_key(listener.address), listener.port)
        if key in bound:
            issues.append(
                (
                    ("listeners", li, "port"),
                    f"port {listener.port} on {listener.address} is already used by {bound[key]}",
                )
            )
        bound.setdefault(key, f"listener {listener.name!r}")
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
                if rname in names and route.name is None:
                    issues.append(
                        (
                            rpath,
                            f"the generated route name {rname!r} is already the name of route "
                            f"{names[rname]}; give this route a 'name'",
                        )
                    )
                elif rname in names:
                    issues.append(
                        (
                            (*rpath, "name"),
                            f"duplicate route name {rname!r} in this virtual host "
                            f"(first used by route {names[rname]})",
                        )
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
    issues += _demo_port_clashes(config, bound)
    return issues


def _demo_port_clashes(config: GatewayConfig, bound: dict[tuple[str, int], str]) -> list[Issue]:
    """Demo upstreams bind real sockets next to Envoy's listeners; a clash fails ``meshgate up``.

    A wildcard address (0.0.0.0 or ::) takes the port on every address, so it clashes with any
    other socket on that port.
    """
    issues: list[Issue] = []
    wildcards = {"0.0.0.0", "::"}
    taken = dict(bound)
    for di, demo in enumerate(config.demo_upstreams):
        address = _address_key(demo.address)
        clash = next(
            (
                owner
                for (other, port), owner in taken.items()
                if port == demo.port
                and (other == address or other in wildcards or address in wildcards)
            ),
            None,
        )
        if clash is not None:
            issues.append(
                (
                    ("demo_upstreams", di, "port"),
                    f"port {demo.port} on {demo.address} is already used by {clash}",
                )
            )
        taken.setdefault((address, demo.port), f"demo upstream {demo.name!r}")
    return issues
