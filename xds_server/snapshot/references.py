"""Which EDS and RDS names an Envoy is about to ask for, given the clusters and listeners of a
snapshot it holds.

The push order needs this: after a CDS update adds cluster ``b``, Envoy subscribes to the
endpoints of ``b`` on its own, and the routes that point at ``b`` must wait until that
subscription has been answered (the cluster has warmed). Without knowing that ``b`` will be
asked for, the server would see EDS "in sync" and push the routes too early.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)

from xds_server.snapshot.snapshot import CLUSTER, ENDPOINT, LISTENER, ROUTE, Snapshot

#: The type whose resources make Envoy subscribe to names of the key type.
PARENT = {ENDPOINT: CLUSTER, ROUTE: LISTENER}

_HCM_URL = "type.googleapis.com/" + hcm_pb2.HttpConnectionManager.DESCRIPTOR.full_name

#: Child names by parent name, e.g. cluster -> {its EDS service name}.
Children = dict[str, frozenset[str]]

#: Snapshot version -> type -> children. Versions are content hashes, so every stream serving
#: the same snapshot shares one computation.
_cache: OrderedDict[str, dict[str, Children]] = OrderedDict()
_CACHE_SIZE = 8


def expected_names(snap: Snapshot, type_url: str, held: Mapping[str, str]) -> frozenset[str]:
    """Names of ``type_url`` (EDS or RDS) that Envoy subscribes to because of the parent
    resources (clusters or listeners) it holds at the snapshot's version, per ``held`` (name ->
    version); empty for any other type. Parents it does not hold (yet) expect nothing."""
    parent = PARENT.get(type_url)
    if parent is None:
        return frozenset()
    own = snap.of_type(parent)
    children = _children(snap)[type_url]
    out: set[str] = set()
    for name, version in held.items():
        res = own.get(name)
        if res is not None and res.version == version:
            out |= children.get(name, frozenset())
    return frozenset(out)


def _children(snap: Snapshot) -> dict[str, Children]:
    entry = _cache.get(snap.version)
    if entry is None:
        entry = {ENDPOINT: _eds_names(snap), ROUTE: _rds_names(snap)}
        _cache[snap.version] = entry
        while len(_cache) > _CACHE_SIZE:
            _cache.popitem(last=False)
    else:
        _cache.move_to_end(snap.version)
    return entry


def _eds_names(snap: Snapshot) -> Children:
    out: Children = {}
    for name, res in snap.of_type(CLUSTER).items():
        cluster = cluster_pb2.Cluster()
        res.any.Unpack(cluster)
        if (
            cluster.type == cluster_pb2.Cluster.EDS
            and cluster.eds_cluster_config.eds_config.HasField("ads")
        ):
            out[name] = frozenset([cluster.eds_cluster_config.service_name or name])
    return out


def _rds_names(snap: Snapshot) -> Children:
    out: Children = {}
    for name, res in snap.of_type(LISTENER).items():
        names: set[str] = set()
        listener = listener_pb2.Listener()
        res.any.Unpack(listener)
        for chain in [*listener.filter_chains, listener.default_filter_chain]:
            for flt in chain.filters:
                if flt.typed_config.type_url != _HCM_URL:
                    continue
                hcm = hcm_pb2.HttpConnectionManager()
                flt.typed_config.Unpack(hcm)
                if hcm.HasField("rds") and hcm.rds.config_source.HasField("ads"):
                    names.add(hcm.rds.route_config_name)
        if names:
            out[name] = frozenset(names)
    return out
