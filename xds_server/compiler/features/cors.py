"""CORS: Envoy's cors filter, switched on per virtual host or route by a ``CorsPolicy``.

The filter sits in a listener's chain only when some virtual host or route of the listener has
a ``cors`` policy, and even then *disabled*: Envoy's cors filter does nothing for a request
whose route (or virtual host) carries no policy, but a disabled filter is skipped without
even being looked up, so routes without CORS pay nothing. A policy on a route replaces its
virtual host's as a whole (Envoy uses the most specific per-filter config).

This is the smallest complete feature; ``docs/adding-a-feature.md`` walks through it.
"""

from __future__ import annotations

from envoy.config.route.v3 import route_components_pb2 as rc_pb2
from envoy.extensions.filters.http.cors.v3 import cors_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from envoy.type.matcher.v3 import regex_pb2, string_pb2
from google.protobuf import wrappers_pb2

from meshgate.config import Listener, Route
from meshgate.config.protection import Cors as CorsSettings
from xds_server.compiler.context import ListenerContext, VirtualHostContext
from xds_server.compiler.feature import Feature
from xds_server.compiler.filters import CORS, http_filter
from xds_server.compiler.protos import pack


def cors_policy(cors: CorsSettings) -> cors_pb2.CorsPolicy:
    return cors_pb2.CorsPolicy(
        allow_origin_string_match=[
            *(string_pb2.StringMatcher(exact=o) for o in cors.allow_origins),
            *(
                string_pb2.StringMatcher(safe_regex=regex_pb2.RegexMatcher(regex=r))
                for r in cors.allow_origin_regex
            ),
        ],
        allow_methods=",".join(cors.allow_methods),
        allow_headers=",".join(cors.allow_headers),
        expose_headers=",".join(cors.expose_headers),
        allow_credentials=wrappers_pb2.BoolValue(value=cors.allow_credentials),
        max_age=str(int(cors.max_age.total_seconds())),
    )


def uses_cors(listener: Listener) -> bool:
    return any(
        vh.cors is not None or any(r.cors is not None for r in vh.routes)
        for vh in listener.virtual_hosts
    )


class Cors(Feature):
    name = "cors"
    http_filter_names = (CORS,)

    def http_filters(self, ctx: ListenerContext) -> list[hcm_pb2.HttpFilter]:
        if not uses_cors(ctx.listener):
            return []
        return [http_filter(CORS, cors_pb2.Cors(), disabled=True)]

    def patch_vhost(self, ctx: VirtualHostContext, out: rc_pb2.VirtualHost) -> None:
        if ctx.vhost.cors is not None:
            out.typed_per_filter_config[CORS].CopyFrom(pack(cors_policy(ctx.vhost.cors)))

    def patch_route(self, ctx: VirtualHostContext, route: Route, out: rc_pb2.Route) -> None:
        if route.cors is not None:
            out.typed_per_filter_config[CORS].CopyFrom(pack(cors_policy(route.cors)))
