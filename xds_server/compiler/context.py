"""What a compiler function may look at besides the object it compiles.

Route-level features need their service (a service's default retries, its load-balancing
policy), their virtual host and listener (inherited CORS, compression); passing one immutable
context keeps every compile function pure and its signature stable as features are added.
"""

from __future__ import annotations

from dataclasses import dataclass

from meshgate.config import GatewayConfig, Listener, Service, VirtualHost


@dataclass(frozen=True)
class ListenerContext:
    config: GatewayConfig
    listener: Listener

    def service(self, name: str) -> Service:
        svc = self.config.service(name)
        if svc is None:  # reference_errors() rules this out before compilation
            raise KeyError(f"unknown service {name!r}")
        return svc


@dataclass(frozen=True)
class RouteContext(ListenerContext):
    vhost: VirtualHost
