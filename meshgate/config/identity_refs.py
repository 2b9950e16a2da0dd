"""Cross-reference checks of the identity model: unknown names, duplicates, role cycles.

Each mistake comes back with the path of the offending value, so the loader can name its
file, line and column. A policy that names an issuer or role that does not exist is an error
of the whole file (the last good config keeps serving): never a route served open.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from meshgate.redact import show

if TYPE_CHECKING:
    from .gateway import GatewayConfig
    from .references import Issue
    from .routes import Route, VirtualHost

Path = tuple[str | int, ...]


def _known(names: list[str]) -> str:
    return ", ".join(sorted(names)) or "none"


_PLURAL = {"policy": "policies"}


def _unknown(kind: str, name: str, defined: list[str], path: Path) -> Issue:
    plural = _PLURAL.get(kind, f"{kind}s")
    return (path, f"unknown {kind} {show(name)} (defined {plural}: {_known(defined)})")


def identity_issues(config: GatewayConfig) -> list[Issue]:
    """Every unknown issuer/role reference and every role inheritance cycle."""
    issues: list[Issue] = []
    issuers = [i.name for i in config.issuers]
    roles = [r.name for r in config.roles]
    for ri, role in enumerate(config.roles):
        for ii, parent in enumerate(role.inherits):
            if config.role(parent) is None:
                issues.append(_unknown("role", parent, roles, ("roles", ri, "inherits", ii)))
    issues += role_cycles(config)
    issues += metadata_clashes(config)
    for pi, policy in enumerate(config.policies):
        for ii, issuer in enumerate(policy.issuers):
            if config.issuer(issuer) is None:
                issues.append(_unknown("issuer", issuer, issuers, ("policies", pi, "issuers", ii)))
        for ii, role_name in enumerate(policy.roles):
            if config.role(role_name) is None:
                issues.append(_unknown("role", role_name, roles, ("policies", pi, "roles", ii)))
        for kind in ("allow", "deny"):
            for ri, rule in enumerate(getattr(policy, kind)):
                for ii, role_name in enumerate(rule.roles):
                    if config.role(role_name) is None:
                        path: Path = ("policies", pi, kind, ri, "roles", ii)
                        issues.append(_unknown("role", role_name, roles, path))
    return issues


def metadata_clashes(config: GatewayConfig) -> list[Issue]:
    """An issuer named like another's token-header metadata key (``corp.header`` next to
    ``corp``): the token checks would read one token's payload as the other's header."""
    names = {i.name for i in config.issuers}
    return [
        (
            ("issuers", index, "name"),
            f"issuer name {show(issuer.name)} is reserved: Envoy keeps the token header of "
            f"issuer {show(issuer.name[: -len('.header')])} under that name; rename it",
        )
        for index, issuer in enumerate(config.issuers)
        if issuer.name.endswith(".header") and issuer.name[: -len(".header")] in names
    ]


def role_cycles(config: GatewayConfig) -> list[Issue]:
    """A role that inherits itself, directly or through others, named with the whole cycle."""
    issues: list[Issue] = []
    index = {r.name: i for i, r in reversed(list(enumerate(config.roles)))}
    reported: set[frozenset[str]] = set()
    for start in config.roles:
        stack: list[tuple[str, list[str]]] = [(start.name, [start.name])]
        seen: set[str] = set()
        while stack:
            name, trail = stack.pop()
            role = config.role(name)
            if role is None:
                continue
            for parent in role.inherits:
                if parent == start.name:
                    cycle = frozenset(trail)
                    if cycle not in reported:
                        reported.add(cycle)
                        ri = index[start.name]
                        ii = role.inherits.index(parent) if name == start.name else 0
                        where: Path = ("roles", ri, "inherits", ii)
                        chain = " -> ".join([*trail, parent])
                        issues.append((where, f"role inheritance cycle: {chain}"))
                elif parent not in seen:
                    seen.add(parent)
                    stack.append((parent, [*trail, parent]))
    return issues


def attachment_issues(
    config: GatewayConfig, vhost: VirtualHost, route: Route | None, path: Path
) -> list[Issue]:
    """A virtual host's or route's ``policy`` and ``login`` name things that exist."""
    issues: list[Issue] = []
    owner = route if route is not None else vhost
    if owner.policy is not None and config.policy(owner.policy) is None:
        defined = [p.name for p in config.policies]
        issues.append(_unknown("policy", owner.policy, defined, (*path, "policy")))
    if owner.login is not None and config.login(owner.login) is None:
        defined = [g.name for g in config.logins]
        issues.append(_unknown("login", owner.login, defined, (*path, "login")))
    if route is not None and route.public and (route.policy or route.login):
        issues.append(
            (
                (*path, "public"),
                "'public: true' exempts the route from its virtual host's policy and login; "
                "it cannot also name a 'policy' or 'login'",
            )
        )
    return issues
