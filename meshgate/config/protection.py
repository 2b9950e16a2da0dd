"""Protection and response shaping: limits, CORS, compression, security headers, caching.

Listener-level settings follow Envoy's "edge proxy best practices" by default (bounded buffers,
header sizes and HTTP/2 streams, idle timeouts, headers with underscores rejected). Route and
virtual-host settings turn on Envoy filters only where they are used: a filter that no route
needs is not in the chain at all, so it costs nothing.
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import BeforeValidator, Field, field_validator, model_validator

from meshgate.redact import show

from .regex import Regex
from .traffic import HeaderName
from .values import Duration, HeaderText, HttpMethod, Model, not_bool

if TYPE_CHECKING:
    from .references import Issue
    from .routes import Route, VirtualHost

#: Envoy carries byte counts and connection limits here as uint32.
MAX_UINT32 = 4_294_967_295
Size = Annotated[int, Field(ge=1, le=MAX_UINT32), BeforeValidator(not_bool)]
Algorithm = Literal["gzip", "brotli", "zstd"]

#: What a browser sends in ``Origin``: scheme, host and optional port, nothing after.
_ORIGIN = re.compile(r"^[a-z][a-z0-9+.-]*://([a-z0-9.-]+|\[[0-9a-f:.]+\])(:[0-9]{1,5})?$")


def _check_origin(value: Any) -> Any:
    # Envoy compares the Origin header byte for byte: 'https://a.example/' (a path) or
    # 'HTTPS://a.example' would never match, and nothing would say why.
    if isinstance(value, str) and value != "*" and _ORIGIN.match(value) is None:
        raise ValueError(
            f"invalid origin {show(value)}: write it as browsers send it, scheme://host[:port] "
            "in lower case with no path (or '*' for any origin)"
        )
    return value


Origin = Annotated[str, BeforeValidator(_check_origin)]


def _whole_seconds(value: timedelta) -> timedelta:
    """Browsers read CORS and HSTS ages as whole seconds; '1500ms' would silently become 1."""
    if value.total_seconds() != int(value.total_seconds()):
        raise ValueError(
            f"must be a whole number of seconds (browsers read it in seconds), got "
            f"{value.total_seconds():g}s"
        )
    return value


DEFAULT_COMPRESSIBLE_TYPES = (
    "text/html",
    "text/plain",
    "text/css",
    "text/javascript",
    "application/javascript",
    "application/json",
    "application/xml",
    "image/svg+xml",
)


class Timeouts(Model):
    """Downstream connection and stream timeouts of a listener."""

    idle: Duration = Field(
        default=timedelta(hours=1), description="close a connection with no streams after this"
    )
    stream_idle: Duration = Field(
        default=timedelta(minutes=5), description="reset a stream with no activity for this long"
    )
    request_headers: Duration = Field(
        default=timedelta(seconds=10),
        description="the client must send all request headers within this (slowloris guard)",
    )


class Limits(Model):
    """Bounds on what one client can make a listener hold."""

    max_request_headers_kb: Annotated[int, Field(ge=1, le=8192), BeforeValidator(not_bool)] = 60
    max_connections: Size | None = Field(
        default=None, description="active connections on this listener; beyond, new ones close"
    )
    per_connection_buffer_bytes: Size = 32_768
    http2_max_concurrent_streams: Annotated[
        int, Field(ge=1, le=2_147_483_647), BeforeValidator(not_bool)
    ] = 100
    headers_with_underscores: Literal["reject", "drop", "allow"] = "reject"


def _default_algorithms() -> list[Algorithm]:
    return ["brotli", "gzip"]


def _default_cors_methods() -> list[HttpMethod]:
    return ["GET", "POST"]


class Compression(Model):
    """Compress responses by Accept-Encoding (listener-wide settings)."""

    algorithms: Annotated[list[Algorithm], Field(min_length=1)] = Field(
        default_factory=_default_algorithms
    )
    min_size: Annotated[int, Field(ge=0), BeforeValidator(not_bool)] = 1024
    content_types: Annotated[list[str], Field(min_length=1)] = Field(
        default_factory=lambda: list(DEFAULT_COMPRESSIBLE_TYPES)
    )

    @field_validator("algorithms")
    @classmethod
    def _unique(cls, algorithms: list[Algorithm]) -> list[Algorithm]:
        twice = sorted({a for a in algorithms if algorithms.count(a) > 1})
        if twice:
            raise ValueError(
                f"{', '.join(repr(a) for a in twice)} listed more than once; list each "
                "algorithm once, in order of preference"
            )
        return algorithms


class ServerHeader(Model):
    """What the ``server`` response header says: Envoy's name is not your business."""

    mode: Literal["remove", "replace", "pass_through"] = "remove"
    value: HeaderText | None = None

    @model_validator(mode="after")
    def _value_for_replace(self) -> ServerHeader:
        if self.mode == "replace" and self.value is None:
            raise ValueError("mode 'replace' needs a 'value': the server header to send")
        if self.mode != "replace" and self.value is not None:
            raise ValueError(f"'value' is only used with mode 'replace', not {self.mode!r}")
        return self


class Cors(Model):
    """CORS for browsers; Envoy answers preflights itself."""

    allow_origins: list[Origin] = Field(default_factory=list, description="exact origins, or '*'")
    allow_origin_regex: list[Regex] = Field(default_factory=list)
    allow_methods: list[HttpMethod] = Field(default_factory=_default_cors_methods)
    allow_headers: list[HeaderName] = Field(default_factory=list)
    expose_headers: list[HeaderName] = Field(default_factory=list)
    allow_credentials: bool = False
    max_age: Duration = timedelta(hours=1)

    @field_validator("max_age")
    @classmethod
    def _max_age_seconds(cls, value: timedelta) -> timedelta:
        return _whole_seconds(value)

    @model_validator(mode="after")
    def _origins(self) -> Cors:
        if not self.allow_origins and not self.allow_origin_regex:
            raise ValueError(
                "CORS needs at least one origin rule: allow_origins or allow_origin_regex"
            )
        if self.allow_credentials and "*" in self.allow_origins:
            raise ValueError(
                "allow_credentials cannot be used with origin '*' (browsers refuse it); "
                "list the origins"
            )
        return self


class Hsts(Model):
    max_age: Duration = timedelta(days=365)
    include_subdomains: bool = True
    preload: bool = False

    @field_validator("max_age")
    @classmethod
    def _max_age_seconds(cls, value: timedelta) -> timedelta:
        return _whole_seconds(value)

    @model_validator(mode="after")
    def _preload_rules(self) -> Hsts:
        # The browsers' preload list refuses a site whose header lacks either of these, and a
        # site on the list cannot easily get off it: say so before the header ships.
        if self.preload and (not self.include_subdomains or self.max_age < timedelta(days=365)):
            raise ValueError(
                "preload needs include_subdomains: true and a max_age of at least 365 days "
                "(8760h), as the browsers' preload list requires"
            )
        return self


class SecurityHeaders(Model):
    """Standard security response headers; ``security_headers: {}`` gives safe defaults."""

    hsts: Hsts | None = None
    content_type_options: bool = Field(default=True, description="X-Content-Type-Options: nosniff")
    frame_options: Literal["DENY", "SAMEORIGIN"] | None = "DENY"
    referrer_policy: HeaderText | None = "strict-origin-when-cross-origin"
    content_security_policy: HeaderText | None = None
    permissions_policy: HeaderText | None = None


#: Route settings that Envoy's cache filter would silently skip. It fetches a cacheable request
#: itself, straight from the route's service, past the router: whatever the router does for a
#: route (rewrite, header changes, retries, timeouts, hashing, the split) does not happen for
#: it, and its response bypasses the router's response-header changes too.
_CACHE_BYPASSES = (
    "rewrite",
    "request_headers",
    "response_headers",
    "retries",
    "timeout",
    "idle_timeout",
    "split",
    "session_affinity",
    "websocket",
)


def route_issues(vhost: VirtualHost, route: Route, path: tuple[str | int, ...]) -> list[Issue]:
    """Cross-checks of one route's protection settings against the rest of its route."""
    if not route.cache:
        return []
    issues: list[Issue] = []
    on_route = [f for f in _CACHE_BYPASSES if getattr(route, f, None) is not None]
    if on_route:
        issues.append(
            (
                (*path, "cache"),
                f"'cache' cannot be combined with {', '.join(repr(f) for f in on_route)} on "
                "this route: Envoy's cache filter fetches cacheable requests straight from the "
                "service, without them; put the cached paths on a route of their own",
            )
        )
    on_vhost = [f for f in ("request_headers", "response_headers") if getattr(vhost, f, None)]
    if on_vhost:
        issues.append(
            (
                (*path, "cache"),
                f"'cache' cannot be used in a virtual host with "
                f"{', '.join(repr(f) for f in on_vhost)}: Envoy's cache filter fetches "
                "cacheable requests straight from the service, without them",
            )
        )
    return issues
