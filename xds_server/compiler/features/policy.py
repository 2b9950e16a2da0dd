"""Policies: roles, permissions and deny rules enforced by two Envoy RBAC filters.

A route's policy (its own ``policy``, else its virtual host's, none when ``public``) becomes
the per-route configs of the deny and the allow filter (``policy_rules.py``); both sit in the
chain *disabled*, so a route without a policy pays for neither. The JWT feature verifies the
token first and writes its payload into the metadata these rules read; this feature knows
nothing of how, only the names in ``identity_names.py``.

Replies: a denial is a JSON 403 (``forbidden``, with the request id), recognised by the
response code details of these two filters only, so the 401s of the JWT feature and the 403s
of IP rules keep their own replies.

Never open: a route whose policy is missing or does not compile (a config that got past the
file checks, such as one assembled from service annotations later) becomes a 503 direct
response (``policy_unavailable``). It is never served without its policy, and never takes
the rest of the config down with it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass

from envoy.config.accesslog.v3 import accesslog_pb2
from envoy.config.core.v3 import base_pb2
from envoy.config.core.v3 import substitution_format_string_pb2 as sfs_pb2
from envoy.config.route.v3 import route_components_pb2 as rc_pb2
from envoy.extensions.access_loggers.filters.cel.v3 import cel_pb2
from envoy.extensions.filters.http.rbac.v3 import rbac_pb2 as rbac_filter_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from google.protobuf import any_pb2, struct_pb2

from meshgate.config import Route
from meshgate.config.access import RoleGraph, effective_policy
from xds_server.compiler.context import CompileContext, ListenerContext, VirtualHostContext
from xds_server.compiler.feature import Feature
from xds_server.compiler.filters import http_filter
from xds_server.compiler.identity_names import (
    ALLOW_RBAC_FILTER,
    ALLOW_RBAC_PREFIX,
    DENY_RBAC_FILTER,
    DENY_RBAC_PREFIX,
    POLICY_METADATA,
    RBAC_METADATA,
)
from xds_server.compiler.policy_rules import RULE_ID_PREFIX, PolicyError, compile_policy
from xds_server.compiler.protos import json_format_string, pack

#: What a client reads when a policy refuses it (no detail of which rule: that is in the log).
FORBIDDEN_MESSAGE = "the access policy of this route does not allow this request"
UNAVAILABLE_MESSAGE = (
    "the access policy of this route is unavailable; the gateway refuses the request rather "
    "than serve it unprotected"
)
UNAVAILABLE_STATUS = 503

_DENIED = "rbac_access_denied_matched_policy["
#: A denial by the deny filter names one of our rule ids; a denial by the allow filter names
#: no rule (as any ALLOW engine's does) and comes after the deny filter said "allowed".
FORBIDDEN_EXPRESSION = (
    f"response.code_details.startsWith('{_DENIED}{RULE_ID_PREFIX}') || "
    f"(response.code_details == '{_DENIED}none]' && "
    f"metadata.filter_metadata['{RBAC_METADATA}']['{DENY_RBAC_PREFIX}enforced_engine_result']"
    " == 'allowed')"
)
UNAVAILABLE_EXPRESSION = (
    f"xds.route_metadata.filter_metadata['{POLICY_METADATA}']['mode'] == 'unavailable'"
)


@dataclass(frozen=True)
class _Compiled:
    """A policy compiled for one case sensitivity, packed once for all its routes."""

    deny: any_pb2.Any | None
    allow: any_pb2.Any
    metadata: struct_pb2.Struct


@dataclass(frozen=True)
class _Unavailable:
    metadata: struct_pb2.Struct


def _metadata(**fields: str) -> struct_pb2.Struct:
    out = struct_pb2.Struct()
    out.update(fields)
    return out


def _compile(ctx: CompileContext, name: str, ignore_case: bool) -> _Compiled | _Unavailable:
    policy = ctx.config.policy(name)
    if policy is None:
        return _Unavailable(_metadata(policy=name, mode="unavailable", error="unknown policy"))
    graph = ctx.memoized("policy:roles", lambda: RoleGraph.of(ctx.config.roles))
    try:
        rules = compile_policy(ctx.config, graph, policy, ignore_case)
    except PolicyError as exc:
        return _Unavailable(_metadata(policy=name, mode="unavailable", error=str(exc)))
    return _Compiled(
        deny=pack(rules.deny) if rules.deny is not None else None,
        allow=pack(rules.allow),
        metadata=_metadata(policy=name, mode=rules.mode),
    )


def compiled_policy(ctx: VirtualHostContext, route: Route) -> _Compiled | _Unavailable | None:
    """The route's policy, compiled once per compile for all the routes that share it."""
    name = effective_policy(ctx.vhost, route)
    if name is None:
        return None
    ignore_case = not route.match.case_sensitive
    return ctx.compile.memoized(
        f"policy:{name}:{'ignore_case' if ignore_case else 'case'}",
        lambda: _compile(ctx.compile, name, ignore_case),
    )


def _listener_policies(ctx: ListenerContext) -> Iterator[_Compiled | _Unavailable]:
    for vhost in ctx.listener.virtual_hosts:
        vctx = ctx.for_vhost(vhost)
        for route in vhost.routes:
            found = compiled_policy(vctx, route)
            if found is not None:
                yield found


@dataclass(frozen=True)
class _Uses:
    any: bool
    deny: bool
    allow: bool


def _uses(ctx: ListenerContext) -> _Uses:
    def scan() -> _Uses:
        found = list(_listener_policies(ctx))
        compiled = [c for c in found if isinstance(c, _Compiled)]
        return _Uses(
            any=bool(found),
            deny=any(c.deny is not None for c in compiled),
            allow=bool(compiled),
        )

    return ctx.memoized("policy:uses", scan)


def _cel(expression: str) -> accesslog_pb2.AccessLogFilter:
    return accesslog_pb2.AccessLogFilter(
        extension_filter=accesslog_pb2.ExtensionFilter(
            name="envoy.access_loggers.extension_filters.cel",
            typed_config=pack(cel_pb2.ExpressionFilter(expression=expression)),
        )
    )


def reply_mappers() -> list[hcm_pb2.ResponseMapper]:
    """The JSON bodies of a policy's 403 and of an unavailable policy's 503."""

    def body(error: str, message: str) -> sfs_pb2.SubstitutionFormatString:
        return json_format_string(
            {"error": error, "message": message, "request_id": "%REQ(X-REQUEST-ID)%"}
        )

    return [
        hcm_pb2.ResponseMapper(
            filter=_cel(FORBIDDEN_EXPRESSION),
            body_format_override=body("forbidden", FORBIDDEN_MESSAGE),
        ),
        hcm_pb2.ResponseMapper(
            filter=_cel(UNAVAILABLE_EXPRESSION),
            body_format_override=body("policy_unavailable", UNAVAILABLE_MESSAGE),
        ),
    ]


def unavailable_route(out: rc_pb2.Route, metadata: struct_pb2.Struct) -> rc_pb2.Route:
    """``out``'s match answering 503, and nothing else of it: no upstream, no filter config."""
    route = rc_pb2.Route(
        name=out.name,
        match=out.match,
        direct_response=rc_pb2.DirectResponseAction(
            status=UNAVAILABLE_STATUS,
            body=base_pb2.DataSource(
                inline_string=json.dumps(
                    {"error": "policy_unavailable", "message": UNAVAILABLE_MESSAGE}
                )
            ),
        ),
        response_headers_to_add=[
            base_pb2.HeaderValueOption(
                header=base_pb2.HeaderValue(key="content-type", value="application/json"),
                append_action=base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD,
            )
        ],
    )
    route.metadata.filter_metadata[POLICY_METADATA].CopyFrom(metadata)
    return route


class Policies(Feature):
    name = "policy"
    http_filter_names = (DENY_RBAC_FILTER, ALLOW_RBAC_FILTER)

    def http_filters(self, ctx: ListenerContext) -> list[hcm_pb2.HttpFilter]:
        """The deny and allow filters, disabled: each route's policy switches them on."""
        uses = _uses(ctx)
        out = []
        if uses.deny:
            base = rbac_filter_pb2.RBAC(
                rules_stat_prefix=DENY_RBAC_PREFIX, shadow_rules_stat_prefix=DENY_RBAC_PREFIX
            )
            out.append(http_filter(DENY_RBAC_FILTER, base, disabled=True))
        if uses.allow:
            base = rbac_filter_pb2.RBAC(
                rules_stat_prefix=ALLOW_RBAC_PREFIX, shadow_rules_stat_prefix=ALLOW_RBAC_PREFIX
            )
            out.append(http_filter(ALLOW_RBAC_FILTER, base, disabled=True))
        return out

    def patch_hcm(self, ctx: ListenerContext, hcm: hcm_pb2.HttpConnectionManager) -> None:
        """The 403/503 replies (before the catch-all mapper), and escaped slashes unescaped so
        that the path rules judge the path the upstream will get."""
        if not _uses(ctx).any:
            return
        mappers = hcm.local_reply_config.mappers
        at = max(len(mappers) - 1, 0)
        for offset, mapper in enumerate(reply_mappers()):
            mappers.insert(at + offset, mapper)
        unset = hcm_pb2.HttpConnectionManager.IMPLEMENTATION_SPECIFIC_DEFAULT
        if hcm.path_with_escaped_slashes_action == unset:
            hcm.path_with_escaped_slashes_action = (
                hcm_pb2.HttpConnectionManager.UNESCAPE_AND_FORWARD
            )

    def patch_route(self, ctx: VirtualHostContext, route: Route, out: rc_pb2.Route) -> None:
        """The route's policy as per-filter configs of the deny and allow filters."""
        compiled = compiled_policy(ctx, route)
        if compiled is None:
            return
        out.metadata.filter_metadata[POLICY_METADATA].CopyFrom(compiled.metadata)
        if isinstance(compiled, _Compiled):
            if compiled.deny is not None:
                out.typed_per_filter_config[DENY_RBAC_FILTER].CopyFrom(compiled.deny)
            out.typed_per_filter_config[ALLOW_RBAC_FILTER].CopyFrom(compiled.allow)

    def expand_route(
        self, ctx: VirtualHostContext, route: Route, out: rc_pb2.Route
    ) -> list[rc_pb2.Route]:
        """A route whose policy is unavailable answers 503 instead of anything it was.

        Done here, after every feature's ``patch_route``, so that nothing set on the route
        action later can turn it back into a proxied route.
        """
        compiled = compiled_policy(ctx, route)
        if isinstance(compiled, _Unavailable):
            return [unavailable_route(out, compiled.metadata)]
        return [out]
