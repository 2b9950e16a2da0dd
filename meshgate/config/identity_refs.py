"""Cross-reference checks of the identity model: unknown names, duplicates, role cycles.

Each mistake comes back with the path of the offending value, so the loader can name its
file, line and column. A policy that names an issuer or role that does not exist is an error
of the whole file (the last good config keeps serving): never a route served open.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from meshgate.redact import show

from .access import RoleError, RoleGraph

if TYPE_CHECKING:
    from .gateway import GatewayConfig
    from .identity import Policy
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
    """Every unknown issuer/role reference, every role inheritance cycle and every grant
    that cannot mean anything."""
    issues: list[Issue] = []
    issuers = [i.name for i in config.issuers]
    roles = [r.name for r in config.roles]
    for ri, role in enumerate(config.roles):
        for ii, parent in enumerate(role.inherits):
            if config.role(parent) is None:
                issues.append(_unknown("role", parent, roles, ("roles", ri, "inherits", ii)))
    issues += role_cycles(config)
    issues += metadata_clashes(config)
    graph = RoleGraph.of(config.roles)
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
        issues += grant_issues(graph, policy, ("policies", pi))
    return issues


def _grants_nothing(graph: RoleGraph, name: str) -> bool:
    """A known, acyclic role without a permission of its own or inherited (an unknown or
    cyclic role is reported by the checks above, not again here)."""
    try:
        return not graph.permissions(name)
    except RoleError:
        return False


def grant_issues(graph: RoleGraph, policy: Policy, path: Path) -> list[Issue]:
    """Grants that cannot mean anything: a granted role without permissions, an allow rule in
    shadow mode (only a deny rule can be tried out: see the docs' dry run)."""
    issues: list[Issue] = []
    why = (
        "has no permissions, of its own or inherited, so granting it allows nothing; give the "
        "role 'permissions', or name 'paths' in an 'allow' rule"
    )
    for ii, name in enumerate(policy.roles):
        if _grants_nothing(graph, name):
            issues.append(((*path, "roles", ii), f"role {show(name)} {why}"))
    for ri, rule in enumerate(policy.allow):
        if rule.shadow:
            issues.append(
                (
                    (*path, "allow", ri, "shadow"),
                    "only 'deny' rules can be in shadow; to try out a whole policy, set its "
                    "'mode: shadow'",
                )
            )
        if not rule.paths:
            for ii, name in enumerate(rule.roles):
                if _grants_nothing(graph, name):
                    issues.append(((*path, "allow", ri, "roles", ii), f"role {show(name)} {why}"))
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
                        # Point at the start's own 'inherits' entry that leads into the cycle.
                        first = trail[1] if len(trail) > 1 else parent
                        where: Path = ("roles", index[start.name], "inherits")
                        where += (start.inherits.index(first),)
                        chain = " -> ".join([*trail, parent])
                        issues.append(
                            (
                                where,
                                f"role inheritance cycle: {chain} (a role cannot inherit "
                                "itself, directly or through other roles)",
                            )
                        )
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
