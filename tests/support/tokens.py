"""JWTs for tests, built by hand so that every part can be wrong on purpose.

A real library would refuse to make most of what the attack tests need (``alg: none``, a
``crit`` header, an HMAC signed with an RSA public key, a JSON serialization), so tokens here
are assembled from their segments with :mod:`cryptography` doing only the signing.

Typical use::

    idp = SigningKey.rsa("k1")
    jwks = jwks_of(idp)                       # serve or inline this
    token = idp.sign({"iss": ISS, "aud": "api", "sub": "alice", "exp": in_(3600)})
"""

from __future__ import annotations

import base64
import json
import time
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives import hashes, hmac, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _int_b64(value: int, length: int | None = None) -> str:
    size = length or max(1, (value.bit_length() + 7) // 8)
    return b64url(value.to_bytes(size, "big"))


def segment(obj: Any) -> str:
    """One JSON segment of a compact JWS."""
    return b64url(json.dumps(obj, separators=(",", ":")).encode())


def in_(seconds: float) -> int:
    """A NumericDate ``seconds`` from now (negative: in the past)."""
    return int(time.time() + seconds)


_HASHES: dict[str, type[hashes.SHA256 | hashes.SHA384 | hashes.SHA512]] = {
    "256": hashes.SHA256,
    "384": hashes.SHA384,
    "512": hashes.SHA512,
}
_CURVES = {"ES256": (ec.SECP256R1, "P-256", 32), "ES384": (ec.SECP384R1, "P-384", 48)}


@dataclass
class SigningKey:
    """A private key, its ``kid`` and the algorithm it signs with."""

    kid: str
    alg: str
    private: Any

    @classmethod
    def rsa(cls, kid: str, alg: str = "RS256", bits: int = 2048) -> SigningKey:
        return cls(kid, alg, rsa.generate_private_key(public_exponent=65537, key_size=bits))

    @classmethod
    def ec(cls, kid: str, alg: str = "ES256") -> SigningKey:
        return cls(kid, alg, ec.generate_private_key(_CURVES[alg][0]()))

    @classmethod
    def ed25519(cls, kid: str) -> SigningKey:
        return cls(kid, "EdDSA", ed25519.Ed25519PrivateKey.generate())

    # --- the public half ---------------------------------------------------------------------

    def public_jwk(self, with_alg: bool = True) -> dict[str, Any]:
        pub = self.private.public_key()
        out: dict[str, Any]
        size = 0
        if isinstance(pub, rsa.RSAPublicKey):
            rsa_nums = pub.public_numbers()
            out = {"kty": "RSA", "n": _int_b64(rsa_nums.n), "e": _int_b64(rsa_nums.e)}
        elif isinstance(pub, ec.EllipticCurvePublicKey):
            _, crv, size = _CURVES[self.alg]
            nums = pub.public_numbers()
            out = {
                "kty": "EC",
                "crv": crv,
                "x": _int_b64(nums.x, size),
                "y": _int_b64(nums.y, size),
            }
        else:
            raw = pub.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
            out = {"kty": "OKP", "crv": "Ed25519", "x": b64url(raw)}
        out["kid"] = self.kid
        out["use"] = "sig"
        if with_alg:
            out["alg"] = self.alg
        return out

    def public_pem(self) -> bytes:
        pem: bytes = self.private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return pem

    # --- signing -----------------------------------------------------------------------------

    def signature(self, signing_input: bytes, alg: str | None = None) -> bytes:
        alg = alg or self.alg
        digest = _HASHES.get(alg[-3:], hashes.SHA256)()
        if alg.startswith("RS"):
            sig: bytes = self.private.sign(signing_input, padding.PKCS1v15(), digest)
            return sig
        if alg.startswith("PS"):
            pss = padding.PSS(mgf=padding.MGF1(digest), salt_length=digest.digest_size)
            sig = self.private.sign(signing_input, pss, digest)
            return sig
        if alg.startswith("ES"):
            der = self.private.sign(signing_input, ec.ECDSA(digest))
            r, s = decode_dss_signature(der)
            size = _CURVES[alg][2]
            return r.to_bytes(size, "big") + s.to_bytes(size, "big")
        if alg == "EdDSA":
            sig = self.private.sign(signing_input)
            return sig
        raise ValueError(f"SigningKey cannot sign {alg}")

    def sign(
        self,
        claims: dict[str, Any],
        header: dict[str, Any] | None = None,
        *,
        drop: tuple[str, ...] = (),
    ) -> str:
        """A compact JWS of ``claims``; ``header`` adds to (or overrides) the default
        ``{"alg", "typ", "kid"}``; ``drop`` removes header members (``kid``...)."""
        head: dict[str, Any] = {"alg": self.alg, "typ": "JWT", "kid": self.kid, **(header or {})}
        for name in drop:
            head.pop(name, None)
        signing_input = f"{segment(head)}.{segment(claims)}"
        alg = head.get("alg") if isinstance(head.get("alg"), str) else self.alg
        sig = self.signature(signing_input.encode(), alg if alg in _SIGNABLE else self.alg)
        return f"{signing_input}.{b64url(sig)}"


_SIGNABLE = {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA"}


def jwks_of(*keys: SigningKey, with_alg: bool = True) -> dict[str, Any]:
    """The JWKS document publishing ``keys``' public halves."""
    return {"keys": [k.public_jwk(with_alg) for k in keys]}


def hmac_token(secret: bytes, claims: dict[str, Any], header: dict[str, Any]) -> str:
    """An HS* token keyed with ``secret`` (for the "HMAC signed with the public key" attack,
    pass the RSA key's public PEM or JWK text)."""
    alg = header.get("alg", "HS256")
    signing_input = f"{segment({'typ': 'JWT', **header})}.{segment(claims)}".encode()
    mac = hmac.HMAC(secret, _HASHES[alg[-3:]]())
    mac.update(signing_input)
    return f"{signing_input.decode()}.{b64url(mac.finalize())}"


def unsigned_token(claims: dict[str, Any], alg: str = "none", signature: str = "") -> str:
    """``alg: none`` (in any spelling) with an empty (or given) signature."""
    return f"{segment({'alg': alg, 'typ': 'JWT'})}.{segment(claims)}.{signature}"


def json_serialization(token: str) -> str:
    """The same JWS in JSON serialization (RFC 7515 §7.2), which bearer tokens never use."""
    head, payload, sig = token.split(".")
    return json.dumps({"payload": payload, "protected": head, "signature": sig})
