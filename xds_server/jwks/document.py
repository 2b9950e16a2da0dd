"""Is this a JWKS Envoy can use? Validate a fetched document and normalise it: pure.

A document that is broken (not JSON, no ``keys`` list, a key whose members do not make a
key, private key material) is refused as a whole: it is not what the identity provider meant
to publish (an error page, a truncated answer, a misconfiguration), and the last good set
stays in force. A well-formed key that Envoy cannot or must not use for signatures (an
encryption key, an unknown key type or curve, a weak RSA key, a symmetric key) is left out
with a note, as RFC 7517 §5 asks of keys one does not understand; a set with
no usable key left is refused.

What Envoy gets is the normalised document: only the kept keys, only their public members,
serialised canonically, so the same keys give the same bytes (and the same snapshot version
on every control-plane replica), and extra members (certificate chains, private parts) never
reach Envoy's config dump.

Each key is parsed by ``cryptography`` (an RSA modulus that is not a valid key, an EC point
that is not on its curve, are refused here rather than by Envoy).
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from meshgate.config.identity import JWT_ALGORITHMS
from meshgate.redact import excerpt

#: More keys than an identity provider publishes (they rotate a handful); a bound on work.
MAX_KEYS = 100
#: Weaker RSA keys are left out (NIST SP 800-131A); BoringSSL verifies up to 16384 bits.
MIN_RSA_BITS = 2048
MAX_RSA_BITS = 16384
_B64URL = re.compile(r"^[A-Za-z0-9_-]*$")
_CURVES: dict[str, tuple[ec.EllipticCurve, int, str]] = {
    "P-256": (ec.SECP256R1(), 32, "ES256"),
    "P-384": (ec.SECP384R1(), 48, "ES384"),
    "P-521": (ec.SECP521R1(), 66, "ES512"),
}
#: Members that only a private (or secret) key has; one in a published set is a leak.
_PRIVATE = ("d", "p", "q", "dp", "dq", "qi", "oth")
#: Members kept for Envoy, per key type, beside kty, kid, use and alg.
_PUBLIC = {"RSA": ("n", "e"), "EC": ("crv", "x", "y"), "OKP": ("crv", "x")}
#: Which algorithms fit which key type (an alg on a key restricts it to that algorithm).
_ALG_PREFIX = {"RSA": ("RS", "PS"), "EC": ("ES",), "OKP": ("EdDSA",)}


class JwksError(ValueError):
    """The document is refused; the message says why (it never quotes key material)."""


@dataclass(frozen=True)
class KeySet:
    """A validated JWKS, normalised for Envoy."""

    #: The JWKS JSON Envoy gets: kept keys, public members only, canonical.
    document: str
    #: Each kept key's ``kid`` ("" when it has none), in order.
    kids: tuple[str, ...]
    #: Why keys were left out ("key 2 (kid 'enc-1'): an encryption key (use 'enc')").
    skipped: tuple[str, ...] = ()

    @property
    def count(self) -> int:
        return len(self.kids)


class _Skip(Exception):
    """This key is well-formed but not used; the message says why."""


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, value in pairs:
        if name in out:
            raise JwksError(f"member {excerpt(name)!r} appears twice in one object")
        out[name] = value
    return out


def _no_constants(name: str) -> Any:
    raise JwksError(f"{name} is not JSON")


def parse_jwks(data: bytes | str) -> KeySet:
    """The key set in ``data``, or :class:`JwksError` saying what is wrong with it."""
    try:
        text = data.decode("utf-8") if isinstance(data, bytes) else data
        doc = json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_no_constants)
    except UnicodeDecodeError as exc:
        raise JwksError(f"not UTF-8 text (byte offset {exc.start})") from None
    except json.JSONDecodeError as exc:
        raise JwksError(f"not JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    except RecursionError:
        raise JwksError("not JSON: nested too deeply") from None
    if not isinstance(doc, dict):
        raise JwksError(f"not a JWKS: the document is a JSON {_kind(doc)}, not an object")
    keys = doc.get("keys")
    if not isinstance(keys, list):
        found = "missing" if "keys" not in doc else f"a JSON {_kind(keys)}"
        raise JwksError(f"not a JWKS: 'keys' must be a list of keys ({found})")
    if len(keys) > MAX_KEYS:
        raise JwksError(f"{len(keys)} keys: more than {MAX_KEYS}")
    kept: list[dict[str, str]] = []
    skipped: list[str] = []
    for index, key in enumerate(keys):
        try:
            kept.append(_check_key(index, key))
        except _Skip as why:
            skipped.append(f"{_name(index, key)}: {why}")
    if not kept:
        detail = f" ({'; '.join(skipped)})" if skipped else ""
        raise JwksError(f"no usable signing key{detail}")
    document = json.dumps({"keys": kept}, sort_keys=True, separators=(",", ":"))
    return KeySet(document, tuple(k.get("kid", "") for k in kept), tuple(skipped))


def _kind(value: Any) -> str:
    kinds = {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null"}
    return kinds.get(type(value), "number")


def _name(index: int, key: Any) -> str:
    kid = key.get("kid") if isinstance(key, Mapping) else None
    return f"key {index} (kid {excerpt(kid)!r})" if isinstance(kid, str) else f"key {index}"


def _check_key(index: int, key: Any) -> dict[str, str]:
    """The key's public members for Envoy; :class:`_Skip` to leave it out; JwksError when the
    key is broken."""
    where = _name(index, key)
    if not isinstance(key, dict):
        raise JwksError(f"{where}: a JSON {_kind(key)}, not a key object")
    kty = key.get("kty")
    if not isinstance(kty, str):
        raise JwksError(f"{where}: 'kty' (the key type) is missing or not a string")
    for member in ("kid", "use", "alg"):
        if member in key and not isinstance(key[member], str):
            raise JwksError(f"{where}: {member!r} must be a string")
    if kty == "oct":
        raise _Skip(
            "a symmetric (HMAC) key: only public-key signatures are verified (a shared secret "
            "would sit in Envoy's config)"
        )
    if kty not in _PUBLIC:
        raise _Skip(f"key type {excerpt(kty)!r} is not one Envoy verifies with")
    private = [m for m in _PRIVATE if m in key]
    if private:
        raise JwksError(
            f"{where}: holds private key material ({', '.join(map(repr, private))}); a JWKS "
            "must publish public keys only (whoever has it can sign tokens)"
        )
    use = key.get("use")
    if use is not None and use != "sig":
        raise _Skip(f"not a signature key (use {excerpt(use)!r})")
    ops = key.get("key_ops")
    if ops is not None and (not isinstance(ops, list) or "verify" not in ops):
        raise _Skip("its 'key_ops' do not include 'verify'")
    alg = key.get("alg")
    if alg is not None:
        if alg not in JWT_ALGORITHMS:
            raise _Skip(f"algorithm {excerpt(alg)!r} is not a signature algorithm Envoy verifies")
        if not alg.startswith(_ALG_PREFIX[kty]):
            raise JwksError(f"{where}: algorithm {alg!r} does not fit key type {kty!r}")
    if kty == "RSA":
        _check_rsa(where, key)
    elif kty == "EC":
        _check_ec(where, key, alg)
    else:
        _check_okp(where, key)
    out = {m: key[m] for m in ("kty", "kid", "use", "alg") if m in key}
    out.update({m: key[m] for m in _PUBLIC[kty]})
    return out


def _member(where: str, key: Mapping[str, Any], name: str) -> bytes:
    """A base64url member, decoded; JwksError when missing or not base64url."""
    value = key.get(name)
    if not isinstance(value, str) or not value:
        raise JwksError(f"{where}: member {name!r} is missing or empty")
    if _B64URL.match(value) is None:
        raise JwksError(f"{where}: member {name!r} is not base64url (RFC 7515, no padding)")
    try:
        return base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
    except (binascii.Error, ValueError):
        raise JwksError(f"{where}: member {name!r} is not base64url") from None


def _check_rsa(where: str, key: Mapping[str, Any]) -> None:
    n = int.from_bytes(_member(where, key, "n"), "big")
    e = int.from_bytes(_member(where, key, "e"), "big")
    try:
        rsa.RSAPublicNumbers(e, n).public_key()
    except ValueError:
        raise JwksError(f"{where}: 'n' and 'e' are not a valid RSA public key") from None
    bits = n.bit_length()
    if bits < MIN_RSA_BITS:
        raise _Skip(f"an RSA key of {bits} bits is too weak (at least {MIN_RSA_BITS})")
    if bits > MAX_RSA_BITS:
        raise _Skip(f"an RSA key of {bits} bits is larger than Envoy verifies ({MAX_RSA_BITS})")


def _check_ec(where: str, key: Mapping[str, Any], alg: str | None) -> None:
    crv = key.get("crv")
    if not isinstance(crv, str):
        raise JwksError(f"{where}: 'crv' (the curve) is missing or not a string")
    if crv not in _CURVES:
        raise _Skip(f"curve {excerpt(crv)!r} is not one Envoy verifies with")
    curve, size, curve_alg = _CURVES[crv]
    if alg is not None and alg != curve_alg:
        raise JwksError(f"{where}: algorithm {alg!r} does not fit curve {crv!r} ({curve_alg})")
    x, y = _member(where, key, "x"), _member(where, key, "y")
    if len(x) != size or len(y) != size:
        raise JwksError(f"{where}: 'x' and 'y' of a {crv} key must be {size} bytes each")
    try:
        ec.EllipticCurvePublicNumbers(
            int.from_bytes(x, "big"), int.from_bytes(y, "big"), curve
        ).public_key()
    except ValueError:
        raise JwksError(f"{where}: the point ('x', 'y') is not on curve {crv}") from None


def _check_okp(where: str, key: Mapping[str, Any]) -> None:
    crv = key.get("crv")
    if not isinstance(crv, str):
        raise JwksError(f"{where}: 'crv' (the curve) is missing or not a string")
    if crv != "Ed25519":
        raise _Skip(f"curve {excerpt(crv)!r} is not one Envoy verifies with (Ed25519 only)")
    x = _member(where, key, "x")
    if len(x) != 32:
        raise JwksError(f"{where}: 'x' of an Ed25519 key must be 32 bytes")
    try:
        ed25519.Ed25519PublicKey.from_public_bytes(x)
    except ValueError:
        raise JwksError(f"{where}: 'x' is not an Ed25519 public key") from None
