"""One RSA identity provider for the benchmarks: its JWKS and an RS256 token it signed.

The benchmark needs a token Envoy accepts and the key set that verifies it, nothing more;
``cryptography`` does the signing (the tests' token builder, which can also build broken
tokens, lives in ``tests/support`` and is not imported here).
"""

from __future__ import annotations

import base64
import json
import time
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

ISSUER = "https://bench-idp.example"
AUDIENCE = "bench"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _segment(obj: dict[str, Any]) -> str:
    return _b64(json.dumps(obj, separators=(",", ":")).encode())


@dataclass(frozen=True)
class BenchIdp:
    key: rsa.RSAPrivateKey
    kid: str = "bench-1"

    @classmethod
    def create(cls) -> BenchIdp:
        return cls(rsa.generate_private_key(public_exponent=65537, key_size=2048))

    def jwks(self) -> dict[str, Any]:
        nums = self.key.public_key().public_numbers()
        n = nums.n.to_bytes((nums.n.bit_length() + 7) // 8, "big")
        e = nums.e.to_bytes((nums.e.bit_length() + 7) // 8, "big")
        jwk = {"kty": "RSA", "kid": self.kid, "use": "sig", "alg": "RS256", "n": _b64(n)}
        return {"keys": [{**jwk, "e": _b64(e)}]}

    def token(self, **claims: Any) -> str:
        now = int(time.time())
        payload = {"iss": ISSUER, "aud": AUDIENCE, "sub": "bench", "iat": now, "exp": now + 86400}
        head = _segment({"alg": "RS256", "typ": "JWT", "kid": self.kid})
        signing_input = f"{head}.{_segment({**payload, **claims})}"
        sig = self.key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
        return f"{signing_input}.{_b64(sig)}"
