"""Limits, CORS, compression, security headers, the server header and response caching.

Listener level: HTTP connection manager settings (edge defaults), network filters, the HTTP
filter chain (only the filters some route uses). Route and virtual-host level: per-filter
configs that turn those filters on or off, and security response headers.
"""

from __future__ import annotations

from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_components_pb2 as rc_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)

from meshgate.config import Route, VirtualHost

from .context import ListenerContext, RouteContext


def http_filters(ctx: ListenerContext) -> list[hcm_pb2.HttpFilter]:
    """HTTP filters before the router, in order; only those some route of the listener uses."""
    return []


def apply_hcm(ctx: ListenerContext, hcm: hcm_pb2.HttpConnectionManager) -> None:
    """Timeouts, header limits, HTTP/2 limits, underscores, server header."""


def apply_listener(ctx: ListenerContext, listener: listener_pb2.Listener) -> None:
    """Buffer limits and the connection limit network filter."""


def apply_route(route: Route, ctx: RouteContext, out: rc_pb2.Route) -> None:
    """Per-route filter configs (body limit, CORS, compression, cache), security headers."""


def apply_vhost(vhost: VirtualHost, ctx: ListenerContext, out: rc_pb2.VirtualHost) -> None:
    """Virtual-host CORS and security headers."""
