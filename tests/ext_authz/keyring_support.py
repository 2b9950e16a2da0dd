"""Keys and records for the keyring, decision and server tests: issued like KeyBook does,
but with chosen times, so that expiry and revocation can be tested at their exact instant."""

from __future__ import annotations

from dataclasses import dataclass

from ext_authz.keyring import Keyring
from ext_authz.keys.format import mint
from ext_authz.keys.hashing import KeyHasher
from ext_authz.keys.record import KeyRecord

NOW = 1_800_000_000.0
HASHER = KeyHasher(b"h" * 32)


@dataclass(frozen=True)
class TestKey:
    __test__ = False  # not a test class, whatever its name

    text: str
    record: KeyRecord


def issue(
    *,
    key_id: str | None = None,
    tenant: str = "acme",
    scopes: tuple[str, ...] = ("orders:read",),
    expires_at: float | None = None,
    revoked_at: float | None = None,
) -> TestKey:
    key = mint(key_id)
    record = KeyRecord(
        key_id=key.key_id,
        name="test key",
        tenant=tenant,
        scopes=scopes,
        digest=HASHER.digest(key.text),
        created_at=NOW - 3600,
        expires_at=expires_at,
        revoked_at=revoked_at,
    )
    return TestKey(key.text, record)


def keyring_of(*keys: TestKey) -> Keyring:
    return Keyring(HASHER, [k.record for k in keys])


class Clock:
    """A clock the test moves by hand (``clock.t += 60``), starting in 2027."""

    def __init__(self) -> None:
        self.t = 1_800_000_000.0

    def __call__(self) -> float:
        return self.t
