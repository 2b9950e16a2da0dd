"""The whole config file: listeners, services and the quickstart's demo upstreams."""

from __future__ import annotations

from functools import cached_property
from typing import Annotated, Any, Literal

from pydantic import Field, ValidationInfo, field_validator

from .client import ClientAddress, IpRules
from .identity import Issuer, Login, Policy, Role
from .protection import Compression, Limits, ServerHeader, Timeouts
from .routes import VirtualHost
from .services import Service
from .values import IpAddress, Model, Name, Port


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
    timeouts: Timeouts = Field(default_factory=Timeouts)
    limits: Limits = Field(default_factory=Limits)
    compression: Compression | None = Field(
        default=None, description="compress responses of every route (a route may opt out)"
    )
    server_header: ServerHeader = Field(default_factory=ServerHeader)
    client_address: ClientAddress = Field(
        default_factory=ClientAddress,
        description="which proxies in front are trusted to say who the client is",
    )
    ip_rules: IpRules | None = Field(
        default=None, description="client addresses allowed or denied on every route"
    )

    @field_validator("client_address")
    @classmethod
    def _fresh_ids_need_hops(cls, v: ClientAddress, info: ValidationInfo) -> ClientAddress:
        # Trusting proxies by address is Envoy's original IP detection, which turns off
        # use_remote_address; Envoy then keeps a client's x-request-id, so 'generate' would
        # silently become 'preserve_or_generate'. Refused rather than promised and broken.
        if v.trusted_cidrs and info.data.get("request_id") == "generate":
            raise ValueError(
                "'trusted_cidrs' cannot be used with 'request_id: generate' (with proxies "
                "trusted by address Envoy keeps a client's x-request-id); use 'trusted_hops' "
                "or 'request_id: preserve_or_generate'"
            )
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
    issuers: list[Issuer] = Field(default_factory=list)
    roles: list[Role] = Field(default_factory=list)
    policies: list[Policy] = Field(default_factory=list)
    logins: list[Login] = Field(default_factory=list)

    @cached_property
    def _services_by_name(self) -> dict[str, Service]:
        # first definition wins, as reference_errors() reports later duplicates
        out: dict[str, Service] = {}
        for svc in self.services:
            out.setdefault(svc.name, svc)
        return out

    def service(self, name: str) -> Service | None:
        """O(1): called once per route by the reference checks and the compiler."""
        return self._services_by_name.get(name)

    @cached_property
    def _named(self) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for kind in ("issuers", "roles", "policies", "logins"):
            table: dict[str, Any] = {}
            for item in getattr(self, kind):
                table.setdefault(item.name, item)
            out[kind] = table
        return out

    def issuer(self, name: str) -> Issuer | None:
        found: Issuer | None = self._named["issuers"].get(name)
        return found

    def role(self, name: str) -> Role | None:
        found: Role | None = self._named["roles"].get(name)
        return found

    def policy(self, name: str) -> Policy | None:
        found: Policy | None = self._named["policies"].get(name)
        return found

    def login(self, name: str) -> Login | None:
        found: Login | None = self._named["logins"].get(name)
        return found
