"""Limits, timeouts, the body limit, security headers, the server header and response caching.

Listener level: HTTP connection manager settings (edge defaults) and the connection limit
network filter. HTTP filters (body limit, response headers, cache) are in a listener's chain
only when some route of it uses them, *disabled*, and switched on by the per-route config of
the routes that do. CORS and compression are features of their own (``cors.py``,
``compression.py``).

Why the response headers (security headers, ``x-cache``, the ``server`` removal on cached
routes) go through a header-mutation filter rather than the route's ``response_headers_to_add``:
the router applies those only to responses it proxies itself. A cache hit is answered by the
cache filter, and a cache miss fetched by it, both without the router; a header-mutation filter
placed before the cache sees every response, local replies included.
"""

from __future__ import annotations

from collections.abc import Iterator

from envoy.config.common.mutation_rules.v3 import mutation_rules_pb2
from envoy.config.core.v3 import base_pb2, protocol_pb2
from envoy.config.listener.v3 import listener_components_pb2, listener_pb2
from envoy.config.route.v3 import route_components_pb2 as rc_pb2
from envoy.extensions.filters.http.buffer.v3 import buffer_pb2
from envoy.extensions.filters.http.cache.v3 import cache_pb2
from envoy.extensions.filters.http.header_mutation.v3 import header_mutation_pb2
from envoy.extensions.filters.network.connection_limit.v3 import connection_limit_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from envoy.extensions.http.cache.simple_http_cache.v3 import config_pb2 as simple_cache_pb2
from google.protobuf import wrappers_pb2

from meshgate.config import Listener, Route, VirtualHost
from meshgate.config.protection import SecurityHeaders
from xds_server.compiler.context import ListenerContext, VirtualHostContext
from xds_server.compiler.feature import Feature
from xds_server.compiler.filters import BUFFER, CACHE, RESPONSE_HEADERS, enable, http_filter
from xds_server.compiler.protos import duration, pack

CONNECTION_LIMIT = "envoy.filters.network.connection_limit"

#: The response header that says whether the cache answered; its value is computed by Envoy
#: per response from the response code details the cache filter sets on a hit.
CACHE_STATUS_HEADER = "x-cache"
CACHE_STATUS_VALUE = (
    "%CEL(response.code_details == 'cache.response_from_cache_filter' ? 'hit' : 'miss')%"
)

#: Envoy's edge-proxy guidance for HTTP/2 flow control: 64 KiB per stream and 1 MiB per
#: connection bound what one client can make Envoy buffer (its defaults are 256 MiB).
H2_INITIAL_STREAM_WINDOW = 65_536
H2_INITIAL_CONNECTION_WINDOW = 1_048_576

_UNDERSCORES = {
    "reject": protocol_pb2.HttpProtocolOptions.REJECT_REQUEST,
    "drop": protocol_pb2.HttpProtocolOptions.DROP_HEADER,
    "allow": protocol_pb2.HttpProtocolOptions.ALLOW,
}


def _routes(listener: Listener) -> Iterator[tuple[VirtualHost, Route]]:
    for vhost in listener.virtual_hosts:
        for route in vhost.routes:
            yield vhost, route


def _uses_response_headers(listener: Listener) -> bool:
    return any(
        r.cache or r.security_headers is not None or vh.security_headers is not None
        for vh, r in _routes(listener)
    )


def security_header_values(headers: SecurityHeaders) -> list[tuple[str, str]]:
    """(name, value) of every header the policy sets, in a fixed order."""
    out: list[tuple[str, str]] = []
    if headers.hsts is not None:
        hsts = f"max-age={int(headers.hsts.max_age.total_seconds())}"
        if headers.hsts.include_subdomains:
            hsts += "; includeSubDomains"
        if headers.hsts.preload:
            hsts += "; preload"
        out.append(("strict-transport-security", hsts))
    if headers.content_type_options:
        out.append(("x-content-type-options", "nosniff"))
    if headers.frame_options is not None:
        out.append(("x-frame-options", headers.frame_options))
    if headers.referrer_policy is not None:
        out.append(("referrer-policy", headers.referrer_policy))
    if headers.content_security_policy is not None:
        out.append(("content-security-policy", headers.content_security_policy))
    if headers.permissions_policy is not None:
        out.append(("permissions-policy", headers.permissions_policy))
    return out


def _set(name: str, value: str) -> mutation_rules_pb2.HeaderMutation:
    return mutation_rules_pb2.HeaderMutation(
        append=base_pb2.HeaderValueOption(
            header=base_pb2.HeaderValue(key=name, value=value),
            append_action=base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD,
        )
    )


def _route_mutations(
    route: Route, ctx: VirtualHostContext
) -> list[mutation_rules_pb2.HeaderMutation]:
    """Every response header change of one route, its virtual host's policy included.

    Each route carries its complete set: the filter applies the configs of every level, so a
    virtual-host config could not be replaced as a whole by a route's own policy.
    """
    mutations: list[mutation_rules_pb2.HeaderMutation] = []
    if route.cache and ctx.listener.server_header.mode == "remove":
        mutations.append(mutation_rules_pb2.HeaderMutation(remove="server"))
    policy = route.security_headers
    if policy is None:
        policy = ctx.vhost.security_headers
    if policy is not None:
        # Values are substitution format strings for this filter: a literal '%' is '%%'.
        mutations += [_set(k, v.replace("%", "%%")) for k, v in security_header_values(policy)]
    if route.cache:
        mutations.append(_set(CACHE_STATUS_HEADER, CACHE_STATUS_VALUE))
    return mutations


class Protection(Feature):
    name = "protection"
    http_filter_names = (BUFFER, RESPONSE_HEADERS, CACHE)

    def http_filters(self, ctx: ListenerContext) -> list[hcm_pb2.HttpFilter]:
        """The body limit, response headers and cache filters, each only when some route of the
        listener uses it, disabled, and switched on by those routes' per-filter configs."""
        listener = ctx.listener
        out: list[hcm_pb2.HttpFilter] = []
        body_limits = [r.max_request_bytes for _, r in _routes(listener) if r.max_request_bytes]
        if body_limits:
            # The value here is never used: each route that enables the filter has its own.
            out.append(
                http_filter(
                    BUFFER,
                    buffer_pb2.Buffer(
                        max_request_bytes=wrappers_pb2.UInt32Value(value=max(body_limits))
                    ),
                    disabled=True,
                )
            )
        if _uses_response_headers(listener):
            out.append(
                http_filter(RESPONSE_HEADERS, header_mutation_pb2.HeaderMutation(), disabled=True)
            )
        if any(r.cache for _, r in _routes(listener)):
            out.append(
                http_filter(
                    CACHE,
                    # No max_body_bytes: Envoy 1.40's cache stores larger responses anyway
                    # (tested), so the setting would only promise a bound that does not exist.
                    cache_pb2.CacheConfig(
                        typed_config=pack(simple_cache_pb2.SimpleHttpCacheConfig())
                    ),
                    disabled=True,
                )
            )
        return out

    def patch_hcm(self, ctx: ListenerContext, hcm: hcm_pb2.HttpConnectionManager) -> None:
        """Timeouts, header limits, HTTP/2 limits, underscores, server header."""
        listener = ctx.listener
        timeouts, limits = listener.timeouts, listener.limits
        hcm.common_http_protocol_options.CopyFrom(
            protocol_pb2.HttpProtocolOptions(
                idle_timeout=duration(timeouts.idle),
                headers_with_underscores_action=_UNDERSCORES[limits.headers_with_underscores],
            )
        )
        hcm.stream_idle_timeout.CopyFrom(duration(timeouts.stream_idle))
        hcm.request_headers_timeout.CopyFrom(duration(timeouts.request_headers))
        hcm.max_request_headers_kb.value = limits.max_request_headers_kb
        hcm.http2_protocol_options.CopyFrom(
            protocol_pb2.Http2ProtocolOptions(
                max_concurrent_streams=wrappers_pb2.UInt32Value(
                    value=limits.http2_max_concurrent_streams
                ),
                initial_stream_window_size=wrappers_pb2.UInt32Value(value=H2_INITIAL_STREAM_WINDOW),
                initial_connection_window_size=wrappers_pb2.UInt32Value(
                    value=H2_INITIAL_CONNECTION_WINDOW
                ),
            )
        )
        server = listener.server_header
        if server.mode == "replace":
            hcm.server_header_transformation = hcm_pb2.HttpConnectionManager.OVERWRITE
            hcm.server_name = server.value or ""
        else:
            # Removal: Envoy adds no header of its own, and the upstream's is removed per virtual
            # host (patch_vhost) and, on cached routes, by the response-headers filter.
            hcm.server_header_transformation = hcm_pb2.HttpConnectionManager.PASS_THROUGH

    def patch_listener(self, ctx: ListenerContext, listener: listener_pb2.Listener) -> None:
        """Buffer limits and the connection limit network filter."""
        limits = ctx.listener.limits
        listener.per_connection_buffer_limit_bytes.value = limits.per_connection_buffer_bytes
        if limits.max_connections is not None:
            limit = listener_components_pb2.Filter(
                name=CONNECTION_LIMIT,
                typed_config=pack(
                    connection_limit_pb2.ConnectionLimit(
                        stat_prefix=ctx.listener.name,
                        max_connections=wrappers_pb2.UInt64Value(value=limits.max_connections),
                    )
                ),
            )
            for chain in listener.filter_chains:
                chain.filters.insert(0, limit)

    def patch_route(self, ctx: VirtualHostContext, route: Route, out: rc_pb2.Route) -> None:
        """Per-route filter configs: body limit, response headers (security headers, cache)."""
        configs = out.typed_per_filter_config
        if route.max_request_bytes is not None:
            configs[BUFFER].CopyFrom(
                pack(
                    buffer_pb2.BufferPerRoute(
                        buffer=buffer_pb2.Buffer(
                            max_request_bytes=wrappers_pb2.UInt32Value(
                                value=route.max_request_bytes
                            )
                        )
                    )
                )
            )
        mutations = _route_mutations(route, ctx)
        if mutations:
            configs[RESPONSE_HEADERS].CopyFrom(
                pack(
                    header_mutation_pb2.HeaderMutationPerRoute(
                        mutations=header_mutation_pb2.Mutations(response_mutations=mutations)
                    )
                )
            )
        if route.cache:
            configs[CACHE].CopyFrom(enable())

    def patch_vhost(self, ctx: VirtualHostContext, out: rc_pb2.VirtualHost) -> None:
        """The removal of the upstream's ``server`` header (the virtual host's security headers
        are compiled into each of its routes, see patch_route)."""
        if ctx.listener.server_header.mode == "remove":
            out.response_headers_to_remove.append("server")
