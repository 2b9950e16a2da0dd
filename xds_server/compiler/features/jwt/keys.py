"""The key set Envoy gets for an issuer: its usable public keys, or a set no token can match.

Keys come from the config (``jwks.inline``) or from the control plane's JWKS manager
(``ctx.jwks``, for ``url`` and ``file``), the latter only when they were fetched from the
source the config names now (:meth:`meshgate.config.identity.Jwks.fingerprint`). Only keys that
can verify an algorithm the issuer allows are kept, reduced to their public members
(:func:`meshgate.config.jwk.usable_keys`).

An issuer without usable keys (not fetched yet, expired past ``max_stale``, or a set without a
key for its algorithms) must refuse every token, never accept one unchecked. Envoy refuses a
provider whose key set is empty (``Jwks doesn't have any valid public key``, which would reject
the whole listener), so such an issuer gets :data:`NO_KEY` instead: a valid P-256 public key
whose private key nobody has. Its point is derived from a public seed ("nothing up my sleeve",
see :func:`derive_no_key`), so anyone can check that it was not chosen with a known private key.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Iterable, Mapping
from typing import Any

from meshgate.config.identity import Issuer
from meshgate.config.jwk import parse_jwks, usable_keys
from xds_server.compiler.context import IssuerKeys

#: The seed of :data:`NO_KEY`'s point.
NO_KEY_SEED = b"meshgate: an issuer without usable keys"
#: The key that stands in for none: a P-256 point derived from :data:`NO_KEY_SEED`.
NO_KEY: dict[str, str] = {
    "kty": "EC",
    "crv": "P-256",
    "kid": "meshgate-no-usable-keys",
    "use": "sig",
    "alg": "ES256",
    "x": "tJAHa63sne0SptCy_kMNHxfw0H4oCIsv4Vg5RSSmN4U",
    "y": "dliPmKDevZf7Lqm4RKOfuj2SYje1VBWGGEcQ7-zSyIQ",
}

# NIST P-256: y^2 = x^3 - 3x + b over GF(p).
_P256_P = 2**256 - 2**224 + 2**192 + 2**96 - 1
_P256_B = 0x5AC635D8AA3A93E7B3EBBD55769886BC651D06B0CC53B0F63BCE3C3E27D2604B


def derive_no_key(seed: bytes = NO_KEY_SEED) -> tuple[str, str]:
    """(x, y) of :data:`NO_KEY`, base64url: the first ``x = SHA-256(seed || counter) mod p`` that
    lies on the curve, with the even ``y``. Hashing makes its discrete logarithm (the private
    key) unknowable; the tests recompute it."""
    p, b = _P256_P, _P256_B
    for counter in range(256):
        digest = hashlib.sha256(seed + counter.to_bytes(4, "big")).digest()
        x = int.from_bytes(digest, "big") % p
        rhs = (pow(x, 3, p) - 3 * x + b) % p
        if pow(rhs, (p - 1) // 2, p) == 1:
            y = pow(rhs, (p + 1) // 4, p)  # p = 3 mod 4
            y = y if y % 2 == 0 else p - y
            return _b64(x), _b64(y)
    raise ValueError("no point found")  # pragma: no cover (the first counter works)


def _b64(value: int) -> str:
    return base64.urlsafe_b64encode(value.to_bytes(32, "big")).rstrip(b"=").decode()


def source_keys(issuer: Issuer, fetched: Mapping[str, IssuerKeys]) -> list[Any]:
    """Every key of the issuer's current source: inline, or fetched for this very source."""
    if issuer.jwks.inline is not None:
        return issuer.jwks.inline_keys()
    return fetched_keys(issuer.name, issuer.jwks.fingerprint(), fetched)


def fetched_keys(name: str, fingerprint: str, fetched: Mapping[str, IssuerKeys]) -> list[Any]:
    """Every key fetched for issuer ``name`` from the source ``fingerprint`` names; none when
    they were fetched from another source (the config changed) or not at all."""
    keys = fetched.get(name)
    if keys is None or keys.fingerprint != fingerprint:
        return []
    try:
        return parse_jwks(keys.document)
    except ValueError:
        return []  # the manager validates documents; a broken one is no keys, never a crash


def served_keys(issuer: Issuer, fetched: Mapping[str, IssuerKeys]) -> list[dict[str, Any]]:
    """The keys Envoy gets for ``issuer``: its usable ones, else :data:`NO_KEY` alone."""
    return usable_or_no_key(source_keys(issuer, fetched), issuer.algorithms)


def usable_or_no_key(keys: Iterable[Any], algorithms: Iterable[str]) -> list[dict[str, Any]]:
    """The keys of ``keys`` that verify one of ``algorithms``, else :data:`NO_KEY` alone."""
    return usable_keys(keys, algorithms) or [dict(NO_KEY)]


def served_jwks(issuer: Issuer, fetched: Mapping[str, IssuerKeys]) -> str:
    """:func:`served_keys` as the JWKS text of ``JwtProvider.local_jwks`` (deterministic)."""
    return jwks_text(served_keys(issuer, fetched))


def jwks_text(keys: list[dict[str, Any]]) -> str:
    """A key set as ``local_jwks`` text: canonical, so the same keys give the same bytes (and
    the same snapshot version) whoever computes them: a compile, or a re-key of the published
    snapshot (:mod:`xds_server.compiler.features.jwt.rekey`)."""
    return json.dumps({"keys": keys}, sort_keys=True, separators=(",", ":"))
