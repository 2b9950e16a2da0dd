"""What the JWT and identity attack gateways share: the issuers' names, typical claims, an
inline-key issuer, the health route, and starting one Envoy with its control plane.

Both gateways (``jwt_gateway.py``, ``attack_gateway.py``) sign real tokens with keys the test
makes and publish them inline, so neither needs a JWKS server; keeping that here means both
suites attack the same kind of configuration.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tests.support.tokens import SigningKey, in_, jwks_of

from .harness import Client, ControlPlane, Envoy, wait_until, write_config
from .upstreams_protection import RecordingUpstream

CORP_ISS = "https://login.corp.example"
PARTNER_ISS = "https://id.partner.example"
AUDIENCE = "shop"
#: The main listener accepts request headers up to this size (a larger token is refused 431).
HEADER_LIMIT_KB = 16


def health_route() -> dict[str, Any]:
    """The public route :func:`serving` polls until Envoy serves."""
    return {
        "name": "health",
        "match": {"path": "/healthz"},
        "direct_response": {"status": 200, "body": "ok"},
        "public": True,
    }


def claims(iss: Any = CORP_ISS, **extra: Any) -> dict[str, Any]:
    """A token's claims that pass every check (issuer, audience, times), with ``extra`` on top."""
    base: dict[str, Any] = {
        "iss": iss,
        "aud": AUDIENCE,
        "sub": "alice",
        "exp": in_(3600),
        "iat": in_(-10),
    }
    return {**base, **extra}


def inline_issuer(name: str, iss: str, key: SigningKey, **extra: Any) -> dict[str, Any]:
    """An issuer whose public key is inline in the config."""
    return {
        "name": name,
        "issuer": iss,
        "audiences": AUDIENCE,
        "algorithms": [key.alg],
        # No 'alg' on the published key: the issuer's allowlist alone must refuse PS256.
        "jwks": {"inline": json.dumps(jwks_of(key, with_alg=False))},
        **extra,
    }


@contextmanager
def serving(
    path: Path, config: dict[str, Any], upstream: RecordingUpstream, port: int
) -> Iterator[tuple[ControlPlane, Envoy, Client]]:
    """Writes ``config`` to ``path``, starts the control plane and Envoy, waits until the
    listener on ``port`` answers the health route; stops all (``upstream`` too) on exit."""
    write_config(path, config)
    cp = ControlPlane(path)
    envoy = Envoy(cp.xds_port)
    client = Client(port)
    try:
        wait_until(lambda: client.request("/healthz")[0] == 200, 15)
        yield cp, envoy, client
    finally:
        client.close()
        envoy.stop()
        cp.stop()
        upstream.stop()
