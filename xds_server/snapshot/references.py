"""The one reference walker: which other resources each resource of a snapshot names.

Three readers depend on the same answer, so there is one walker for all of them:

* :meth:`Snapshot.consistency_errors <xds_server.snapshot.snapshot.Snapshot.consistency_errors>`:
  every reference must resolve inside the snapshot, or the snapshot is never published. A
  filter that names a cluster the snapshot lacks would make Envoy fail requests (or reject the
  listener), so it is caught here, with the listener, the filter and the field.
* the ADS planner (:mod:`xds_server.server.planner`): after a CDS update adds cluster ``b``,
  Envoy subscribes to the endpoints of ``b`` on its own, and the routes that point at ``b``
  must wait until that subscription has been answered. :meth:`References.expected_names` says
  which EDS and RDS names Envoy will ask for because of the clusters and listeners it holds.
* the validate-mode bootstrap (:func:`xds_server.publish.validation.static_bootstrap`): which
  endpoints resource belongs to which cluster.

What is a reference (go-control-plane's ``GetResourceReferences`` is the model, extended to
everything a filter can name):

* cluster -> its endpoints (EDS service name) when they come over ADS; a custom cluster type
  (aggregate) -> the clusters it names;
* listener -> the route configuration each HTTP connection manager asks for over ADS, and every
  cluster named anywhere in its network filters, HTTP filters, access logs and tracing;
* route configuration -> each route's cluster or weighted clusters, request mirrors, and any
  cluster named in a per-filter config (route, virtual host or weighted cluster level).

How a resource is walked is in :mod:`xds_server.snapshot.walker`. The result is kept by the
snapshot object it belongs to (``Snapshot.references``), not in a module-level cache.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

from google.protobuf import any_pb2
from google.protobuf.message import Message

from xds_server.snapshot.type_urls import CLUSTER, ENDPOINT, LISTENER, NOUNS, ORDER, ROUTE
from xds_server.snapshot.walker import Walker, via

#: The type whose resources make Envoy subscribe to names of the key type.
PARENT = {ENDPOINT: CLUSTER, ROUTE: LISTENER}


@dataclass(frozen=True, slots=True)
class Reference:
    """``name`` of type ``type_url`` is named by a resource, at ``via``."""

    type_url: str
    name: str
    #: Where, for people: ``HTTP filter 'envoy.filters.http.ext_authz'
    #: (grpc_service.envoy_grpc.cluster_name)``.
    via: str


class Packed(Protocol):
    """What the walker needs of a snapshot resource (:class:`~xds_server.snapshot.snapshot.
    Resource` has it)."""

    @property
    def any(self) -> any_pb2.Any: ...

    @property
    def version(self) -> str: ...


class References:
    """The references of every resource of one snapshot, walked lazily once per type."""

    def __init__(self, resources: Mapping[str, Mapping[str, Packed]]) -> None:
        self._resources = resources
        self._by_type: dict[str, dict[str, tuple[Reference, ...]]] = {}
        self._children: dict[str, dict[str, frozenset[str]]] = {}

    def of_type(self, type_url: str) -> Mapping[str, tuple[Reference, ...]]:
        """Resource name -> what it references, for every resource of ``type_url``."""
        refs = self._by_type.get(type_url)
        if refs is None:
            refs = self._by_type[type_url] = self._walk_type(type_url)
        return refs

    def of(self, type_url: str, name: str) -> tuple[Reference, ...]:
        return self.of_type(type_url).get(name, ())

    def children(self, type_url: str) -> Mapping[str, frozenset[str]]:
        """Parent name -> the ``type_url`` (EDS or RDS) names it makes Envoy ask for."""
        out = self._children.get(type_url)
        if out is None:
            out = {}
            parent = PARENT.get(type_url)
            if parent is not None:
                for name, refs in self.of_type(parent).items():
                    names = frozenset(r.name for r in refs if r.type_url == type_url)
                    if names:
                        out[name] = names
            self._children[type_url] = out
        return out

    def expected_names(self, type_url: str, held: Mapping[str, str]) -> frozenset[str]:
        """Names of ``type_url`` (EDS or RDS) that Envoy subscribes to because of the parent
        resources (clusters or listeners) it holds at this snapshot's version, per ``held``
        (name -> version); empty for any other type. Parents it does not hold (yet) expect
        nothing."""
        parent = PARENT.get(type_url)
        if parent is None:
            return frozenset()
        own = self._resources.get(parent, {})
        children = self.children(type_url)
        out: set[str] = set()
        for name, version in held.items():
            res = own.get(name)
            if res is not None and res.version == version:
                out |= children.get(name, frozenset())
        return frozenset(out)

    def dangling(self) -> list[str]:
        """Every reference to a resource the snapshot does not contain, as a sentence."""
        errors: list[str] = []
        for type_url in self._types():
            for name, refs in self.of_type(type_url).items():
                for ref in refs:
                    if ref.name not in self._resources.get(ref.type_url, {}):
                        errors.append(
                            f"{_noun(type_url)} {name!r}: {ref.via} references missing "
                            f"{_noun(ref.type_url)} {ref.name!r}"
                        )
        return errors

    def _types(self) -> list[str]:
        return [*ORDER, *sorted(t for t in self._resources if t not in ORDER)]

    def _walk_type(self, type_url: str) -> dict[str, tuple[Reference, ...]]:
        if type_url == ENDPOINT:
            return {}  # endpoints name addresses, never other resources
        walker = Walker()  # per walk: its memo lives no longer than this call
        out: dict[str, tuple[Reference, ...]] = {}
        for name, res in self._resources.get(type_url, {}).items():
            message = walker.unpack(res.any)
            if message is None:
                continue
            found = walker.resource(name, message)
            if found:
                out[name] = tuple(
                    Reference(t, n, via(label, path)) for (t, n), (label, path) in found.items()
                )
        return out


def resource_references(name: str, message: Message) -> tuple[Reference, ...]:
    """What one resource references (for a resource outside any snapshot)."""
    found = Walker().resource(name, message)
    return tuple(Reference(t, n, via(label, path)) for (t, n), (label, path) in found.items())


def _noun(type_url: str) -> str:
    return NOUNS.get(type_url, type_url.rsplit(".", 1)[-1])
