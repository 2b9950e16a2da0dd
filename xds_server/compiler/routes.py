"""Spine: route configurations, virtual hosts, route matches and route actions.

A route is built in fixed steps, each open to the features: the match and the target (one
service), then ``patch_route_action`` (splits, rewrites, retries...), ``patch_route`` (header
mutations, per-filter configs), ``expand_route`` (one config route may become several Envoy
routes), and per virtual host ``patch_vhost``.
"""

from __future__ import annotations

from envoy.config.core.v3 import base_pb2
from envoy.config.route.v3 import route_components_pb2 as rc_pb2
from envoy.config.route.v3 import route_pb2
from envoy.type.matcher.v3 import regex_pb2, string_pb2
from google.protobuf import wrappers_pb2

from meshgate.config import HeaderMatch, Route, RouteMatch, route_name
from xds_server.compiler.context import ListenerContext, VirtualHostContext
from xds_server.compiler.protos import duration


def string_match(
    exact: str | None, prefix: str | None, regex: str | None
) -> string_pb2.StringMatcher:
    if exact is not None:
        return string_pb2.StringMatcher(exact=exact)
    if prefix is not None:
        return string_pb2.StringMatcher(prefix=prefix)
    return string_pb2.StringMatcher(safe_regex=regex_pb2.RegexMatcher(regex=regex or ""))


def header_matcher(h: HeaderMatch) -> rc_pb2.HeaderMatcher:
    if h.present is not None:
        return rc_pb2.HeaderMatcher(name=h.name, present_match=h.present, invert_match=h.invert)
    return rc_pb2.HeaderMatcher(
        name=h.name, string_match=string_match(h.exact, h.prefix, h.regex), invert_match=h.invert
    )


def compile_match(match: RouteMatch) -> rc_pb2.RouteMatch:
    rm = rc_pb2.RouteMatch(
        case_sensitive=wrappers_pb2.BoolValue(value=match.case_sensitive),
        headers=[header_matcher(h) for h in match.headers],
    )
    if match.prefix is not None:
        rm.prefix = match.prefix
    elif match.path is not None:
        rm.path = match.path
    else:
        rm.safe_regex.CopyFrom(regex_pb2.RegexMatcher(regex=match.regex or ""))
    if match.methods:
        # Without case: Envoy's HTTP/2 codec passes ':method: delete' on (its HTTP/1 codec
        # refuses it), and some servers (Werkzeug, ASP.NET) take it for DELETE; matched with
        # case, it would miss a route that protects DELETE and fall through to the next one.
        methods = sorted(set(match.methods))
        if len(methods) == 1:
            matcher = string_pb2.StringMatcher(exact=methods[0], ignore_case=True)
        else:
            matcher = string_pb2.StringMatcher(
                safe_regex=regex_pb2.RegexMatcher(regex=f"(?i)^({'|'.join(methods)})$")
            )
        rm.headers.insert(0, rc_pb2.HeaderMatcher(name=":method", string_match=matcher))
    return rm


def compile_route(ctx: VirtualHostContext, route: Route, index: int) -> list[rc_pb2.Route]:
    """One config route as Envoy routes (usually one; a sticky split needs one per variant)."""
    features = ctx.features
    out = rc_pb2.Route(name=route_name(ctx.vhost, index, route), match=compile_match(route.match))
    if route.direct_response is not None:
        dr = route.direct_response
        out.direct_response.CopyFrom(
            rc_pb2.DirectResponseAction(
                status=dr.status, body=base_pb2.DataSource(inline_string=dr.body)
            )
        )
        out.response_headers_to_add.append(
            base_pb2.HeaderValueOption(
                header=base_pb2.HeaderValue(key="content-type", value=dr.content_type),
                append_action=base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD,
            )
        )
    else:
        action = out.route
        if route.service is not None:
            action.cluster = route.service
        else:
            action.SetInParent()  # a split: a feature sets the target
        if route.timeout is not None:
            action.timeout.CopyFrom(duration(route.timeout))
        if route.idle_timeout is not None:
            action.idle_timeout.CopyFrom(duration(route.idle_timeout))
        for feature in features.patch_route_action:
            feature.patch_route_action(ctx, route, action)
    for feature in features.patch_route:
        feature.patch_route(ctx, route, out)
    routes = [out]
    for feature in features.expand_route:
        if len(routes) == 1:
            routes = feature.expand_route(ctx, route, routes[0])
        else:
            routes = [r for each in routes for r in feature.expand_route(ctx, route, each)]
    return routes


def compile_route_configuration(ctx: ListenerContext) -> route_pb2.RouteConfiguration:
    vhosts = []
    for vh in ctx.listener.virtual_hosts:
        vctx = ctx.for_vhost(vh)
        out = rc_pb2.VirtualHost(
            name=vh.name,
            domains=vh.domains,
            routes=[r for i, route in enumerate(vh.routes) for r in compile_route(vctx, route, i)],
        )
        for feature in ctx.features.patch_vhost:
            feature.patch_vhost(vctx, out)
        vhosts.append(out)
    # The more specific level wins: a route's header mutation overrides its virtual host's
    # (Envoy's default is the reverse, which surprises everyone who sets both).
    return route_pb2.RouteConfiguration(
        name=ctx.listener.name, virtual_hosts=vhosts, most_specific_header_mutations_wins=True
    )
