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
from functools import cached_property
from types import MappingProxyType

from google.protobuf import any_pb2
from google.protobuf.message import Message

from xds_server.snapshot.references import References
from xds_server.snapshot.type_urls import (
    CLUSTER,
    ENDPOINT,
    LISTENER,
    MESSAGE_TYPES,
    ORDER,
    ROUTE,
    SHORT_NAMES,
    WILDCARD_TYPES,
    short_name,
)

__all__ = [
    "CLUSTER",
    "ENDPOINT",
    "LISTENER",
    "ORDER",
    "ROUTE",
    "SHORT_NAMES",
    "WILDCARD_TYPES",
    "InconsistentSnapshotError",
    "Resource",
    "Snapshot",
    "short_name",
]


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
        msg = MESSAGE_TYPES[self.type_url]()
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

    @cached_property
    def references(self) -> References:
        """What each resource names (clusters, endpoints, route configurations), walked once
        per snapshot object and shared by every stream that serves it."""
        return References(self.resources)

    def consistency_errors(self) -> list[str]:
        """Every dangling reference between resources, as readable sentences: a listener's
        route configuration, a route's cluster, an EDS cluster's endpoints, and any cluster a
        filter, access log or tracer names (see :mod:`xds_server.snapshot.references`)."""
        return self.references.dangling()

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
