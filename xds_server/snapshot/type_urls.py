"""The xDS resource types a snapshot holds, their push order and their names in logs.

Kept apart from :mod:`xds_server.snapshot.snapshot` so that the reference walker
(:mod:`xds_server.snapshot.references`), which the snapshot uses, can name the types without
importing the snapshot back.
"""

from __future__ import annotations

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import extension_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_pb2
from envoy.extensions.transport_sockets.tls.v3 import secret_pb2
from google.protobuf.message import Message

CLUSTER = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
ENDPOINT = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
#: SDS: secrets (here generic ones: OAuth2 client and HMAC secrets), named by an
#: ``SdsSecretConfig`` in a filter config or transport socket.
SECRET = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"
#: ECDS: one HTTP filter's config, named by the ``HttpFilter`` whose ``config_discovery`` asks
#: for it (the resource name is the filter's name). A change of it reaches Envoy without a
#: listener update, so no connection is drained.
EXTENSION_CONFIG = "type.googleapis.com/envoy.config.core.v3.TypedExtensionConfig"
LISTENER = "type.googleapis.com/envoy.config.listener.v3.Listener"
ROUTE = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"

#: Make-before-break order: a cluster (and its endpoints) must exist before a route points at
#: it, and a listener before the route configuration it asks for. Secrets and filter configs
#: go before listeners: a new version of one the fleet already holds is in place before the
#: listeners of the same snapshot arrive, and it never waits behind a listener update. A
#: *new* name is asked for by Envoy only once it holds the listener (or cluster, or filter
#: config) that names it; that request is answered at once, outside this order, while Envoy
#: warms the listener, and the types after it (RDS) wait for that answer. Secrets come before
#: filter configs because a filter config (oauth2's) may name a secret.
ORDER: tuple[str, ...] = (CLUSTER, ENDPOINT, SECRET, EXTENSION_CONFIG, LISTENER, ROUTE)

#: The types every snapshot carries, even empty (their versions make up the snapshot's
#: version); the others appear only when the snapshot has resources of them.
CORE_TYPES: tuple[str, ...] = (CLUSTER, ENDPOINT, LISTENER, ROUTE)

#: Types whose subscriptions are wildcard (Envoy asks for "everything"); SotW responses for these
#: must always carry the full set, and removal is expressed by omission.
WILDCARD_TYPES = frozenset({CLUSTER, LISTENER})

SHORT_NAMES = {
    CLUSTER: "CDS",
    ENDPOINT: "EDS",
    SECRET: "SDS",
    EXTENSION_CONFIG: "ECDS",
    LISTENER: "LDS",
    ROUTE: "RDS",
}

#: What a reference to a resource of each type is called in an error message.
NOUNS = {
    CLUSTER: "cluster",
    ENDPOINT: "endpoints resource",
    SECRET: "secret",
    EXTENSION_CONFIG: "filter config (ECDS)",
    LISTENER: "listener",
    ROUTE: "route configuration",
}

MESSAGE_TYPES: dict[str, type[Message]] = {
    CLUSTER: cluster_pb2.Cluster,
    ENDPOINT: endpoint_pb2.ClusterLoadAssignment,
    SECRET: secret_pb2.Secret,
    EXTENSION_CONFIG: extension_pb2.TypedExtensionConfig,
    LISTENER: listener_pb2.Listener,
    ROUTE: route_pb2.RouteConfiguration,
}


def short_name(type_url: str) -> str:
    """CDS/EDS/SDS/ECDS/LDS/RDS for logs and metrics; the bare message name for anything else."""
    return SHORT_NAMES.get(type_url, type_url.rsplit(".", 1)[-1])
