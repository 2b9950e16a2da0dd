"""The gateway the identity attack tests run (``test_identity_attacks.py``): one Envoy, several
listeners, each the target of one family of attacks.

* ``main``: a role policy (``orders``) over two issuers (``corp`` RSA, ``partner`` EC), with
  deny rules on a path, a subject and a method; a case-insensitive legacy route; public routes.
* ``hops``: one trusted proxy (``trusted_hops: 1``) and IP deny/allow lists, IPv4 and IPv6.
* ``cidrs``: proxies trusted by address (loopback), an IPv4 deny list.
* ``dual``: bound to ``::``, an IPv4 deny list (what an IPv4 client becomes on such a socket).

Keys are inline (no JWKS server); a third issuer ``corp-tenant`` has its own key and an ``iss``
that starts with ``corp``'s, for cross-issuer confusion.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from meshgate.proxy.envoy_process import free_port
from tests.support.tokens import SigningKey

from .harness import ControlPlane, Envoy
from .identity_gateway import (
    CORP_ISS,
    HEADER_LIMIT_KB,
    PARTNER_ISS,
    claims,
    health_route,
    inline_issuer,
    serving,
)
from .upstreams_protection import RecordingUpstream, Seen

__all__ = [
    "CORP_ISS",
    "DROP",
    "HEADER_LIMIT_KB",
    "TENANT_ISS",
    "AttackGateway",
    "Keys",
    "gateway_config",
    "start",
]

#: Another issuer whose ``iss`` has corp's as a prefix, with a key of its own.
TENANT_ISS = "https://login.corp.example/tenant2"
LISTENERS = ("main", "hops", "cidrs", "dual")


@dataclass
class Keys:
    corp: SigningKey = field(default_factory=lambda: SigningKey.rsa("corp-1"))
    tenant: SigningKey = field(default_factory=lambda: SigningKey.rsa("tenant-1"))
    partner: SigningKey = field(default_factory=lambda: SigningKey.ec("partner-1"))

    @staticmethod
    def claims(iss: Any = CORP_ISS, **extra: Any) -> dict[str, Any]:
        made = claims(iss, **{"roles": ["reader"], **extra})
        return {k: v for k, v in made.items() if v is not _DROP}

    def corp_token(self, **extra: Any) -> str:
        return self.corp.sign(self.claims(**extra))


#: A claim value that removes the claim from :meth:`Keys.claims`.
_DROP = object()
DROP: Any = _DROP


def gateway_config(keys: Keys, ports: dict[str, int], upstream: int) -> dict[str, Any]:
    def route(prefix: str, **extra: Any) -> dict[str, Any]:
        return {"match": {"prefix": prefix}, "service": "rec", **extra}

    main = {
        "name": "main",
        "address": "127.0.0.1",
        "port": ports["main"],
        "limits": {"max_request_headers_kb": HEADER_LIMIT_KB},
        "virtual_hosts": [
            {
                "name": "app",
                "policy": "orders",
                "routes": [
                    health_route(),
                    route("/public/", public=True),
                    {
                        "match": {"prefix": "/legacy/", "case_sensitive": False},
                        "service": "rec",
                    },
                    route("/tenant/", policy="tenant"),
                    route("/multi/", policy="multi"),
                    route("/cookie/", policy="cookie"),
                    route("/"),
                ],
            }
        ],
    }
    hops = {
        "name": "hops",
        "address": "127.0.0.1",
        "port": ports["hops"],
        "client_address": {"trusted_hops": 1},
        "ip_rules": {"deny": ["10.66.0.0/16", "2001:db8:bad::/48"]},
        "virtual_hosts": [
            {
                "name": "default",
                "routes": [
                    route("/inside/", ip_rules={"allow": ["10.0.0.0/8", "2001:db8::/32"]}),
                    route("/"),
                ],
            }
        ],
    }
    cidrs = {
        "name": "cidrs",
        "address": "127.0.0.1",
        "port": ports["cidrs"],
        "client_address": {"trusted_cidrs": ["127.0.0.0/8"]},
        "ip_rules": {"deny": ["10.66.0.0/16"]},
        "virtual_hosts": [{"name": "default", "routes": [route("/")]}],
    }
    dual = {
        "name": "dual",
        "address": "::",
        "port": ports["dual"],
        "virtual_hosts": [
            {
                "name": "default",
                "routes": [
                    route("/v4-denied/", ip_rules={"deny": ["127.0.0.0/8"]}),
                    route("/v4-only/", ip_rules={"allow": ["127.0.0.0/8"]}),
                    route("/"),
                ],
            }
        ],
    }
    return {
        "listeners": [main, hops, cidrs, dual],
        "services": [{"name": "rec", "endpoints": [{"address": "127.0.0.1", "port": upstream}]}],
        "issuers": [
            inline_issuer(
                "corp",
                CORP_ISS,
                keys.corp,
                leeway="5s",
                identity={"tenant": "org.id", "roles": ["roles", "scope"]},
                claim_headers={"x-user-email": "email"},
            ),
            inline_issuer("tenant", TENANT_ISS, keys.tenant),
            # corp's tokens, from the Authorization header or the access_token parameter
            inline_issuer(
                "corp-multi",
                CORP_ISS,
                keys.corp,
                tokens=[
                    {"header": "authorization", "prefix": "Bearer "},
                    {"query": "access_token"},
                ],
            ),
            inline_issuer(
                "corp-cookie",
                CORP_ISS,
                keys.corp,
                tokens=[{"cookie": "session"}],
                forward_token=True,
            ),
            inline_issuer(
                "partner",
                PARTNER_ISS,
                keys.partner,
                identity={"subject": "client_id", "roles": ["scope"]},
            ),
        ],
        "roles": [
            {
                "name": "reader",
                "permissions": [{"paths": ["/orders/**", "/legacy/**"], "methods": ["GET"]}],
            },
            {
                "name": "admin",
                "inherits": ["reader"],
                "permissions": [{"paths": ["/admin/**"]}],
            },
        ],
        "policies": [
            {
                "name": "orders",
                "issuers": ["corp", "partner"],
                "roles": ["reader", "admin"],
                "deny": [
                    {"roles": ["reader"], "paths": ["/orders/*/refund", "/legacy/internal/**"]},
                    {"subjects": ["mallory"]},
                    {"authenticated": True, "paths": ["/admin/audit/**"], "methods": ["DELETE"]},
                ],
            },
            {"name": "tenant", "issuers": ["tenant"]},
            {"name": "multi", "issuers": ["corp-multi"]},
            {"name": "cookie", "issuers": ["corp-cookie"]},
        ],
    }


@dataclass
class AttackGateway:
    ports: dict[str, int]
    upstream: RecordingUpstream
    envoy: Envoy
    control_plane: ControlPlane
    keys: Keys

    def seen(self, path: str) -> list[Seen]:
        return self.upstream.requests(path)


def start(tmp: Path) -> Iterator[AttackGateway]:
    keys = Keys()
    upstream = RecordingUpstream()
    ports = {name: free_port() for name in LISTENERS}
    config = gateway_config(keys, ports, upstream.port)
    with serving(tmp / "gateway.yaml", config, upstream, ports["main"]) as (cp, envoy, _):
        yield AttackGateway(ports, upstream, envoy, cp, keys)
