"""Immutable, versioned sets of Envoy resources: what the control plane publishes.

A snapshot is the unit of publication. It is built once by the pure compiler, checked for
consistency (every referenced cluster and route configuration exists) and then shared read-only
by every xDS stream. Versions are content hashes, not counters, so that several control-plane
replicas fed the same input compute the same versions and an Envoy that reconnects to another
replica is not sent anything it already has.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from google.protobuf import any_pb2
from google.protobuf.message import Message

CLUSTER = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
ENDPOINT = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
LISTENER = "type.googleapis.com/envoy.config.listener.v3.Listener"
ROUTE = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"

#: Make-before-break order: a cluster (and its endpoints) must exist before a route points at it,
#: and a listener before the route configuration it asks for.
ORDER: tuple[str, ...] = (CLUSTER, ENDPOINT, LISTENER, ROUTE)

#: Types whose subscriptions are wildcard (Envoy asks for "everything"); SotW responses for these
#: must always carry the full set, and removal is expressed by omission.
WILDCARD_TYPES = frozenset({CLUSTER, LISTENER})

SHORT_NAMES = {CLUSTER: "CDS", ENDPOINT: "EDS", LISTENER: "LDS", ROUTE: "RDS"}

_MESSAGE_TYPES: dict[str, type[Message]] = {
    CLUSTER: cluster_pb2.Cluster,
    ENDPOINT: endpoint_pb2.ClusterLoadAssignment,
    LISTENER: listener_pb2.Listener,
    ROUTE: route_pb2.RouteConfiguration,
}


def short_name(type_url: str) -> str:
    """CDS/EDS/LDS/RDS for logs and metrics; the bare message name for anything else."""
    return SHORT_NAMES.get(type_url, type_url.rsplit(".", 1)[-1])


def _digest(parts: Iterable[bytes]) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(len(part).to_bytes(8, "big"))
        h.update(part)
    return h.hexdigest()[:16]


@dataclass(frozen=True, slots=True)
class Resource:
    """One named Envoy resource, packed once so every stream reuses the same bytes."""

    name: str
    type_url: str
    any: any_pb2.Any
    version: str

    @classmethod
    def of(cls, name: str, message: Message) -> Resource:
        packed = any_pb2.Any()
        packed.Pack(message, deterministic=True)
        return cls(name, packed.type_url, packed, _digest([packed.value]))

    def unpack(self) -> Message:
        msg = _MESSAGE_TYPES[self.type_url]()
        self.any.Unpack(msg)
        return msg


class InconsistentSnapshotError(ValueError):
    """A snapshot references a resource it does not contain; it must never be published."""


@dataclass(frozen=True)
class Snapshot:
    """All resources of every type, with a content version per type and overall."""

    resources: Mapping[str, Mapping[str, Resource]]
    versions: Mapping[str, str]
    version: str
    #: Free-form provenance (config file, config hash) shown by `meshgate status`.
    labels: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def build(
        cls, resources: Iterable[Resource], labels: Mapping[str, str] | None = None
    ) -> Snapshot:
        by_type: dict[str, dict[str, Resource]] = {t: {} for t in ORDER}
        for res in resources:
            bucket = by_type.setdefault(res.type_url, {})
            if res.name in bucket:
                raise InconsistentSnapshotError(
                    f"duplicate {short_name(res.type_url)} resource {res.name!r}"
                )
            bucket[res.name] = res
        versions = {
            t: _digest(f"{n}={r.version}".encode() for n, r in sorted(items.items()))
            for t, items in by_type.items()
        }
        overall = _digest(f"{t}={v}".encode() for t, v in sorted(versions.items()))
        frozen = {t: MappingProxyType(dict(sorted(v.items()))) for t, v in by_type.items()}
        return cls(
            MappingProxyType(frozen),
            MappingProxyType(versions),
            overall,
            MappingProxyType(dict(labels or {})),
        )

    def of_type(self, type_url: str) -> Mapping[str, Resource]:
        return self.resources.get(type_url, MappingProxyType({}))

    def type_version(self, type_url: str) -> str:
        return self.versions.get(type_url, "")

    def consistency_errors(self) -> list[str]:
        """Every dangling reference between resources, as readable sentences."""
        errors: list[str] = []
        clusters = self.of_type(CLUSTER)
        endpoints = self.of_type(ENDPOINT)
        routes = self.of_type(ROUTE)
        for name, res in clusters.items():
            cluster = res.unpack()
            assert isinstance(cluster, cluster_pb2.Cluster)
            if cluster.type == cluster_pb2.Cluster.EDS:
                eds_name = cluster.eds_cluster_config.service_name or name
                if eds_name not in endpoints:
                    errors.append(f"cluster {name!r} has no endpoints resource {eds_name!r}")
        for name, res in self.of_type(LISTENER).items():
            listener = res.unpack()
            assert isinstance(listener, listener_pb2.Listener)
            for rc_name in _rds_names(listener):
                if rc_name not in routes:
                    errors.append(
                        f"listener {name!r} references missing route configuration {rc_name!r}"
                    )
        for name, res in routes.items():
            rc = res.unpack()
            assert isinstance(rc, route_pb2.RouteConfiguration)
            for cluster_name in _route_clusters(rc):
                if cluster_name not in clusters:
                    errors.append(
                        f"route configuration {name!r} references missing cluster {cluster_name!r}"
                    )
        return errors

    def check(self) -> Snapshot:
        errors = self.consistency_errors()
        if errors:
            raise InconsistentSnapshotError("; ".join(errors))
        return self

    def differs_only_in_endpoints(self, other: Snapshot | None) -> bool:
        """True when publishing self after other changes nothing but EDS (no validation needed)."""
        if other is None:
            return False
        return all(self.type_version(t) == other.type_version(t) for t in ORDER if t != ENDPOINT)


def _rds_names(listener: listener_pb2.Listener) -> list[str]:
    names: list[str] = []
    for chain in [*listener.filter_chains, listener.default_filter_chain]:
        for flt in chain.filters:
            if flt.typed_config.type_url.endswith("HttpConnectionManager"):
                hcm = hcm_pb2.HttpConnectionManager()
                flt.typed_config.Unpack(hcm)
                if hcm.HasField("rds"):
                    names.append(hcm.rds.route_config_name)
    return names


def _route_clusters(rc: route_pb2.RouteConfiguration) -> set[str]:
    names: set[str] = set()
    for vh in rc.virtual_hosts:
        for route in vh.routes:
            if route.HasField("route"):
                action = route.route
                if action.cluster:
                    names.add(action.cluster)
                for wc in action.weighted_clusters.clusters:
                    names.add(wc.name)
    return names
