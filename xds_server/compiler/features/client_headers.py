"""Client-sent ``x-meshgate-*`` request headers are removed on every route of every listener.

Upstreams trust ``x-meshgate-subject``, ``-tenant``, ``-roles`` (and every later
``x-meshgate-*`` header) because only the gateway sets them, after it has verified who the
caller is. That holds only if no client copy ever gets through, on any route, with or without
a policy: a route without a policy today may get one tomorrow, and an upstream cannot tell
which route a request came by. So the strip is not a per-route feature but the first filter
of every chain, before any filter that could read or set an identity header.

It is Envoy's header_mutation filter with one ``remove_on_match`` on the name prefix
(case-insensitive; Envoy lower-cases header names anyway). It runs once per request and
touches only the request headers, so it costs the same on every route, and no per-route
config. Headers gateway features set later (the identity headers after token verification,
``x-meshgate-variant`` by the router) are added after it and so are kept.
"""

from __future__ import annotations

from envoy.config.common.mutation_rules.v3 import mutation_rules_pb2
from envoy.extensions.filters.http.header_mutation.v3 import header_mutation_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from envoy.type.matcher.v3 import string_pb2

from xds_server.compiler.context import ListenerContext
from xds_server.compiler.feature import Feature
from xds_server.compiler.filters import http_filter
from xds_server.compiler.identity_names import CLIENT_HEADERS_FILTER, IDENTITY_HEADER_PREFIX


def strip_client_headers() -> header_mutation_pb2.HeaderMutation:
    """Remove every request header whose name starts with ``x-meshgate-``, in any case."""
    remove = mutation_rules_pb2.HeaderMutation(
        remove_on_match=mutation_rules_pb2.HeaderMutation.RemoveOnMatch(
            key_matcher=string_pb2.StringMatcher(prefix=IDENTITY_HEADER_PREFIX, ignore_case=True)
        )
    )
    return header_mutation_pb2.HeaderMutation(
        mutations=header_mutation_pb2.Mutations(request_mutations=[remove])
    )


class ClientHeaders(Feature):
    name = "client_headers"
    http_filter_names = (CLIENT_HEADERS_FILTER,)

    def http_filters(self, ctx: ListenerContext) -> list[hcm_pb2.HttpFilter]:
        return [http_filter(CLIENT_HEADERS_FILTER, strip_client_headers())]
