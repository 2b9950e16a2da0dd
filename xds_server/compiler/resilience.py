"""Retries, circuit breakers, outlier detection, health checks and load balancing.

Route-level: the retry policy (the route's own, else its service's default). Cluster-level:
thresholds (with an automatic retry budget for retried services), outlier detection, active
health checks, the load-balancing policy and connection-pool settings.
"""

from __future__ import annotations

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.route.v3 import route_components_pb2 as rc_pb2

from meshgate.config import GatewayConfig, Route, Service

from .context import RouteContext


def apply_route(route: Route, ctx: RouteContext, action: rc_pb2.RouteAction) -> None:
    """Set the route's retry policy on ``action``."""


def apply_cluster(service: Service, config: GatewayConfig, cluster: cluster_pb2.Cluster) -> None:
    """Set thresholds, outlier detection, health checks, lb policy, pool settings."""
