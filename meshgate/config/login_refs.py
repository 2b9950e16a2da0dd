"""Cross-checks of browser logins that no single login can make.

Each login's filter answers its ``redirect_path`` and ``signout_path`` itself, on every virtual
host where some route uses the login. Two logins used on one virtual host with the same path
would both claim it: the provider of one would send its browsers to the other's filter, which
refuses them (its nonce cookie is not there), so every sign-in of one login would fail. Caught
here, with the path of the second login that takes the path.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from meshgate.redact import show

if TYPE_CHECKING:
    from .gateway import GatewayConfig
    from .references import Issue
    from .routes import Route, VirtualHost

Path = tuple[str | int, ...]


def enforced_login(vhost: VirtualHost, route: Route) -> str | None:
    """The login a route enforces (the compiler's rule: its own, else its virtual host's
    unless it is public)."""
    if route.login is not None:
        return route.login
    return None if route.public else vhost.login


def login_path_issues(config: GatewayConfig, vhost: VirtualHost, path: Path) -> list[Issue]:
    """Two logins used on ``vhost`` (at ``path``) claim the same sign-in or sign-out path."""
    used: dict[str, Path] = {}
    if vhost.login is not None:
        used[vhost.login] = (*path, "login")
    for ri, route in enumerate(vhost.routes):
        name = enforced_login(vhost, route)
        if name is not None and name not in used:
            used[name] = (*path, "routes", ri, "login")
    if len(used) < 2:
        return []
    issues: list[Issue] = []
    claimed: dict[str, str] = {}
    for name, where in used.items():
        login = config.login(name)
        if login is None:  # reported as an unknown login
            continue
        clashes: dict[str, list[str]] = {}
        for value in (login.redirect_path, login.signout_path):
            owner = claimed.setdefault(value, name)
            if owner != name:
                clashes.setdefault(owner, []).append(show(value))
        for owner, paths in clashes.items():
            issues.append(
                (
                    where,
                    f"logins {owner!r} and {name!r} are both used on this virtual host and "
                    f"both answer {' and '.join(paths)}; give one of them its own "
                    "'redirect_path' and 'signout_path'",
                )
            )
    return issues
