"""Clusters and their endpoints (EDS over ADS)."""

from __future__ import annotations

from collections.abc import Sequence

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import address_pb2, protocol_pb2
from envoy.config.endpoint.v3 import endpoint_components_pb2, endpoint_pb2
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2

from meshgate.config import Endpoint, GatewayConfig, Service
from xds_server.compiler import resilience
from xds_server.compiler.protos import ADS, duration, pack


def http_protocol_options(service: Service) -> http_protocol_options_pb2.HttpProtocolOptions | None:
    """The upstream protocol and connection-pool settings, which Envoy takes in one message.

    None for a plain HTTP/1.1 service with default pooling: Envoy's defaults apply, and the
    cluster stays free of an extension it does not need.
    """
    common = resilience.common_http_options(service)
    if service.protocol == "http1" and common is None:
        return None
    explicit = http_protocol_options_pb2.HttpProtocolOptions.ExplicitHttpConfig()
    if service.protocol == "http2":
        explicit.http2_protocol_options.CopyFrom(protocol_pb2.Http2ProtocolOptions())
    else:  # Envoy requires the protocol to be chosen whenever the message is present
        explicit.http_protocol_options.CopyFrom(protocol_pb2.Http1ProtocolOptions())
    opts = http_protocol_options_pb2.HttpProtocolOptions(explicit_http_config=explicit)
    if common is not None:
        opts.common_http_protocol_options.CopyFrom(common)
    return opts


def compile_cluster(service: Service, config: GatewayConfig) -> cluster_pb2.Cluster:
    cluster = cluster_pb2.Cluster(
        name=service.name,
        type=cluster_pb2.Cluster.EDS,
        eds_cluster_config=cluster_pb2.Cluster.EdsClusterConfig(eds_config=ADS),
        connect_timeout=duration(service.connect_timeout),
    )
    opts = http_protocol_options(service)
    if opts is not None:
        cluster.typed_extension_protocol_options[
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
        ].CopyFrom(pack(opts))
    resilience.apply_cluster(service, config, cluster)
    return cluster


def compile_load_assignment(
    service: Service, discovered: Sequence[Endpoint] = ()
) -> endpoint_pb2.ClusterLoadAssignment:
    lb_endpoints = []
    for ep in [*service.endpoints, *discovered]:
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
