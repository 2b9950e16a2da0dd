"""Create, rotate, revoke and list API keys: the operations the CLI and the admin API share.

Each returns the key text at most once (on create and rotate); nothing here logs, and the
records it returns hold only the keyed hash.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from ext_authz.keys.format import mint
from ext_authz.keys.hashing import KeyHasher
from ext_authz.keys.record import KeyRecord, check_fields
from ext_authz.stores.base import KeyConflict, KeyStore, KeyStoreError, UnknownKey

#: how long a rotated key stays valid when no grace period is given
DEFAULT_GRACE = 24 * 3600.0


@dataclass(frozen=True)
class Issued:
    """A key just made: its text (shown once) and its record."""

    text: str
    record: KeyRecord

    def __repr__(self) -> str:
        return f"Issued(record={self.record!r})"


class KeyBook:
    def __init__(
        self, store: KeyStore, hasher: KeyHasher, clock: Callable[[], float] = time.time
    ) -> None:
        self.store, self.hasher, self._clock = store, hasher, clock

    def now(self) -> float:
        return self._clock()

    def _mint(self, name: str, tenant: str, scopes: tuple[str, ...], ttl: float | None) -> Issued:
        now = self._clock()
        for _ in range(5):  # a 12-character id colliding is ~never; retry anyway
            key = mint()
            if self.store.get(key.key_id) is None:
                break
        else:
            raise KeyStoreError("could not find an unused key id")
        record = KeyRecord(
            key_id=key.key_id,
            name=name,
            tenant=tenant,
            scopes=scopes,
            digest=self.hasher.digest(key.text),
            created_at=now,
            expires_at=None if ttl is None else now + ttl,
        )
        return Issued(key.text, record)

    def create(
        self, name: str, tenant: str, scopes: tuple[str, ...], ttl: float | None = None
    ) -> Issued:
        check_fields(name, tenant, scopes)
        issued = self._mint(name, tenant, scopes, ttl)
        self.store.add(issued.record)
        return issued

    def rotate(
        self, key_id: str, grace: float = DEFAULT_GRACE, ttl: float | None = None
    ) -> tuple[Issued, KeyRecord]:
        """A new key with the old one's name, tenant and scopes; the old one stays valid
        for ``grace`` seconds (0: ends now). Returns the new key and the old record."""
        old = self.store.get(key_id)
        if old is None:
            raise UnknownKey(key_id)
        now = self._clock()
        if not old.valid(now):
            raise KeyConflict(f"key {key_id} is {old.state(now)}; only an active key rotates")
        if ttl is None and old.expires_at is not None:
            ttl = max(old.expires_at - old.created_at, 0.0) or None
        issued = self._mint(old.name, old.tenant, old.scopes, ttl)
        old_after = self.store.rotated(key_id, issued.record, now + grace)
        return issued, old_after

    def revoke(self, key_id: str) -> KeyRecord:
        return self.store.revoke(key_id, self._clock())

    def list(self) -> list[KeyRecord]:
        return self.store.all()
