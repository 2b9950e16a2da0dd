"""Spine: one cluster (EDS over ADS) and one endpoints resource per service.

Features patch each cluster (``Feature.patch_cluster``); the upstream HTTP options that
several of them may set live in one typed extension option, reached through
:func:`upstream_http_options` and :func:`set_upstream_http_options`.
"""

from __future__ import annotations

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import address_pb2, protocol_pb2
from envoy.config.endpoint.v3 import endpoint_components_pb2, endpoint_pb2
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2

from meshgate.config import Service
from xds_server.compiler.context import CompileContext
from xds_server.compiler.protos import ADS, duration, pack

HTTP_OPTIONS_KEY = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"


def upstream_http_options(
    cluster: cluster_pb2.Cluster, service: Service
) -> http_protocol_options_pb2.HttpProtocolOptions:
    """A copy of the cluster's upstream HTTP options, or new ones naming the service's
    protocol: Envoy requires the protocol to be chosen whenever the message is present."""
    opts = http_protocol_options_pb2.HttpProtocolOptions()
    packed = cluster.typed_extension_protocol_options.get(HTTP_OPTIONS_KEY)
    if packed is not None:
        packed.Unpack(opts)
        return opts
    explicit = opts.explicit_http_config
    if service.protocol == "http2":
        explicit.http2_protocol_options.CopyFrom(protocol_pb2.Http2ProtocolOptions())
    else:
        explicit.http_protocol_options.CopyFrom(protocol_pb2.Http1ProtocolOptions())
    return opts


def set_upstream_http_options(
    cluster: cluster_pb2.Cluster, opts: http_protocol_options_pb2.HttpProtocolOptions
) -> None:
    cluster.typed_extension_protocol_options[HTTP_OPTIONS_KEY].CopyFrom(pack(opts))


def compile_cluster(ctx: CompileContext, service: Service) -> cluster_pb2.Cluster:
    cluster = cluster_pb2.Cluster(
        name=service.name,
        type=cluster_pb2.Cluster.EDS,
        eds_cluster_config=cluster_pb2.Cluster.EdsClusterConfig(eds_config=ADS),
        connect_timeout=duration(service.connect_timeout),
    )
    # A plain HTTP/1.1 service with default pooling has no options at all: Envoy's defaults
    # apply, and the cluster stays free of an extension it does not need.
    if service.protocol == "http2":
        set_upstream_http_options(cluster, upstream_http_options(cluster, service))
    for feature in ctx.features.patch_cluster:
        feature.patch_cluster(ctx, service, cluster)
    return cluster


def compile_load_assignment(
    ctx: CompileContext, service: Service
) -> endpoint_pb2.ClusterLoadAssignment:
    """The configured endpoints, then the discovered ones."""
    lb_endpoints = []
    for ep in [*service.endpoints, *ctx.endpoints(service.name)]:
        lbe = endpoint_components_pb2.LbEndpoint(
            endpoint=endpoint_components_pb2.Endpoint(
                address=address_pb2.Address(
                    socket_address=address_pb2.SocketAddress(address=ep.address, port_value=ep.port)
                )
            )
        )
        if ep.weight is not None:
            lbe.load_balancing_weight.value = ep.weight
        lb_endpoints.append(lbe)
    return endpoint_pb2.ClusterLoadAssignment(
        cluster_name=service.name,
        endpoints=[endpoint_components_pb2.LocalityLbEndpoints(lb_endpoints=lb_endpoints)],
    )
