"""The four xDS resource types a snapshot holds, their order and their names in logs.

Kept apart from :mod:`xds_server.snapshot.snapshot` so that the reference walker
(:mod:`xds_server.snapshot.references`), which the snapshot uses, can name the types without
importing the snapshot back.
"""

from __future__ import annotations

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_pb2
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

#: What a reference to a resource of each type is called in an error message.
NOUNS = {
    CLUSTER: "cluster",
    ENDPOINT: "endpoints resource",
    LISTENER: "listener",
    ROUTE: "route configuration",
}

MESSAGE_TYPES: dict[str, type[Message]] = {
    CLUSTER: cluster_pb2.Cluster,
    ENDPOINT: endpoint_pb2.ClusterLoadAssignment,
    LISTENER: listener_pb2.Listener,
    ROUTE: route_pb2.RouteConfiguration,
}


def short_name(type_url: str) -> str:
    """CDS/EDS/LDS/RDS for logs and metrics; the bare message name for anything else."""
    return SHORT_NAMES.get(type_url, type_url.rsplit(".", 1)[-1])
