"""Config + discovered endpoints -> Envoy resources: a pure function.

No I/O, no clock, no environment: the same input gives byte-identical resources (deterministic
serialisation) and so the same versions on every control-plane replica. One function per Envoy
resource kind keeps each feature's compilation in one obvious place; later features add fields
here and a golden test in ``tests/golden``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from meshgate.config import Endpoint, GatewayConfig
from xds_server.compiler.clusters import compile_cluster, compile_load_assignment
from xds_server.compiler.context import ListenerContext, RouteContext
from xds_server.compiler.listeners import ACCESS_LOG_FORMAT, LOCAL_REPLY_MESSAGES, compile_listener
from xds_server.compiler.routes import compile_match, compile_route, compile_route_configuration
from xds_server.snapshot.snapshot import Resource, Snapshot

__all__ = [
    "ACCESS_LOG_FORMAT",
    "LOCAL_REPLY_MESSAGES",
    "ListenerContext",
    "RouteContext",
    "compile_cluster",
    "compile_listener",
    "compile_load_assignment",
    "compile_match",
    "compile_resources",
    "compile_route",
    "compile_route_configuration",
    "compile_snapshot",
]


def compile_resources(
    config: GatewayConfig, discovered: Mapping[str, Sequence[Endpoint]] | None = None
) -> list[Resource]:
    """Every Envoy resource the config means, packed and versioned."""
    discovered = discovered or {}
    out: list[Resource] = []
    for service in config.services:
        out.append(Resource.of(service.name, compile_cluster(service, config)))
        out.append(
            Resource.of(
                service.name,
                compile_load_assignment(service, discovered.get(service.name, ())),
            )
        )
    for listener in config.listeners:
        ctx = ListenerContext(config, listener)
        out.append(Resource.of(listener.name, compile_listener(ctx)))
        out.append(Resource.of(listener.name, compile_route_configuration(ctx)))
    return out


def compile_snapshot(
    config: GatewayConfig,
    discovered: Mapping[str, Sequence[Endpoint]] | None = None,
    labels: Mapping[str, str] | None = None,
) -> Snapshot:
    """Compile and check: raises InconsistentSnapshotError rather than return a broken set."""
    return Snapshot.build(compile_resources(config, discovered), labels).check()
