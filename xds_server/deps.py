"""Which EDS and RDS names an Envoy is about to ask for, given the clusters and listeners of a
snapshot.

The push order needs this: after a CDS update adds cluster ``b``, Envoy subscribes to the
endpoints of ``b`` on its own, and the routes that point at ``b`` must wait until that
subscription has been answered (the cluster has warmed). Without knowing that ``b`` will be
asked for, the server would see EDS "in sync" and push the routes too early.
"""

from __future__ import annotations

from collections import OrderedDict

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)

from .snapshot import CLUSTER, ENDPOINT, LISTENER, ROUTE, Snapshot

#: The type whose resources make Envoy subscribe to names of the key type.
PARENT = {ENDPOINT: CLUSTER, ROUTE: LISTENER}

_HCM_URL = "type.googleapis.com/" + hcm_pb2.HttpConnectionManager.DESCRIPTOR.full_name

#: Snapshot version -> type -> expected names. Versions are content hashes, so every stream
#: serving the same snapshot shares one computation.
_cache: OrderedDict[str, dict[str, frozenset[str]]] = OrderedDict()
_CACHE_SIZE = 8


def expected_names(snap: Snapshot, type_url: str) -> frozenset[str]:
    """Names of ``type_url`` (EDS or RDS) that the snapshot's clusters/listeners make Envoy
    subscribe to; empty for any other type."""
    if type_url not in PARENT:
        return frozenset()
    entry = _cache.get(snap.version)
    if entry is None:
        entry = {ENDPOINT: _eds_names(snap), ROUTE: _rds_names(snap)}
        _cache[snap.version] = entry
        while len(_cache) > _CACHE_SIZE:
            _cache.popitem(last=False)
    else:
        _cache.move_to_end(snap.version)
    return entry[type_url]


def _eds_names(snap: Snapshot) -> frozenset[str]:
    names: set[str] = set()
    for name, res in snap.of_type(CLUSTER).items():
        cluster = cluster_pb2.Cluster()
        res.any.Unpack(cluster)
        if (
            cluster.type == cluster_pb2.Cluster.EDS
            and cluster.eds_cluster_config.eds_config.HasField("ads")
        ):
            names.add(cluster.eds_cluster_config.service_name or name)
    return frozenset(names)


def _rds_names(snap: Snapshot) -> frozenset[str]:
    names: set[str] = set()
    for res in snap.of_type(LISTENER).values():
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
    return frozenset(names)
