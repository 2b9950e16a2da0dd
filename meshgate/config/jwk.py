"""JSON Web Keys: which algorithms a key can verify, and the public part of a key set.

Shared by the config model (an inline JWKS is checked when the file is loaded) and the compiler
(a fetched JWKS is filtered before Envoy sees it), so both judge a key the same way.

Why filter at all: Envoy's ``jwt_authn`` tries every key of the set whose type fits the token's
``alg``. A key that cannot serve any algorithm the issuer allows is at best dead weight and at
worst a way in (an ``oct`` key would let a token signed with a shared secret pass; a key meant
for encryption must never verify signatures). So only keys that can verify an allowed algorithm
reach Envoy, each reduced to its public members.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

#: Algorithms each key type (and curve) can verify; HMAC keys (``oct``) serve none of the
#: algorithms meshgate accepts.
_RSA = frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"})
_EC = {"P-256": "ES256", "P-384": "ES384", "P-521": "ES512"}
_OKP = {"Ed25519": "EdDSA"}
#: Members that only a private key has: a set carrying them leaks the key.
PRIVATE_MEMBERS = ("d", "p", "q", "dp", "dq", "qi", "oth", "k")
#: Members passed on to Envoy; everything else (x5c, x5t, key_ops...) is dropped.
_PUBLIC_MEMBERS = ("kty", "kid", "alg", "use", "n", "e", "crv", "x", "y")
_REQUIRED = {"RSA": ("n", "e"), "EC": ("crv", "x", "y"), "OKP": ("crv", "x")}


def parse_jwks(value: str | dict[str, Any]) -> list[Any]:
    """The ``keys`` of a JWKS document (JSON text or a mapping); a ValueError says what is
    wrong with the document as a whole."""
    doc: Any = value
    if isinstance(value, str):
        try:
            doc = json.loads(value)
        except json.JSONDecodeError as exc:
            raise ValueError(f"not a JSON document: {exc.msg} at character {exc.pos}") from None
    if not isinstance(doc, dict):
        raise ValueError("a JWKS is a JSON object with a 'keys' list")
    keys = doc.get("keys")
    if not isinstance(keys, list):
        raise ValueError("a JWKS needs a 'keys' list")
    return keys


def private_member(key: Any) -> str | None:
    """The first private member of ``key``, if it has one."""
    if isinstance(key, dict):
        for member in PRIVATE_MEMBERS:
            if member in key:
                return member
    return None


def key_algorithms(key: Any) -> frozenset[str]:
    """The signature algorithms ``key`` can verify: none for a malformed key, a private or
    symmetric one, or one whose ``use``/``key_ops`` say it is not for verifying signatures."""
    if not isinstance(key, dict) or private_member(key) is not None:
        return frozenset()
    kty = key.get("kty")
    if kty not in _REQUIRED:
        return frozenset()
    if any(not isinstance(key.get(m), str) or not key.get(m) for m in _REQUIRED[kty]):
        return frozenset()
    if key.get("use", "sig") != "sig":
        return frozenset()
    ops = key.get("key_ops")
    if ops is not None and (not isinstance(ops, list) or "verify" not in ops):
        return frozenset()
    if kty == "RSA":
        algs = _RSA
    else:
        alg = (_EC if kty == "EC" else _OKP).get(key["crv"])
        algs = frozenset({alg}) if alg else frozenset()
    if "alg" in key:
        return algs & {key["alg"]} if isinstance(key["alg"], str) else frozenset()
    return algs


def describe(key: Any) -> str:
    """A key as an operator recognises it (``RSA key 'k1'``), for messages."""
    if not isinstance(key, dict):
        return "a key that is not a JSON object"
    kind = key.get("kty") if isinstance(key.get("kty"), str) else "untyped"
    crv = f" {key['crv']}" if isinstance(key.get("crv"), str) else ""
    kid = f" {json.dumps(key['kid'])}" if isinstance(key.get("kid"), str) else ""
    return f"{kind}{crv} key{kid}"


def usable_keys(keys: Iterable[Any], algorithms: Iterable[str]) -> list[dict[str, Any]]:
    """The keys that can verify one of ``algorithms``, each reduced to its public members."""
    allowed = frozenset(algorithms)
    return [
        {m: key[m] for m in _PUBLIC_MEMBERS if m in key}
        for key in keys
        if key_algorithms(key) & allowed
    ]
