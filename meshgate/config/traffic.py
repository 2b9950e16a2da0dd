"""Routing policies: rewrites, header mutation, traffic splits, session affinity, WebSocket.

Each compiles to Envoy's own route settings (prefix/regex rewrite, headers_to_add, weighted
clusters, hash policies, upgrade configs). Splits can be *sticky* so that a client stays in one
variant: by a header the client sends, or by a cookie the gateway sets on the first response.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

from pydantic import BeforeValidator, Field, field_validator, model_validator

from .regex import Regex
from .values import (
    HEADER_NAME_PATTERN,
    Duration,
    Model,
    Name,
    check_header_name,
    exactly_one,
    not_bool,
)

HeaderName = Annotated[
    str, Field(min_length=1, pattern=HEADER_NAME_PATTERN), BeforeValidator(check_header_name)
]
#: The request header that tells the upstream (and the access log) which variant it serves.
VARIANT_HEADER = "x-meshgate-variant"


class RegexRewrite(Model):
    """Rewrite the path by regex substitution (RE2; ``\\1`` refers to a capture group)."""

    pattern: Regex
    substitution: str


class Rewrite(Model):
    """Change the path and/or Host header before the request goes upstream."""

    prefix: str | None = Field(
        default=None, description="replaces the matched prefix (or the whole matched path)"
    )
    regex: RegexRewrite | None = None
    host: str | None = None

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

    set: dict[HeaderName, str] = Field(default_factory=dict)
    add: dict[HeaderName, str] = Field(default_factory=dict)
    remove: list[HeaderName] = Field(default_factory=list)


class Variant(Model):
    """One arm of a split: a service and its share of traffic."""

    name: Name | None = Field(default=None, description="default: the service name")
    service: str
    weight: Annotated[int, Field(ge=0, le=10_000), BeforeValidator(not_bool)]

    @property
    def label(self) -> str:
        return self.name or self.service


class StickyCookie(Model):
    name: HeaderName = "mg-variant"
    ttl: Duration = timedelta(days=30)
    path: str = "/"


class Sticky(Model):
    """Keep a client in one variant: by a header it sends, or by a cookie the gateway sets."""

    header: HeaderName | None = None
    cookie: StickyCookie | None = None

    @model_validator(mode="after")
    def _one(self) -> Sticky:
        exactly_one(self, ("header", "cookie"), "sticky")
        return self


class Split(Model):
    """Weighted split between services (canary, A/B); the variant is visible upstream."""

    variants: Annotated[list[Variant], Field(min_length=2)]
    sticky: Sticky | None = None

    @field_validator("variants")
    @classmethod
    def _weights(cls, variants: list[Variant]) -> list[Variant]:
        if sum(v.weight for v in variants) == 0:
            raise ValueError("the variant weights add up to 0: no variant could be chosen")
        labels = [v.label for v in variants]
        dups = sorted({x for x in labels if labels.count(x) > 1})
        if dups:
            raise ValueError(f"variant names must be unique; repeated: {', '.join(dups)}")
        return variants


class AffinityCookie(Model):
    """The gateway sets this cookie on the first response; it pins the client to an endpoint."""

    name: HeaderName = "mg-session"
    ttl: Duration = timedelta(hours=1)
    path: str = "/"


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
