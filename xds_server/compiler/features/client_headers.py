"""Client-sent ``x-meshgate-*`` request headers are removed on every route of every listener.

Upstreams trust ``x-meshgate-subject``, ``-tenant``, ``-roles`` (and every later
``x-meshgate-*`` header) because only the gateway sets them, after it has verified who the
caller is. That holds only if no client copy ever gets through, on any route, with or without
a policy: a route without a policy today may get one tomorrow, and an upstream cannot tell
which route a request came by. So the strip is not a per-route feature but the first filter
of every chain, before any filter that could read or set an identity header.

The same holds for the headers issuers' ``claim_headers`` name (``x-user-email``): they are
removed by exact name on every listener. On listeners that trust proxies by address (where
Envoy's ``use_remote_address`` is off, so Envoy believes every peer's ``x-envoy-*`` headers),
the filter also does what Envoy does elsewhere: it removes the client's edge headers and sets
``x-envoy-external-address`` to the client address.

It is Envoy's header_mutation filter with one ``remove_on_match`` on the name prefix
(case-insensitive; Envoy lower-cases header names anyway). It runs once per request and
touches only the request headers, so it costs the same on every route, and no per-route
config. Headers gateway features set later (the identity headers after token verification,
``x-meshgate-variant`` by the router) are added after it and so are kept.
"""

from __future__ import annotations

from collections.abc import Sequence

from envoy.config.common.mutation_rules.v3 import mutation_rules_pb2
from envoy.config.core.v3 import base_pb2
from envoy.extensions.filters.http.header_mutation.v3 import header_mutation_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from envoy.type.matcher.v3 import string_pb2

from meshgate.config import GatewayConfig
from xds_server.compiler.context import ListenerContext
from xds_server.compiler.feature import Feature
from xds_server.compiler.filters import http_filter
from xds_server.compiler.identity_names import CLIENT_HEADERS_FILTER, IDENTITY_HEADER_PREFIX

#: Headers Envoy removes from a client's request on listeners that use the peer address
#: (``use_remote_address``), but passes on when proxies are trusted by address, where Envoy
#: believes every peer: the path before a rewrite, and the caller as another Envoy saw it.
EDGE_HEADERS = (
    "x-envoy-original-path",
    "x-envoy-decorator-operation",
    "x-envoy-downstream-service-cluster",
    "x-envoy-downstream-service-node",
)
#: The client address for the upstream: Envoy's own header, set by Envoy on listeners that use
#: the peer address (``trusted_hops`` or none), and here on those trusting proxies by address.
EXTERNAL_ADDRESS = "x-envoy-external-address"


def _remove(matcher: string_pb2.StringMatcher) -> mutation_rules_pb2.HeaderMutation:
    return mutation_rules_pb2.HeaderMutation(
        remove_on_match=mutation_rules_pb2.HeaderMutation.RemoveOnMatch(key_matcher=matcher)
    )


def claim_header_names(config: GatewayConfig) -> list[str]:
    """Every issuer's ``claim_headers`` (lower case, once each, in config order)."""
    names: list[str] = []
    for issuer in config.issuers:
        names += [n.lower() for n in issuer.claim_headers if n.lower() not in names]
    return names


def strip_client_headers(
    trusted_cidrs: bool = False, claim_headers: Sequence[str] = ()
) -> header_mutation_pb2.HeaderMutation:
    """Remove every request header whose name starts with ``x-meshgate-``, in any case, and
    every header an issuer's ``claim_headers`` names (``x-user-email``): an upstream trusts
    those as the gateway's too, and a client could otherwise send its own on a route that sets
    none (a public route next to the policy routes of the same upstream).

    With ``trusted_cidrs`` (proxies trusted by address: Envoy's ``use_remote_address`` is off
    there), also remove what Envoy removes from a client's request on the other listeners
    (``EDGE_HEADERS``) and set ``x-envoy-external-address`` to the client address, so that
    an upstream reading it gets the address Envoy settled on, never a client's own.
    """
    mutations = [_remove(string_pb2.StringMatcher(prefix=IDENTITY_HEADER_PREFIX, ignore_case=True))]
    mutations += [_remove(string_pb2.StringMatcher(exact=name)) for name in claim_headers]
    if trusted_cidrs:
        mutations += [_remove(string_pb2.StringMatcher(exact=name)) for name in EDGE_HEADERS]
        mutations.append(
            mutation_rules_pb2.HeaderMutation(
                append=base_pb2.HeaderValueOption(
                    header=base_pb2.HeaderValue(
                        key=EXTERNAL_ADDRESS, value="%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%"
                    ),
                    append_action=base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD,
                )
            )
        )
    return header_mutation_pb2.HeaderMutation(
        mutations=header_mutation_pb2.Mutations(request_mutations=mutations)
    )


class ClientHeaders(Feature):
    name = "client_headers"
    http_filter_names = (CLIENT_HEADERS_FILTER,)

    def http_filters(self, ctx: ListenerContext) -> list[hcm_pb2.HttpFilter]:
        trusted_cidrs = bool(ctx.listener.client_address.trusted_cidrs)
        claims = ctx.compile.memoized(
            "client_headers.claims", lambda: claim_header_names(ctx.config)
        )
        strip = strip_client_headers(trusted_cidrs, claims)
        return [http_filter(CLIENT_HEADERS_FILTER, strip)]
