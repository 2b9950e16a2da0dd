"""The smallest config whose snapshot carries an issuer's signing keys: one route under a
policy (``staff``) that names the issuer ``corp`` (ES256, keys from ``jwks``).

The JWKS tests (re-keying, keys changing while the config is rejected, the manager against a
real identity provider) all need exactly this shape and differ only in where keys come from.
"""

from __future__ import annotations

from typing import Any

ISSUER = "https://idp.example"


def staff_config(
    jwks: dict[str, Any],
    *,
    port: int = 8080,
    address: str | None = None,
    more_issuers: tuple[dict[str, Any], ...] = (),
) -> dict[str, Any]:
    """The config, as plain data; ``more_issuers`` are named by the policy too."""
    listener: dict[str, Any] = {
        "name": "public",
        **({"address": address} if address is not None else {}),
        "port": port,
        "virtual_hosts": [
            {
                "name": "v",
                "policy": "staff",
                "routes": [{"match": {"prefix": "/"}, "service": "api"}],
            }
        ],
    }
    corp = {
        "name": "corp",
        "issuer": ISSUER,
        "audiences": "api",
        "algorithms": ["ES256"],
        "jwks": jwks,
    }
    issuers = [corp, *more_issuers]
    return {
        "listeners": [listener],
        "services": [{"name": "api", "endpoints": [{"address": "127.0.0.1", "port": 9}]}],
        "issuers": issuers,
        # a policy names the issuers: their keys are in the snapshot (jwt_authn over ECDS)
        "policies": [{"name": "staff", "issuers": [i["name"] for i in issuers]}],
    }
