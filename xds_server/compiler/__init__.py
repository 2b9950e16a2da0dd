"""Config + discovered endpoints -> Envoy resources: a pure function.

No I/O, no clock, no environment: the same input gives byte-identical resources (deterministic
serialisation) and so the same versions on every control-plane replica.

Structure (``docs/architecture.md`` has the picture): one :class:`CompileContext` per compile;
the *spine* (``clusters.py``, ``listeners.py``, ``routes.py``) builds what every config needs
and calls the hooks of the registered *features* (``features/``, the seam in ``feature.py``) at
fixed points; ``filters.py`` alone orders HTTP filters. The snapshot's reference walker then
checks that everything the resources name is in the snapshot.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from meshgate.config import Endpoint, GatewayConfig
from xds_server.compiler.clusters import compile_cluster, compile_load_assignment
from xds_server.compiler.context import (
    CompileContext,
    IssuerKeys,
    ListenerContext,
    VirtualHostContext,
)
from xds_server.compiler.feature import Feature, Features
from xds_server.compiler.features import FEATURES
from xds_server.compiler.listeners import ACCESS_LOG_FORMAT, LOCAL_REPLY_MESSAGES, compile_listener
from xds_server.compiler.routes import compile_match, compile_route, compile_route_configuration
from xds_server.snapshot.snapshot import InconsistentSnapshotError, Resource, Snapshot

__all__ = [
    "ACCESS_LOG_FORMAT",
    "FEATURES",
    "LOCAL_REPLY_MESSAGES",
    "CompileContext",
    "Feature",
    "Features",
    "IssuerKeys",
    "ListenerContext",
    "VirtualHostContext",
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
    config: GatewayConfig,
    discovered: Mapping[str, Sequence[Endpoint]] | None = None,
    features: Sequence[Feature] = FEATURES,
    *,
    jwks: Mapping[str, IssuerKeys] | None = None,
    secrets: Mapping[str, str] | None = None,
) -> list[Resource]:
    """Every Envoy resource the config means, packed and versioned."""
    ctx = CompileContext(
        config, discovered or {}, Features.of(features), jwks=jwks or {}, secrets=secrets or {}
    )
    out: list[Resource] = []
    for service in config.services:
        out.append(Resource.of(service.name, compile_cluster(ctx, service)))
        out.append(Resource.of(service.name, compile_load_assignment(ctx, service)))
    for listener in config.listeners:
        lctx = ctx.for_listener(listener)
        out.append(Resource.of(listener.name, compile_listener(lctx)))
        out.append(Resource.of(listener.name, compile_route_configuration(lctx)))
    if ctx.features.extra_resources:
        out += _extra_resources(ctx, {(r.type_url, r.name) for r in out})
    return out


def _extra_resources(ctx: CompileContext, taken: set[tuple[str, str]]) -> list[Resource]:
    """The features' own resources; a name that clashes with the config's is refused."""
    out: list[Resource] = []
    for feature in ctx.features.extra_resources:
        for res in feature.extra_resources(ctx):
            if (res.type_url, res.name) in taken:
                raise InconsistentSnapshotError(
                    f"feature {feature.name!r} adds resource {res.name!r}, which already exists "
                    f"({res.type_url.rsplit('.', 1)[-1]})"
                )
            taken.add((res.type_url, res.name))
            out.append(res)
    return out


def compile_snapshot(
    config: GatewayConfig,
    discovered: Mapping[str, Sequence[Endpoint]] | None = None,
    labels: Mapping[str, str] | None = None,
    *,
    jwks: Mapping[str, IssuerKeys] | None = None,
    secrets: Mapping[str, str] | None = None,
) -> Snapshot:
    """Compile and check: raises InconsistentSnapshotError rather than return a broken set."""
    resources = compile_resources(config, discovered, jwks=jwks, secrets=secrets)
    return Snapshot.build(resources, labels).check()
