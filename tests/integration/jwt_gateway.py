"""The gateway the JWT tests run: issuers with keys made by the test, policies, one Envoy.

Two identity providers sign real tokens (``corp`` with RSA, ``partner`` with EC P-256); their
public keys are inline in the config, so the tests need no JWKS server. Further issuers share
``corp``'s key and ``iss`` but read the token elsewhere (a cookie, a query parameter) or
forward it upstream.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from meshgate.proxy.envoy_process import free_port
from tests.support.tokens import SigningKey

from .harness import Client, ControlPlane, Envoy, write_config
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

__all__ = ["GHOST_ISS", "HEADER_LIMIT_KB", "PARTNER_ISS", "Idp", "JwtGateway", "start"]

GHOST_ISS = "https://ghost.example"


@dataclass
class Idp:
    """The test's identity providers: their signing keys and helpers for typical claims."""

    corp: SigningKey = field(default_factory=lambda: SigningKey.rsa("corp-1"))
    partner: SigningKey = field(default_factory=lambda: SigningKey.ec("partner-1"))
    #: A key nobody published: tokens it signs must never pass.
    rogue: SigningKey = field(default_factory=lambda: SigningKey.rsa("corp-1"))

    @staticmethod
    def claims(iss: str = CORP_ISS, **extra: Any) -> dict[str, Any]:
        return claims(iss, **extra)

    def corp_token(self, **extra: Any) -> str:
        return self.corp.sign(self.claims(**extra))

    def partner_token(self, **extra: Any) -> str:
        return self.partner.sign(self.claims(PARTNER_ISS, **extra))


def gateway_config(idp: Idp, port: int, upstream: int, unused_port: int) -> dict[str, Any]:
    corp_identity = {"tenant": "org.id", "roles": ["roles", "scope"]}
    claim_headers = {"x-user-email": "email", "x-org": "org"}
    route = {"service": "rec"}
    return {
        "listeners": [
            {
                "name": "main",
                "address": "127.0.0.1",
                "port": port,
                "limits": {"max_request_headers_kb": HEADER_LIMIT_KB},
                "virtual_hosts": [
                    {
                        "name": "app",
                        "policy": "orders",
                        "routes": [
                            health_route(),
                            {"match": {"prefix": "/public/"}, "public": True, **route},
                            {"match": {"prefix": "/shadow/"}, "policy": "audit", **route},
                            {"match": {"prefix": "/cookie/"}, "policy": "cookie", **route},
                            {"match": {"prefix": "/query/"}, "policy": "query", **route},
                            {"match": {"prefix": "/forward/"}, "policy": "forward", **route},
                            {"match": {"prefix": "/ghost/"}, "policy": "ghost", **route},
                            {"match": {"prefix": "/"}, **route},
                        ],
                    }
                ],
            }
        ],
        "services": [{"name": "rec", "endpoints": [{"address": "127.0.0.1", "port": upstream}]}],
        "issuers": [
            inline_issuer(
                "corp",
                CORP_ISS,
                idp.corp,
                leeway="5s",
                identity=corp_identity,
                claim_headers=claim_headers,
            ),
            inline_issuer("partner", PARTNER_ISS, idp.partner, identity={"subject": "client_id"}),
            inline_issuer(
                "corp-cookie",
                CORP_ISS,
                idp.corp,
                tokens=[{"cookie": "session"}],
                forward_token=True,
            ),
            inline_issuer("corp-query", CORP_ISS, idp.corp, tokens=[{"query": "access_token"}]),
            inline_issuer("corp-forward", CORP_ISS, idp.corp, forward_token=True),
            # Keys from a URL nobody serves: never fetched, so its tokens must all be refused.
            {
                **inline_issuer("ghost", GHOST_ISS, idp.corp),
                "jwks": {"url": f"http://127.0.0.1:{unused_port}/jwks.json"},
            },
        ],
        "policies": [
            {"name": "orders", "issuers": ["corp", "partner"]},
            {"name": "audit", "mode": "shadow", "issuers": ["corp"]},
            {"name": "cookie", "issuers": ["corp-cookie"]},
            {"name": "query", "issuers": ["corp-query"]},
            {"name": "forward", "issuers": ["corp-forward"]},
            {"name": "ghost", "issuers": ["ghost"]},
        ],
    }


@dataclass
class JwtGateway:
    client: Client
    upstream: RecordingUpstream
    envoy: Envoy
    control_plane: ControlPlane
    idp: Idp
    config_path: Path
    #: The port of the JWKS URL nobody serves (issuer ``ghost``).
    ghost_port: int

    def rewrite(self, idp: Idp) -> None:
        """The same gateway with ``idp``'s keys (a key rotation, as operators deploy it)."""
        config = gateway_config(idp, self.client.port, self.upstream.port, self.ghost_port)
        write_config(self.config_path, config)

    def seen(self, path: str) -> list[Seen]:
        return self.upstream.requests(path)

    def get(
        self, path: str, token: str | None = None, headers: dict[str, str] | None = None
    ) -> tuple[int, dict[str, str], bytes]:
        sent = dict(headers or {})
        if token is not None:
            sent["authorization"] = f"Bearer {token}"
        return self.client.request(path, headers=sent)


def start(tmp: Path) -> Iterator[JwtGateway]:
    idp = Idp()
    upstream = RecordingUpstream()
    port = free_port()
    path = tmp / "gateway.yaml"
    ghost_port = free_port()
    config = gateway_config(idp, port, upstream.port, ghost_port)
    with serving(path, config, upstream, port) as (cp, envoy, client):
        yield JwtGateway(client, upstream, envoy, cp, idp, path, ghost_port)
