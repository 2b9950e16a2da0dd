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

from envoy.config.core.v3 import base_pb2
from google.protobuf import any_pb2, text_encoding
from google.protobuf.message import Message

from xds_server.snapshot.references import References
from xds_server.snapshot.type_urls import (
    CLUSTER,
    CORE_TYPES,
    ENDPOINT,
    EXTENSION_CONFIG,
    LISTENER,
    MESSAGE_TYPES,
    ORDER,
    ROUTE,
    SECRET,
    SHORT_NAMES,
    WILDCARD_TYPES,
    short_name,
)

__all__ = [
    "CLUSTER",
    "CORE_TYPES",
    "ENDPOINT",
    "EXTENSION_CONFIG",
    "LISTENER",
    "ORDER",
    "ROUTE",
    "SECRET",
    "SHORT_NAMES",
    "WILDCARD_TYPES",
    "InconsistentSnapshotError",
    "Resource",
    "Snapshot",
    "hide_secrets",
    "secret_values",
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
    #: Not in ``repr``: a secret's value is in these bytes, and a repr ends up in logs.
    any: any_pb2.Any = field(repr=False)
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


def secret_values(resources: Iterable[Resource]) -> frozenset[str]:
    """Every value the SDS resources among ``resources`` carry inline (a generic secret, a
    private key), as it is and as protobuf's text format quotes it: what must be hidden from
    any text that may quote it back (an Envoy NACK, ``envoy --mode validate`` output)."""
    out: set[str] = set()
    for res in resources:
        if res.type_url != SECRET:
            continue
        stack: list[Message] = [res.unpack()]
        while stack:
            msg = stack.pop()
            if isinstance(msg, base_pb2.DataSource):
                raw = msg.inline_bytes or msg.inline_string.encode()
                if raw:
                    out.add(raw.decode(errors="replace"))
                    out.add(text_encoding.CEscape(raw, as_utf8=True))
                continue
            for fd, value in msg.ListFields():
                if fd.message_type is None:
                    continue
                if fd.message_type.GetOptions().map_entry:
                    stack.extend(value.values())
                elif fd.is_repeated:
                    stack.extend(value)
                else:
                    stack.append(value)
    out.discard("")
    return frozenset(out)


def hide_secrets(text: str, values: Iterable[str]) -> str:
    """``text`` with every secret value in ``values`` replaced by ``<redacted secret>``
    (longest first, so a value that contains another is hidden whole)."""
    for value in sorted(values, key=len, reverse=True):
        if value in text:
            text = text.replace(value, "<redacted secret>")
    return text


class InconsistentSnapshotError(ValueError):
    """A snapshot references a resource it does not contain; it must never be published."""


#: The version of a type the snapshot has no resources of.
EMPTY_VERSION = _digest([])


@dataclass(frozen=True)
class Snapshot:
    """All resources of every type, with a content version per type and overall.

    The :data:`CORE_TYPES` are always present (empty or not); SDS and ECDS only when the
    snapshot has resources of them, so a config that uses neither has the version it had
    before they existed.
    """

    resources: Mapping[str, Mapping[str, Resource]]
    versions: Mapping[str, str]
    version: str
    #: Free-form provenance (config file, config hash) shown by `meshgate status`.
    labels: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def build(
        cls, resources: Iterable[Resource], labels: Mapping[str, str] | None = None
    ) -> Snapshot:
        by_type: dict[str, dict[str, Resource]] = {t: {} for t in CORE_TYPES}
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
        rank = {t: i for i, t in enumerate(ORDER)}
        frozen = {
            t: MappingProxyType(dict(sorted(by_type[t].items())))
            for t in sorted(by_type, key=lambda t: (rank.get(t, len(rank)), t))
        }
        return cls(
            MappingProxyType(frozen),
            MappingProxyType(versions),
            overall,
            MappingProxyType(dict(labels or {})),
        )

    def of_type(self, type_url: str) -> Mapping[str, Resource]:
        return self.resources.get(type_url, MappingProxyType({}))

    def type_version(self, type_url: str) -> str:
        """The content version of one type; :data:`EMPTY_VERSION` for a type it has none of
        (an Envoy that follows SDS or ECDS is told that version while there are none)."""
        return self.versions.get(type_url, EMPTY_VERSION)

    @property
    def types(self) -> tuple[str, ...]:
        """The types this snapshot carries, in push order (the core types always)."""
        return tuple(self.resources)

    @cached_property
    def references(self) -> References:
        """What each resource names (clusters, endpoints, route configurations), walked once
        per snapshot object and shared by every stream that serves it."""
        return References(self.resources)

    @cached_property
    def secret_values(self) -> frozenset[str]:
        """The values of the snapshot's secrets (see :func:`secret_values`)."""
        return secret_values(self.of_type(SECRET).values())

    def hide_secrets(self, text: str) -> str:
        """``text`` without any of this snapshot's secret values in clear."""
        values = self.secret_values
        return hide_secrets(text, values) if values else text

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
        types = {*self.types, *other.types} - {ENDPOINT}
        return all(self.type_version(t) == other.type_version(t) for t in types)
