"""Rewrites, header mutation, weighted splits (sticky by header or cookie), session affinity
and WebSocket upgrades, compiled onto Envoy routes."""

from __future__ import annotations

from envoy.config.route.v3 import route_components_pb2 as rc_pb2

from meshgate.config import Route, VirtualHost

from .context import RouteContext


def route_action(route: Route, ctx: RouteContext) -> rc_pb2.RouteAction:
    """The action's target: one cluster, or weighted clusters for a split."""
    return rc_pb2.RouteAction(cluster=route.service or "")


def apply_route(route: Route, ctx: RouteContext, out: rc_pb2.Route) -> None:
    """Rewrites, header mutations, hash policies and upgrades on a compiled route."""


def expand(route: Route, ctx: RouteContext, out: rc_pb2.Route) -> list[rc_pb2.Route]:
    """The Envoy routes one config route becomes (several for a sticky split)."""
    return [out]


def apply_vhost(vhost: VirtualHost, out: rc_pb2.VirtualHost) -> None:
    """Virtual-host header mutations."""
