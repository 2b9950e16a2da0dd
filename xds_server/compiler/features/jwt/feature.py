"""The JWT feature: issuers and policies compiled to Envoy's ``jwt_authn``, plus the token
checks it lacks, the identity headers and the 401 replies.

Per listener whose routes apply a policy (see ``usage.py``): one ``jwt_authn`` filter (a
provider per issuer, a requirement per policy: ``providers.py``) and one RBAC filter with the
token checks (``checks.py``), both in the chain *disabled*. A policy route switches both on:
jwt_authn with its policy's requirement name, the checks as they are (or, for a policy in
shadow mode, as shadow rules that only count and log). Routes without a policy pay for
nothing. The listener's local replies gain the 401 mappers (``replies.py``); each policy route
removes and sets the identity headers (``headers.py``).

The jwt_authn config travels over ECDS, as its own resource named like the filter: a key
change (a JWKS refresh, a rotation) then reaches Envoy without a listener update, so no
connection is drained. An ECDS resource is named by the filter, so all listeners share one
config: every issuer and policy that some listener uses (a listener's routes name only their
own policies' requirements, so the extra providers cost nothing per request).
"""

from __future__ import annotations

from envoy.config.core.v3 import base_pb2
from envoy.config.route.v3 import route_components_pb2 as rc_pb2
from envoy.extensions.filters.http.jwt_authn.v3 import config_pb2 as jwt_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)

from meshgate.config import Route
from meshgate.config.access import effective_policy
from xds_server.compiler.context import CompileContext, ListenerContext, VirtualHostContext
from xds_server.compiler.extension_configs import (
    discovered_http_filter,
    extension_config_resource,
)
from xds_server.compiler.feature import Feature
from xds_server.compiler.features.jwt.checks import shadow_token_checks, token_filter_config
from xds_server.compiler.features.jwt.headers import header_names, identity_headers
from xds_server.compiler.features.jwt.providers import jwt_authentication
from xds_server.compiler.features.jwt.replies import insert_mappers, token_mappers
from xds_server.compiler.features.jwt.usage import JwtUsage, config_usage, listener_usage
from xds_server.compiler.filters import enable, http_filter
from xds_server.compiler.identity_names import JWT_FILTER, TOKEN_RBAC_FILTER
from xds_server.compiler.protos import pack
from xds_server.snapshot.snapshot import Resource


def usage(ctx: ListenerContext) -> JwtUsage:
    return ctx.memoized("jwt.usage", lambda: listener_usage(ctx.config, ctx.listener))


def jwt_filter() -> hcm_pb2.HttpFilter:
    """The listener's jwt_authn chain entry: its config comes over ECDS; disabled, policy routes
    switch it on."""
    return discovered_http_filter(JWT_FILTER, jwt_pb2.JwtAuthentication, disabled=True)


class Jwt(Feature):
    name = "jwt"
    http_filter_names = (JWT_FILTER, TOKEN_RBAC_FILTER)

    def http_filters(self, ctx: ListenerContext) -> list[hcm_pb2.HttpFilter]:
        jwt_usage = usage(ctx)
        if not jwt_usage:
            return []
        checks = token_filter_config(jwt_usage.issuers)
        return [jwt_filter(), http_filter(TOKEN_RBAC_FILTER, checks, disabled=True)]

    def extra_resources(self, ctx: CompileContext) -> list[Resource]:
        shared = config_usage(ctx.config)
        if not shared:
            return []
        return [extension_config_resource(JWT_FILTER, jwt_authentication(shared, ctx.jwks))]

    def patch_hcm(self, ctx: ListenerContext, hcm: hcm_pb2.HttpConnectionManager) -> None:
        if usage(ctx):
            insert_mappers(hcm, token_mappers())

    def patch_route(self, ctx: VirtualHostContext, route: Route, out: rc_pb2.Route) -> None:
        name = effective_policy(ctx.vhost, route)
        if name is None:
            return
        policy = ctx.config.policy(name)
        if policy is None:  # the policy feature answers this route 503: never open
            return
        per_route = out.typed_per_filter_config
        per_route[JWT_FILTER].CopyFrom(pack(jwt_pb2.PerRouteConfig(requirement_name=name)))
        if policy.mode == "shadow":
            shadow = ctx.memoized(
                "jwt.shadow_checks", lambda: pack(shadow_token_checks(usage(ctx).issuers))
            )
            per_route[TOKEN_RBAC_FILTER].CopyFrom(shadow)
        else:
            per_route[TOKEN_RBAC_FILTER].CopyFrom(enable())
        names, headers = ctx.compile.memoized(f"jwt.headers.{name}", lambda: _headers(ctx, name))
        out.request_headers_to_remove.extend(names)
        out.request_headers_to_add.extend(headers)


def _headers(
    ctx: ListenerContext, policy: str
) -> tuple[list[str], list[base_pb2.HeaderValueOption]]:
    """The identity headers of a policy's routes: computed once per compile."""
    found = ctx.config.policy(policy)
    issuers = [i for n in (found.issuers if found else []) if (i := ctx.config.issuer(n))]
    enforced = found is not None and found.mode == "enforce"
    return header_names(issuers), identity_headers(issuers, enforced)
