"""What a compiler function may look at besides the object it compiles.

Route-level features need their service (a service's default retries, its load-balancing
policy), their virtual host and listener (inherited CORS, compression); passing one immutable
context keeps every compile function pure and its signature stable as features are added.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from meshgate.config import GatewayConfig, Listener, Service, VirtualHost

T = TypeVar("T")


@dataclass(frozen=True)
class ListenerContext:
    config: GatewayConfig
    listener: Listener
    #: Facts about the whole listener (e.g. "does any route use compression?"), computed once
    #: per compile and shared by every route's context, so per-route code stays O(1).
    memo: dict[str, Any] = field(default_factory=dict, compare=False, repr=False, kw_only=True)

    def memoized(self, key: str, compute: Callable[[], T]) -> T:
        if key not in self.memo:
            self.memo[key] = compute()
        value: T = self.memo[key]
        return value

    def for_vhost(self, vhost: VirtualHost) -> RouteContext:
        return RouteContext(self.config, self.listener, vhost, memo=self.memo)

    def service(self, name: str) -> Service:
        svc = self.config.service(name)
        if svc is None:  # reference_errors() rules this out before compilation
            raise KeyError(f"unknown service {name!r}")
        return svc


@dataclass(frozen=True)
class RouteContext(ListenerContext):
    vhost: VirtualHost
