"""The test token builder signs what a verifier accepts (checked with cryptography itself)."""

from __future__ import annotations

import base64
import json

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from tests.support.tokens import SigningKey, hmac_token, in_, jwks_of, unsigned_token


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def test_rs256_verifies_with_the_public_key() -> None:
    key = SigningKey.rsa("k1")
    token = key.sign({"sub": "alice", "exp": in_(60)})
    head, payload, sig = token.split(".")
    assert json.loads(_unb64(head)) == {"alg": "RS256", "typ": "JWT", "kid": "k1"}
    key.private.public_key().verify(
        _unb64(sig), f"{head}.{payload}".encode(), padding.PKCS1v15(), hashes.SHA256()
    )


def test_es256_signature_is_raw_r_s() -> None:
    key = SigningKey.ec("e1")
    head, payload, sig = key.sign({"sub": "bob"}).split(".")
    raw = _unb64(sig)
    assert len(raw) == 64
    der = encode_dss_signature(int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big"))
    key.private.public_key().verify(der, f"{head}.{payload}".encode(), ec.ECDSA(hashes.SHA256()))


@pytest.mark.parametrize("maker", [SigningKey.rsa, SigningKey.ec, lambda k: SigningKey.ed25519(k)])
def test_jwks_has_kid_and_key_type(maker: object) -> None:
    key = maker("x")  # type: ignore[operator]
    (jwk,) = jwks_of(key)["keys"]
    assert jwk["kid"] == "x" and jwk["kty"] in {"RSA", "EC", "OKP"}


def test_attack_shapes() -> None:
    assert unsigned_token({"sub": "a"}).endswith(".")
    key = SigningKey.rsa("k1")
    forged = hmac_token(key.public_pem(), {"sub": "a"}, {"alg": "HS256", "kid": "k1"})
    assert json.loads(_unb64(forged.split(".")[0]))["alg"] == "HS256"
    dropped = key.sign({"sub": "a"}, drop=("kid",))
    assert "kid" not in json.loads(_unb64(dropped.split(".")[0]))
