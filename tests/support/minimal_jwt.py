"""Envoy's jwt_authn as the policy tests need it, until the JWT feature is registered.

The policy feature's RBAC rules read what jwt_authn writes into dynamic metadata (each
verified token's payload under its issuer's key, ``identity_names.payload_key``). The JWT
feature proper (issuer settings, token sources, attack hardening, 401 replies) is another
module; these tests only need a real jwt_authn filter writing the payload where the names say,
with inline keys. :func:`features_with_jwt` uses the registered JWT feature once there is one,
so the same tests then run against it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from envoy.config.core.v3 import base_pb2
from envoy.config.route.v3 import route_components_pb2 as rc_pb2
from envoy.extensions.filters.http.jwt_authn.v3 import config_pb2 as jwt_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)

from meshgate.config import Route
from meshgate.config.access import effective_policy
from xds_server.compiler.context import ListenerContext, VirtualHostContext
from xds_server.compiler.feature import Feature
from xds_server.compiler.features import FEATURES
from xds_server.compiler.filters import http_filter
from xds_server.compiler.identity_names import (
    JWT_FILTER,
    header_key,
    payload_key,
    provider_name,
)
from xds_server.compiler.protos import pack


class MinimalJwt(Feature):
    """jwt_authn with one provider per issuer (inline JWKS) and one requirement per policy
    (any of its issuers; a shadow policy lets a missing or bad token through)."""

    name = "test-minimal-jwt"
    http_filter_names = (JWT_FILTER,)

    def http_filters(self, ctx: ListenerContext) -> list[hcm_pb2.HttpFilter]:
        config = ctx.config
        if not config.policies:
            return []
        providers = {}
        for issuer in config.issuers:
            if issuer.jwks.inline is None:
                raise ValueError("MinimalJwt takes inline JWKS only")
            document = issuer.jwks.inline
            providers[provider_name(issuer.name)] = jwt_pb2.JwtProvider(
                issuer=issuer.issuer,
                audiences=issuer.audiences,
                local_jwks=base_pb2.DataSource(
                    inline_string=document if isinstance(document, str) else json.dumps(document)
                ),
                from_headers=[jwt_pb2.JwtHeader(name="authorization", value_prefix="Bearer ")],
                payload_in_metadata=payload_key(issuer.name),
                header_in_metadata=header_key(issuer.name),
                require_expiration=True,
            )
        requirements = {}
        for policy in config.policies:
            each = [jwt_pb2.JwtRequirement(provider_name=provider_name(i)) for i in policy.issuers]
            if policy.mode == "shadow":
                each.append(jwt_pb2.JwtRequirement(allow_missing_or_failed={}))
            requirements[policy.name] = (
                each[0]
                if len(each) == 1
                else jwt_pb2.JwtRequirement(
                    requires_any=jwt_pb2.JwtRequirementOrList(requirements=each)
                )
            )
        auth = jwt_pb2.JwtAuthentication(providers=providers, requirement_map=requirements)
        return [http_filter(JWT_FILTER, auth, disabled=True)]

    def patch_route(self, ctx: VirtualHostContext, route: Route, out: rc_pb2.Route) -> None:
        name = effective_policy(ctx.vhost, route)
        if name is not None and ctx.config.policy(name) is not None:
            out.typed_per_filter_config[JWT_FILTER].CopyFrom(
                pack(jwt_pb2.PerRouteConfig(requirement_name=name))
            )


def features_with_jwt() -> Sequence[Feature]:
    """The registered features, with :class:`MinimalJwt` if none of them verifies tokens."""
    if any(JWT_FILTER in f.http_filter_names for f in FEATURES):
        return FEATURES
    return (*FEATURES, MinimalJwt())
