"""The whole config file: listeners, services and the quickstart's demo upstreams."""

from __future__ import annotations

from functools import cached_property
from typing import Annotated, Literal

from pydantic import Field

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
