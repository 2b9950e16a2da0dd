"""The whole config file: listeners, services and the quickstart's demo upstreams."""

from __future__ import annotations

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

    def service(self, name: str) -> Service | None:
        return next((s for s in self.services if s.name == name), None)
