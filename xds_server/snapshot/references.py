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
  cluster named in a per-filter config (route, virtual host or weighted cluster level);
* anything -> the secret each ``SdsSecretConfig`` over ADS names (a filter config's, a TLS
  context's), and the filter config (ECDS) each filter with ``config_discovery`` over ADS asks
  for; a filter config (``TypedExtensionConfig``) is walked like a filter, so the secrets it
  names are its references.

How a resource is walked is in :mod:`xds_server.snapshot.walker`. The result is kept by the
snapshot object it belongs to (``Snapshot.references``), not in a module-level cache.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

from google.protobuf import any_pb2
from google.protobuf.message import Message

from xds_server.snapshot.type_urls import (
    CLUSTER,
    ENDPOINT,
    EXTENSION_CONFIG,
    LISTENER,
    NOUNS,
    ORDER,
    ROUTE,
    SECRET,
)
from xds_server.snapshot.walker import Walker, via

#: The types whose resources make Envoy subscribe to names of the key type: it asks for a
#: cluster's endpoints once it holds the cluster, for a secret once it holds a cluster, listener,
#: filter config or route configuration that names it, and so on.
PARENTS: Mapping[str, tuple[str, ...]] = {
    ENDPOINT: (CLUSTER,),
    ROUTE: (LISTENER,),
    EXTENSION_CONFIG: (LISTENER,),
    SECRET: (CLUSTER, LISTENER, EXTENSION_CONFIG, ROUTE),
}


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
        self._children: dict[tuple[str, str], dict[str, frozenset[str]]] = {}

    def of_type(self, type_url: str) -> Mapping[str, tuple[Reference, ...]]:
        """Resource name -> what it references, for every resource of ``type_url``."""
        refs = self._by_type.get(type_url)
        if refs is None:
            refs = self._by_type[type_url] = self._walk_type(type_url)
        return refs

    def of(self, type_url: str, name: str) -> tuple[Reference, ...]:
        return self.of_type(type_url).get(name, ())

    def children(self, type_url: str, parent: str | None = None) -> Mapping[str, frozenset[str]]:
        """Parent name -> the ``type_url`` names it makes Envoy ask for, for the parents of
        type ``parent`` (by default the first of :data:`PARENTS`: clusters for EDS, listeners
        for RDS and ECDS)."""
        parents = PARENTS.get(type_url, ())
        parent = parent if parent is not None else (parents[0] if parents else "")
        key = (type_url, parent)
        out = self._children.get(key)
        if out is None:
            out = {}
            if parent in parents:
                for name, refs in self.of_type(parent).items():
                    names = frozenset(r.name for r in refs if r.type_url == type_url)
                    if names:
                        out[name] = names
            self._children[key] = out
        return out

    def referenced(self, type_url: str) -> frozenset[str]:
        """Every name of ``type_url`` some resource of the snapshot makes Envoy ask for."""
        out: set[str] = set()
        for parent in PARENTS.get(type_url, ()):
            for names in self.children(type_url, parent).values():
                out |= names
        return frozenset(out)

    def expected_names(
        self, type_url: str, held: Mapping[str, str], parent: str | None = None
    ) -> frozenset[str]:
        """Names of ``type_url`` (EDS, RDS, SDS, ECDS) that Envoy subscribes to because of the
        ``parent`` resources (by default the first of :data:`PARENTS`) it holds at this
        snapshot's version, per ``held`` (name -> version); empty for any other type. Parents
        it does not hold (yet) expect nothing."""
        parents = PARENTS.get(type_url, ())
        parent = parent if parent is not None else (parents[0] if parents else None)
        if parent is None or parent not in parents:
            return frozenset()
        own = self._resources.get(parent, {})
        children = self.children(type_url, parent)
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
