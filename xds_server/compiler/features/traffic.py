"""Rewrites, header mutation, weighted splits (sticky by header or cookie), session affinity
and WebSocket upgrades, compiled onto Envoy routes.

A split is Envoy's ``weighted_clusters``: each variant is a ``ClusterWeight`` that also adds
the ``x-meshgate-variant`` request header (so the upstream and the access log know the variant)
and, for a sticky cookie, a ``Set-Cookie`` response header naming the variant drawn. Stickiness
itself is routing, not state: one extra route per variant, placed before the weighted one,
matches the variant's header or cookie and goes straight to that variant's service. The extra
routes are copies of the compiled weighted route, so every other policy (retries, rewrites,
per-filter config) applies to sticky clients exactly as to new ones.
"""

from __future__ import annotations

import re

from envoy.config.core.v3 import base_pb2
from envoy.config.route.v3 import route_components_pb2 as rc_pb2
from envoy.type.matcher.v3 import regex_pb2, string_pb2
from google.protobuf import wrappers_pb2

from meshgate.config import Route
from meshgate.config.traffic import (
    VARIANT_HEADER,
    HeaderMutation,
    SessionAffinity,
    Split,
    Sticky,
    Variant,
)
from xds_server.compiler.context import VirtualHostContext
from xds_server.compiler.feature import Feature
from xds_server.compiler.protos import duration

Headers = list[base_pb2.HeaderValueOption]
OVERWRITE = base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD
APPEND = base_pb2.HeaderValueOption.APPEND_IF_EXISTS_OR_ADD


def header(
    key: str, value: str, action: base_pb2.HeaderValueOption.HeaderAppendAction
) -> base_pb2.HeaderValueOption:
    return base_pb2.HeaderValueOption(
        header=base_pb2.HeaderValue(key=key, value=value), append_action=action
    )


def literal(text: str) -> str:
    """``text`` as a header value Envoy will not read as a substitution command."""
    return text.replace("%", "%%")


def _re2_literal(text: str) -> str:
    return re.sub(r"([.^$|*+?()\[\]{}\\])", r"\\\1", text)


def _mutation(mutation: HeaderMutation | None) -> tuple[Headers, list[str]]:
    """(headers_to_add, headers_to_remove): ``set`` overwrites, ``add`` appends."""
    if mutation is None:
        return [], []
    to_add = [header(k, v, OVERWRITE) for k, v in mutation.set.items()]
    to_add += [header(k, v, APPEND) for k, v in mutation.add.items()]
    return to_add, list(mutation.remove)


def _set_cookie(sticky: Sticky, variant: Variant) -> Headers:
    cookie = sticky.cookie
    if cookie is None:
        return []
    value = f"{cookie.name}={variant.label}"
    if cookie.ttl.total_seconds() > 0:
        value += f"; Max-Age={int(cookie.ttl.total_seconds())}"
    value += f"; Path={cookie.path}"
    # Appended, so a Set-Cookie of the upstream's own is kept beside it.
    return [header("set-cookie", literal(value), APPEND)]


def _weighted_clusters(split: Split) -> rc_pb2.WeightedCluster:
    return rc_pb2.WeightedCluster(
        clusters=[
            rc_pb2.WeightedCluster.ClusterWeight(
                name=v.service,
                weight=wrappers_pb2.UInt32Value(value=v.weight),
                request_headers_to_add=[header(VARIANT_HEADER, v.label, OVERWRITE)],
                response_headers_to_add=_set_cookie(split.sticky, v) if split.sticky else [],
            )
            for v in split.variants
        ]
    )


def hash_policy(affinity: SessionAffinity) -> rc_pb2.RouteAction.HashPolicy:
    hp = rc_pb2.RouteAction.HashPolicy
    if affinity.cookie is not None:
        # With a ttl, Envoy itself sets the cookie on the first response when the client has
        # none (a ttl of 0 gives a session cookie).
        return hp(
            cookie=hp.Cookie(
                name=affinity.cookie.name,
                ttl=duration(affinity.cookie.ttl),
                path=affinity.cookie.path,
            )
        )
    if affinity.header is not None:
        return hp(header=hp.Header(header_name=affinity.header))
    return hp(connection_properties=hp.ConnectionProperties(source_ip=True))


def _sticky_matcher(sticky: Sticky, variant: Variant) -> rc_pb2.HeaderMatcher:
    if sticky.header is not None:
        return rc_pb2.HeaderMatcher(
            name=sticky.header, string_match=string_pb2.StringMatcher(exact=variant.label)
        )
    assert sticky.cookie is not None  # Sticky has exactly one of header, cookie
    # The whole Cookie header must match: the pair is first or follows "; ", and ends the
    # header or is followed by ';', so "xmg-variant=a" or "mg-variant=ab" do not count.
    pair = f"{_re2_literal(sticky.cookie.name)}={_re2_literal(variant.label)}"
    return rc_pb2.HeaderMatcher(
        name="cookie",
        string_match=string_pb2.StringMatcher(
            safe_regex=regex_pb2.RegexMatcher(regex=f"^(.*;\\s*)?{pair}(;.*)?$")
        ),
    )


def _apply_mutations(
    request: HeaderMutation | None,
    response: HeaderMutation | None,
    out: rc_pb2.Route | rc_pb2.VirtualHost,
) -> None:
    """Routes and virtual hosts carry the same four header-mutation fields."""
    if request is not None:
        req_add, req_remove = _mutation(request)
        out.request_headers_to_add.extend(req_add)
        out.request_headers_to_remove.extend(req_remove)
    if response is not None:
        resp_add, resp_remove = _mutation(response)
        out.response_headers_to_add.extend(resp_add)
        out.response_headers_to_remove.extend(resp_remove)


class Traffic(Feature):
    """Rewrites, header mutation, splits, session affinity and WebSocket: route fields only,
    no HTTP filter."""

    name = "traffic"

    def patch_route_action(
        self, ctx: VirtualHostContext, route: Route, action: rc_pb2.RouteAction
    ) -> None:
        """A split's weighted clusters, rewrites, hash policies and upgrades."""
        if route.split is not None:
            action.weighted_clusters.CopyFrom(_weighted_clusters(route.split))
        if route.rewrite is not None:
            rw = route.rewrite
            if rw.prefix is not None:
                action.prefix_rewrite = rw.prefix
            if rw.regex is not None:
                action.regex_rewrite.CopyFrom(
                    regex_pb2.RegexMatchAndSubstitute(
                        pattern=regex_pb2.RegexMatcher(regex=rw.regex.pattern),
                        substitution=rw.regex.substitution,
                    )
                )
            if rw.host is not None:
                action.host_rewrite_literal = rw.host
        if route.session_affinity is not None:
            action.hash_policy.append(hash_policy(route.session_affinity))
        if route.websocket is not None:
            ws = route.websocket
            action.upgrade_configs.append(
                rc_pb2.RouteAction.UpgradeConfig(
                    upgrade_type="websocket", enabled=wrappers_pb2.BoolValue(value=ws.enabled)
                )
            )
            if ws.idle_timeout is not None:  # overrides the route's own idle_timeout
                action.idle_timeout.CopyFrom(duration(ws.idle_timeout))

    def patch_route(self, ctx: VirtualHostContext, route: Route, out: rc_pb2.Route) -> None:
        """Header mutations on a compiled route (proxied or direct response)."""
        _apply_mutations(route.request_headers, route.response_headers, out)
        if route.split is None and out.HasField("route"):
            # Only a split may say which variant a request is in: neither the upstream nor
            # the access log should see a value the client made up.
            out.request_headers_to_remove.append(VARIANT_HEADER)

    def expand_route(
        self, ctx: VirtualHostContext, route: Route, out: rc_pb2.Route
    ) -> list[rc_pb2.Route]:
        """The Envoy routes one config route becomes (several for a sticky split).

        Each variant with a weight above 0 gets a route ``<route>/<variant>`` before ``out``;
        a variant at weight 0 gets none, so setting a weight to 0 drains it, sticky clients
        included (they are drawn again, and a cookie is re-set).
        """
        split = route.split
        if split is None or split.sticky is None:
            return [out]
        routes = []
        for variant in split.variants:
            if variant.weight == 0:
                continue
            sticky = rc_pb2.Route()
            sticky.CopyFrom(out)
            sticky.name = f"{out.name}/{variant.label}"
            sticky.match.headers.append(_sticky_matcher(split.sticky, variant))
            sticky.route.cluster = variant.service  # replaces weighted_clusters (a oneof)
            sticky.request_headers_to_add.append(header(VARIANT_HEADER, variant.label, OVERWRITE))
            routes.append(sticky)
        return [*routes, out]

    def patch_vhost(self, ctx: VirtualHostContext, out: rc_pb2.VirtualHost) -> None:
        """Virtual-host header mutations (applied to every route of the virtual host)."""
        _apply_mutations(ctx.vhost.request_headers, ctx.vhost.response_headers, out)
