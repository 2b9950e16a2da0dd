"""What counts as a usable JWKS: broken documents are refused whole, unusable keys left out."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.support.tokens import SigningKey, b64url, jwks_of
from xds_server.jwks.document import MAX_KEYS, JwksError, parse_jwks

RSA = SigningKey.rsa("r1")
EC = SigningKey.ec("e1")
ED = SigningKey.ed25519("d1")


def doc(*keys: dict[str, Any]) -> str:
    return json.dumps({"keys": list(keys)})


def test_rsa_ec_and_ed25519_keys_are_kept_with_their_kids() -> None:
    keys = parse_jwks(json.dumps(jwks_of(RSA, EC, ED)))
    assert keys.kids == ("r1", "e1", "d1")
    assert keys.count == 3 and keys.skipped == ()


def test_the_document_is_normalised_public_members_only_and_canonical() -> None:
    jwk = {**RSA.public_jwk(), "x5c": ["MIIB..."], "x5t": "abc", "ext": True}
    first = parse_jwks(doc(jwk))
    assert json.loads(first.document) == {"keys": [RSA.public_jwk()]}
    # the same key written in another member order and spacing: the same bytes for Envoy
    reordered = json.dumps({"keys": [dict(reversed(list(jwk.items())))]}, indent=4)
    assert parse_jwks(reordered.encode()).document == first.document


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"<html>login</html>", "not JSON: Expecting value at line 1 column 1"),
        (b"\xff\xfe", "not UTF-8 text (byte offset 0)"),
        ("[]", "not a JWKS: the document is a JSON array, not an object"),
        ("{}", "not a JWKS: 'keys' must be a list of keys (missing)"),
        ('{"keys": {}}', "not a JWKS: 'keys' must be a list of keys (a JSON object)"),
        ('{"keys": []}', "no usable signing key"),
        ('{"keys": [1]}', "key 0: a JSON number, not a key object"),
        (
            '{"keys": [{"kid": "a"}]}',
            "key 0 (kid 'a'): 'kty' (the key type) is missing or not a string",
        ),
        ('{"keys": [], "keys": []}', "member 'keys' appears twice in one object"),
        ('{"keys": [{"kty": "RSA", "n": NaN}]}', "NaN is not JSON"),
        ("[" * 100000, "not JSON: nested too deeply"),
    ],
)
def test_a_broken_document_is_refused_with_the_reason(data: str | bytes, reason: str) -> None:
    with pytest.raises(JwksError) as info:
        parse_jwks(data)
    assert str(info.value) == reason


def _rsa(**change: Any) -> dict[str, Any]:
    return {**RSA.public_jwk(), **change}


@pytest.mark.parametrize(
    ("key", "reason"),
    [
        (
            _rsa(n="not base64!"),
            "key 0 (kid 'r1'): member 'n' is not base64url (RFC 7515, no padding)",
        ),
        (_rsa(e=""), "key 0 (kid 'r1'): member 'e' is missing or empty"),
        (_rsa(e=b64url(b"\x02")), "key 0 (kid 'r1'): 'n' and 'e' are not a valid RSA public key"),
        (_rsa(kid=7), "key 0: 'kid' must be a string"),
        (_rsa(alg="ES256"), "key 0 (kid 'r1'): algorithm 'ES256' does not fit key type 'RSA'"),
        (
            {**EC.public_jwk(), "y": EC.public_jwk()["x"]},
            "key 0 (kid 'e1'): the point ('x', 'y') is not on curve P-256",
        ),
        (
            {**EC.public_jwk(), "x": b64url(b"\x01" * 31)},
            "key 0 (kid 'e1'): 'x' and 'y' of a P-256 key must be 32 bytes each",
        ),
        (
            {**EC.public_jwk(), "alg": "ES384"},
            "key 0 (kid 'e1'): algorithm 'ES384' does not fit curve 'P-256' (ES256)",
        ),
        (
            {**ED.public_jwk(), "x": b64url(b"\x01" * 31)},
            "key 0 (kid 'd1'): 'x' of an Ed25519 key must be 32 bytes",
        ),
    ],
)
def test_a_broken_key_refuses_the_whole_document(key: dict[str, Any], reason: str) -> None:
    with pytest.raises(JwksError) as info:
        parse_jwks(doc(key, SigningKey.ec("good").public_jwk()))  # a good key does not save it
    assert str(info.value) == reason


def test_private_key_material_refuses_the_document() -> None:
    leaked = {**RSA.public_jwk(), "d": b64url(b"\x01" * 256)}
    with pytest.raises(JwksError, match=r"holds private key material \('d'\)"):
        parse_jwks(doc(EC.public_jwk(), leaked))


def test_unusable_keys_are_left_out_with_a_note() -> None:
    weak = SigningKey.rsa("weak", bits=1024)
    keys = parse_jwks(
        doc(
            RSA.public_jwk(),
            {**SigningKey.rsa("enc").public_jwk(with_alg=False), "use": "enc"},
            {**SigningKey.rsa("oaep").public_jwk(with_alg=False), "alg": "RSA-OAEP"},
            weak.public_jwk(),
            {"kty": "OKP", "crv": "X25519", "x": b64url(b"\x09" * 32), "kid": "x"},
            {"kty": "EC", "crv": "secp256k1", "x": "AA", "y": "AA", "kid": "k1"},
            {"kty": "PQC", "kid": "future"},
            {"kty": "oct", "k": b64url(b"s" * 32), "kid": "hmac"},
            {**RSA.public_jwk(), "kid": "ops", "key_ops": ["encrypt"]},
        )
    )
    assert keys.kids == ("r1",)
    assert keys.skipped == (
        "key 1 (kid 'enc'): not a signature key (use 'enc')",
        "key 2 (kid 'oaep'): algorithm 'RSA-OAEP' is not a signature algorithm Envoy verifies",
        "key 3 (kid 'weak'): an RSA key of 1024 bits is too weak (at least 2048)",
        "key 4 (kid 'x'): curve 'X25519' is not one Envoy verifies with (Ed25519 only)",
        "key 5 (kid 'k1'): curve 'secp256k1' is not one Envoy verifies with",
        "key 6 (kid 'future'): key type 'PQC' is not one Envoy verifies with",
        "key 7 (kid 'hmac'): a symmetric (HMAC) key: only public-key signatures are verified (a "
        "shared secret would sit in Envoy's config)",
        "key 8 (kid 'ops'): its 'key_ops' do not include 'verify'",
    )


def test_a_set_of_only_unusable_keys_is_refused_and_says_why() -> None:
    enc = {**RSA.public_jwk(with_alg=False), "use": "enc"}
    with pytest.raises(JwksError) as info:
        parse_jwks(doc(enc))
    assert (
        str(info.value)
        == "no usable signing key (key 0 (kid 'r1'): not a signature key (use 'enc'))"
    )


def test_too_many_keys_is_refused() -> None:
    with pytest.raises(JwksError, match=f"more than {MAX_KEYS}"):
        parse_jwks(doc(*[RSA.public_jwk()] * (MAX_KEYS + 1)))


def test_a_hostile_kid_is_escaped_and_cut_in_messages() -> None:
    kid = "\x1b[2J" + "x" * 100
    with pytest.raises(JwksError) as info:
        parse_jwks(doc({"kty": "RSA", "kid": kid, "n": "!"}))
    message = str(info.value)
    assert "\x1b" not in message and "\\x1b[2J" in message and "x" * 100 not in message
