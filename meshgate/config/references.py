"""Cross-reference checks: what no single field can know is wrong.

A route naming a service that does not exist, two virtual hosts claiming one domain, two
sockets on one port: each is returned with the path of the offending value, all at once.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from meshgate.redact import show

from .gateway import GatewayConfig
from .identity_refs import attachment_issues, identity_issues
from .login_refs import login_path_issues
from .protection import route_issues as protection_issues
from .routes import Route, VirtualHost
from .traffic import route_issues
from .values import address_key


def route_name(vhost: VirtualHost, index: int, route: Route) -> str:
    """A route's name, or a stable generated one (shown in access logs and ``render``)."""
    return route.name or f"{vhost.name}-{index}"


Issue = tuple[tuple[str | int, ...], str]


#: Says where a path of the config is written ("policies/a.yaml:4"), for a config split
#: across files, where an index in the merged list would mean nothing to the reader.
WrittenAt = Callable[[tuple[str | int, ...]], str]


def _duplicates(
    items: list[Any],
    key: str,
    path: tuple[str | int, ...],
    what: str,
    written_at: WrittenAt | None = None,
) -> list[Issue]:
    seen: dict[Any, int] = {}
    issues: list[Issue] = []
    for i, item in enumerate(items):
        value = getattr(item, key)
        if value in seen:
            first = (*path, seen[value], key)
            where = written_at(first) if written_at else f"index {seen[value]}"
            issues.append(
                ((*path, i, key), f"duplicate {what} {value!r} (first defined at {where})")
            )
        else:
            seen[value] = i
    return issues


def reference_errors(config: GatewayConfig, written_at: WrittenAt | None = None) -> list[Issue]:
    """Every cross-reference mistake, each with the path of the offending value.

    A name defined twice at the top level says where the first one is: at its index, or,
    given ``written_at`` (a config split across files), at its file and line."""
    issues: list[Issue] = []
    for kind, what in (
        ("listeners", "listener name"),
        ("services", "service name"),
        ("demo_upstreams", "demo upstream"),
        ("issuers", "issuer name"),
        ("roles", "role name"),
        ("policies", "policy name"),
        ("logins", "login name"),
    ):
        issues += _duplicates(getattr(config, kind), "name", (kind,), what, written_at)
    issues += identity_issues(config)
    bound: dict[tuple[str, int], str] = {}
    for li, listener in enumerate(config.listeners):
        key = (address_key(listener.address), listener.port)
        if key in bound:
            issues.append(
                (
                    ("listeners", li, "port"),
                    f"port {listener.port} on {listener.address} is already used by {bound[key]}",
                )
            )
        bound.setdefault(key, f"listener {listener.name!r}")
        path: tuple[str | int, ...] = ("listeners", li, "virtual_hosts")
        issues += _duplicates(listener.virtual_hosts, "name", path, "virtual host name")
        claimed: dict[str, str] = {}
        for vi, vhost in enumerate(listener.virtual_hosts):
            issues += attachment_issues(config, vhost, None, (*path, vi))
            issues += login_path_issues(config, vhost, (*path, vi))
            for di, domain in enumerate(vhost.domains):
                lowered = domain.lower()
                if lowered in claimed:
                    issues.append(
                        (
                            (*path, vi, "domains", di),
                            f"domain {show(domain)} is already served by virtual host "
                            f"{claimed[lowered]!r} on this listener",
                        )
                    )
                claimed.setdefault(lowered, vhost.name)
            names: dict[str, int] = {}
            for ri, route in enumerate(vhost.routes):
                rpath = (*path, vi, "routes", ri)
                rname = route_name(vhost, ri, route)
                if rname in names and route.name is None:
                    issues.append(
                        (
                            rpath,
                            f"the generated route name {rname!r} is already the name of route "
                            f"{names[rname]}; give this route a 'name'",
                        )
                    )
                elif rname in names:
                    issues.append(
                        (
                            (*rpath, "name"),
                            f"duplicate route name {rname!r} in this virtual host "
                            f"(first used by route {names[rname]})",
                        )
                    )
                names.setdefault(rname, ri)
                if route.service is not None and config.service(route.service) is None:
                    known = ", ".join(sorted(s.name for s in config.services)) or "none"
                    issues.append(
                        (
                            (*rpath, "service"),
                            f"unknown service {show(route.service)} (defined services: {known})",
                        )
                    )
                issues += route_issues(config, route, rpath)
                issues += attachment_issues(config, vhost, route, rpath)
                issues += protection_issues(vhost, route, rpath)
    issues += _demo_port_clashes(config, bound)
    return issues


def _demo_port_clashes(config: GatewayConfig, bound: dict[tuple[str, int], str]) -> list[Issue]:
    """Demo upstreams bind real sockets next to Envoy's listeners; a clash fails ``meshgate up``.

    A wildcard address (0.0.0.0 or ::) takes the port on every address, so it clashes with any
    other socket on that port.
    """
    issues: list[Issue] = []
    wildcards = {"0.0.0.0", "::"}
    taken = dict(bound)
    for di, demo in enumerate(config.demo_upstreams):
        address = address_key(demo.address)
        clash = next(
            (
                owner
                for (other, port), owner in taken.items()
                if port == demo.port
                and (other == address or other in wildcards or address in wildcards)
            ),
            None,
        )
        if clash is not None:
            issues.append(
                (
                    ("demo_upstreams", di, "port"),
                    f"port {demo.port} on {demo.address} is already used by {clash}",
                )
            )
        taken.setdefault((address, demo.port), f"demo upstream {demo.name!r}")
    return issues
