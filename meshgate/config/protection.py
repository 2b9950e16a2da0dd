"""Protection and response shaping: limits, CORS, compression, security headers, caching.

Listener-level settings follow Envoy's "edge proxy best practices" by default (bounded buffers,
header sizes and HTTP/2 streams, idle timeouts, headers with underscores rejected). Route and
virtual-host settings turn on Envoy filters only where they are used: a filter that no route
needs is not in the chain at all, so it costs nothing.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Literal

from pydantic import BeforeValidator, Field, model_validator

from .regex import Regex
from .traffic import HeaderName
from .values import Duration, HttpMethod, Model, not_bool

Size = Annotated[int, Field(ge=1), BeforeValidator(not_bool)]
Algorithm = Literal["gzip", "brotli", "zstd"]

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

    @model_validator(mode="after")
    def _unique(self) -> Compression:
        if len(set(self.algorithms)) != len(self.algorithms):
            raise ValueError("each compression algorithm may be listed once")
        return self


class ServerHeader(Model):
    """What the ``server`` response header says: Envoy's name is not your business."""

    mode: Literal["remove", "replace", "pass_through"] = "remove"
    value: str | None = None

    @model_validator(mode="after")
    def _value_for_replace(self) -> ServerHeader:
        if (self.mode == "replace") != (self.value is not None):
            raise ValueError("'value' is required with mode 'replace' and only allowed with it")
        return self


class Cors(Model):
    """CORS for browsers; Envoy answers preflights itself."""

    allow_origins: list[str] = Field(default_factory=list, description="exact origins, or '*'")
    allow_origin_regex: list[Regex] = Field(default_factory=list)
    allow_methods: list[HttpMethod] = Field(default_factory=_default_cors_methods)
    allow_headers: list[HeaderName] = Field(default_factory=list)
    expose_headers: list[HeaderName] = Field(default_factory=list)
    allow_credentials: bool = False
    max_age: Duration = timedelta(hours=1)

    @model_validator(mode="after")
    def _origins(self) -> Cors:
        if not self.allow_origins and not self.allow_origin_regex:
            raise ValueError("CORS needs allow_origins or allow_origin_regex")
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


class SecurityHeaders(Model):
    """Standard security response headers; ``security_headers: {}`` gives safe defaults."""

    hsts: Hsts | None = None
    content_type_options: bool = Field(default=True, description="X-Content-Type-Options: nosniff")
    frame_options: Literal["DENY", "SAMEORIGIN"] | None = "DENY"
    referrer_policy: str | None = "strict-origin-when-cross-origin"
    content_security_policy: str | None = None
    permissions_policy: str | None = None
