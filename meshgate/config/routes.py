"""Virtual hosts and routes: which requests go where."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

from pydantic import BeforeValidator, Field, ValidationInfo, field_validator, model_validator

from meshgate.redact import show

from .client import GATEWAY_HEADER_PREFIX, IpRules
from .protection import Cors, SecurityHeaders, Size
from .regex import Regex
from .resilience import RetryPolicy
from .traffic import HeaderMutation, Rewrite, SessionAffinity, Split, WebSocket
from .values import (
    HEADER_NAME_PATTERN,
    MAX_DIRECT_RESPONSE_BODY_BYTES,
    Duration,
    HeaderText,
    HttpMethod,
    Model,
    Name,
    check_header_name,
    exactly_one,
    not_bool,
)


class HeaderMatch(Model):
    """Match a request header by exact value, prefix, regex or mere presence."""

    name: Annotated[
        str, Field(min_length=1, pattern=HEADER_NAME_PATTERN), BeforeValidator(check_header_name)
    ]
    exact: str | None = None
    prefix: str | None = None
    regex: Regex | None = None
    present: bool | None = None
    invert: bool = False

    @field_validator("name")
    @classmethod
    def _not_a_gateway_header(cls, v: str) -> str:
        # Envoy picks the route before any filter runs, so a match on x-meshgate-* would read
        # the client's own copy, which the gateway removes only afterwards.
        if v.lower().startswith(GATEWAY_HEADER_PREFIX):
            raise ValueError(
                f"routes cannot match on {show(v)}: Envoy chooses the route before the gateway "
                f"removes client-sent {GATEWAY_HEADER_PREFIX}* headers, so the match would "
                "read the client's value"
            )
        return v

    @model_validator(mode="after")
    def _one_matcher(self) -> HeaderMatch:
        exactly_one(self, ("exact", "prefix", "regex", "present"), "a header match")
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
            raise ValueError(f"must start with '/', got {show(v)}")
        return v

    @model_validator(mode="after")
    def _one_path_matcher(self) -> RouteMatch:
        exactly_one(self, ("prefix", "path", "regex"), "a route match")
        return self


class DirectResponse(Model):
    """Envoy answers by itself, without an upstream (health pages, redirects, stubs)."""

    status: Annotated[int, Field(ge=200, le=599), BeforeValidator(not_bool)] = 200
    body: str = ""
    content_type: HeaderText = "text/plain"

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
    """One route: a match, and an upstream service, a split between services, or a direct
    response; plus the policies Envoy applies on the way."""

    name: Name | None = None
    match: RouteMatch
    direct_response: DirectResponse | None = None
    service: str | None = None
    split: Split | None = None
    timeout: Duration | None = Field(
        default=None,
        description="whole-request upstream timeout; 0 disables it; default 15s (Envoy's)",
    )
    idle_timeout: Duration | None = Field(
        default=None, description="reset the stream after this long without activity"
    )
    retries: RetryPolicy | None = Field(
        default=None, description="default: the service's 'retries', else no retries"
    )
    rewrite: Rewrite | None = None
    request_headers: HeaderMutation | None = None
    response_headers: HeaderMutation | None = None
    session_affinity: SessionAffinity | None = None
    websocket: WebSocket | None = None
    max_request_bytes: Size | None = Field(
        default=None, description="larger request bodies get a JSON 413 and never reach upstream"
    )
    cors: Cors | None = Field(default=None, description="overrides the virtual host's 'cors'")
    security_headers: SecurityHeaders | None = Field(
        default=None, description="overrides the virtual host's 'security_headers'"
    )
    compression: bool | None = Field(
        default=None, description="false turns the listener's compression off for this route"
    )
    cache: bool = Field(default=False, description="serve cacheable GET responses from memory")
    policy: Name | None = Field(
        default=None, description="the access policy of this route (overrides the virtual host's)"
    )
    public: bool = Field(
        default=False,
        description="exempt this route from its virtual host's policy and login (a health page)",
    )
    login: Name | None = Field(
        default=None, description="browser sign-in for this route (overrides the virtual host's)"
    )
    ip_rules: IpRules | None = Field(
        default=None, description="client addresses allowed or denied on this route"
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
        exactly_one(self, ("service", "split", "direct_response"), "a route")
        if self.direct_response is not None:
            upstream_only = [
                f
                for f in (
                    "idle_timeout",
                    "retries",
                    "rewrite",
                    "session_affinity",
                    "websocket",
                    "max_request_bytes",
                )
                if getattr(self, f) is not None
            ]
            if self.cache:
                upstream_only.append("cache")
            if upstream_only:
                raise ValueError(
                    f"{', '.join(repr(f) for f in upstream_only)} only apply to routes with a "
                    "'service' or 'split', not to a 'direct_response'"
                )
        return self


class VirtualHost(Model):
    name: Name
    # Envoy refuses a virtual host without domains, so an empty list is an error here too.
    domains: Annotated[list[Annotated[str, Field(min_length=1)]], Field(min_length=1)] = Field(
        default_factory=lambda: ["*"]
    )
    routes: Annotated[list[Route], Field(min_length=1)]
    cors: Cors | None = None
    security_headers: SecurityHeaders | None = None
    request_headers: HeaderMutation | None = None
    response_headers: HeaderMutation | None = None
    policy: Name | None = Field(default=None, description="the access policy of every route")
    login: Name | None = Field(default=None, description="browser sign-in for every route")
    ip_rules: IpRules | None = None
