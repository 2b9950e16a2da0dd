"""Which policies and issuers a listener's routes use: what its JWT filter must contain.

A route's *effective policy* is its own ``policy``, else its virtual host's, unless the route
is ``public: true``. Only issuers that some effective policy of the listener names become
providers of its filter, and only those policies become requirements, so a listener whose
routes name no policy gets no JWT filter at all.
"""

from __future__ import annotations

from dataclasses import dataclass

from meshgate.config import GatewayConfig, Listener
from meshgate.config.access import effective_policy
from meshgate.config.identity import Issuer, Policy


@dataclass(frozen=True)
class JwtUsage:
    """The policies routes apply and the issuers those accept, each once, in a stable order
    (listeners and virtual hosts in config order, policy names sorted within each)."""

    policies: tuple[Policy, ...]
    issuers: tuple[Issuer, ...]

    def __bool__(self) -> bool:
        return bool(self.policies)


def listener_usage(config: GatewayConfig, listener: Listener) -> JwtUsage:
    """What ``listener``'s routes use."""
    return _usage(config, [listener])


def config_usage(config: GatewayConfig) -> JwtUsage:
    """What the routes of every listener use: the one jwt_authn config they share."""
    return _usage(config, config.listeners)


def _usage(config: GatewayConfig, listeners: list[Listener]) -> JwtUsage:
    policies: dict[str, Policy] = {}
    for vhost in (vh for listener in listeners for vh in listener.virtual_hosts):
        names = {effective_policy(vhost, route) for route in vhost.routes}
        for name in sorted(n for n in names if n is not None):
            policy = config.policy(name)
            if policy is not None:  # reference_errors() rules an unknown name out
                policies.setdefault(name, policy)
    issuers: dict[str, Issuer] = {}
    for policy in policies.values():
        for name in policy.issuers:
            issuer = config.issuer(name)
            if issuer is not None:
                issuers.setdefault(name, issuer)
    return JwtUsage(tuple(policies.values()), tuple(issuers.values()))
