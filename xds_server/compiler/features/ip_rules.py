"""IP allow and deny lists: ``ip_rules`` of listeners, virtual hosts and routes, in Envoy's RBAC.

The rules of every level apply to a request (listener AND virtual host AND route): a client in
any ``deny`` CIDR is refused, and so is a client outside the ``allow`` list of any level that
has one. Envoy gives a route exactly one RBAC config (a route's ``RBACPerRoute`` *replaces* the
listener's, it does not add to it), so the levels are combined here at compile time into one
DENY policy per place that needs its own: "in some deny CIDR, or outside some level's allow
list". The client address is ``remote_ip``: the address the listener's ``client_address``
settles on (``client_address.py``), never the raw peer and never a client's own
``x-forwarded-for``. Each IPv4 CIDR comes with its IPv4-mapped IPv6 form
(``protos.cidr_ranges``): a client of a dual-stack listener, or in the ``x-forwarded-for`` of a
dual-stack proxy, is ``::ffff:a.b.c.d``, which Envoy never finds in an IPv4 range.

Where the config goes:

* the filter (named :data:`IP_RBAC_FILTER`, after the response headers and before any
  credential is looked at) is in a listener's chain only when some rule exists on it; with
  listener rules it carries them and is on for every route, otherwise it is in the chain
  *disabled* and only routes with rules switch it on;
* a virtual host with rules carries the listener's and its own; a route with rules carries all
  three. Routes without rules of their own inherit their virtual host's config, so they pay
  for nothing beyond the rules that apply to them.

A refusal is a 403 with a JSON body (``"error": "ip_denied"`` and the request id): a local
reply mapper of the listener, inserted before the generic one, recognises this filter's
denials by their response code details.
"""

from __future__ import annotations

from collections.abc import Sequence

from envoy.config.rbac.v3 import rbac_pb2 as rbac_config_pb2
from envoy.config.route.v3 import route_components_pb2 as rc_pb2
from envoy.extensions.filters.http.rbac.v3 import rbac_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)

from meshgate.config import Listener, Route
from meshgate.config.client import IpRules as IpRulesSettings
from xds_server.compiler.context import ListenerContext, VirtualHostContext
from xds_server.compiler.feature import Feature
from xds_server.compiler.filters import http_filter
from xds_server.compiler.identity_names import IP_RBAC_FILTER
from xds_server.compiler.listeners import details_filter
from xds_server.compiler.protos import cidr_ranges, json_format_string, pack

#: The one policy of the filter. ':' cannot occur in a config name, so no policy of the
#: policy feature can share it (and its denial details).
IP_DENY_POLICY = "ip:deny"
#: Envoy's response code details when this filter refuses a request.
IP_DENIED_DETAILS = f"rbac_access_denied_matched_policy[{IP_DENY_POLICY}]"
#: The ``error`` of the JSON body a refused client gets.
IP_DENIED_ERROR = "ip_denied"
IP_DENIED_MESSAGE = "requests from your address are not allowed here"
#: Stats of the filter: ``http.<listener>.rbac.ip_rules.allowed`` / ``.denied``.
STAT_PREFIX = "ip_rules."


def uses_ip_rules(listener: Listener) -> bool:
    return listener.ip_rules is not None or any(
        vh.ip_rules is not None or any(r.ip_rules is not None for r in vh.routes)
        for vh in listener.virtual_hosts
    )


def _used(ctx: ListenerContext) -> bool:
    return ctx.memoized("ip_rules.used", lambda: uses_ip_rules(ctx.listener))


def _remote_ip(cidrs: Sequence[str]) -> rbac_config_pb2.Principal:
    """The client address is in one of ``cidrs`` (an IPv4 one also in its IPv4-mapped form)."""
    ids = [rbac_config_pb2.Principal(remote_ip=r) for r in cidr_ranges(cidrs)]
    if len(ids) == 1:
        return ids[0]
    return rbac_config_pb2.Principal(or_ids=rbac_config_pb2.Principal.Set(ids=ids))


def deny_rules(levels: Sequence[IpRulesSettings]) -> rbac_config_pb2.RBAC:
    """One DENY policy for the rules of ``levels`` (outermost first), all of which apply."""
    denied: list[str] = []
    for level in levels:
        denied += [c for c in level.deny if c not in denied]
    principals = [rbac_config_pb2.Principal(remote_ip=r) for r in cidr_ranges(denied)]
    allows: list[list[str]] = []
    for level in levels:
        if level.allow and level.allow not in allows:
            allows.append(level.allow)
    principals += [rbac_config_pb2.Principal(not_id=_remote_ip(allow)) for allow in allows]
    policy = rbac_config_pb2.Policy(
        permissions=[rbac_config_pb2.Permission(any=True)], principals=principals
    )
    return rbac_config_pb2.RBAC(action=rbac_config_pb2.RBAC.DENY, policies={IP_DENY_POLICY: policy})


def _per_route(levels: Sequence[IpRulesSettings]) -> rbac_pb2.RBACPerRoute:
    # Never an RBACPerRoute without rules: Envoy reads that as "no RBAC on this route".
    return rbac_pb2.RBACPerRoute(
        rbac=rbac_pb2.RBAC(rules=deny_rules(levels), rules_stat_prefix=STAT_PREFIX)
    )


def ip_denied_mapper() -> hcm_pb2.ResponseMapper:
    """The JSON 403 body for a client this filter refuses."""
    return hcm_pb2.ResponseMapper(
        filter=details_filter(IP_DENIED_DETAILS),
        body_format_override=json_format_string(
            {
                "error": IP_DENIED_ERROR,
                "message": IP_DENIED_MESSAGE,
                "request_id": "%REQ(X-REQUEST-ID)%",
            }
        ),
    )


def _is_catch_all(mapper: hcm_pb2.ResponseMapper) -> bool:
    """The spine's last mapper: any response flag (an empty flag list matches them all)."""
    flt = mapper.filter
    return flt.HasField("response_flag_filter") and not flt.response_flag_filter.flags


class IpRules(Feature):
    name = "ip_rules"
    http_filter_names = (IP_RBAC_FILTER,)

    def http_filters(self, ctx: ListenerContext) -> list[hcm_pb2.HttpFilter]:
        if not _used(ctx):
            return []
        rules = ctx.listener.ip_rules
        if rules is None:
            return [http_filter(IP_RBAC_FILTER, rbac_pb2.RBAC(), disabled=True)]
        config = rbac_pb2.RBAC(rules=deny_rules([rules]), rules_stat_prefix=STAT_PREFIX)
        return [http_filter(IP_RBAC_FILTER, config)]

    def patch_hcm(self, ctx: ListenerContext, hcm: hcm_pb2.HttpConnectionManager) -> None:
        if not _used(ctx):
            return
        mappers = list(hcm.local_reply_config.mappers)
        at = next((i for i, m in enumerate(mappers) if _is_catch_all(m)), len(mappers))
        mappers.insert(at, ip_denied_mapper())
        del hcm.local_reply_config.mappers[:]
        hcm.local_reply_config.mappers.extend(mappers)

    def patch_vhost(self, ctx: VirtualHostContext, out: rc_pb2.VirtualHost) -> None:
        if ctx.vhost.ip_rules is not None:
            levels = [r for r in (ctx.listener.ip_rules, ctx.vhost.ip_rules) if r is not None]
            out.typed_per_filter_config[IP_RBAC_FILTER].CopyFrom(pack(_per_route(levels)))

    def patch_route(self, ctx: VirtualHostContext, route: Route, out: rc_pb2.Route) -> None:
        if route.ip_rules is not None:
            levels = [
                r
                for r in (ctx.listener.ip_rules, ctx.vhost.ip_rules, route.ip_rules)
                if r is not None
            ]
            out.typed_per_filter_config[IP_RBAC_FILTER].CopyFrom(pack(_per_route(levels)))
