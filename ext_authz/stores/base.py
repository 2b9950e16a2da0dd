"""The store contract: what the CLI, the admin API and the service need from a key store.

A store holds :class:`~ext_authz.keys.record.KeyRecord` values (keyed hashes, never keys).
Writes are durable when they return ("acknowledged"); the service answers from its own
in-memory copy, which it refreshes from :meth:`KeyStore.changed_since` and a periodic full
:meth:`KeyStore.all`, so a store is never on the request path.
"""

from __future__ import annotations

from typing import Protocol

from ext_authz.keys.record import KeyRecord


class KeyStoreError(RuntimeError):
    """The store cannot be read or written; the message says which store and why."""


class KeyConflict(KeyStoreError):
    """The store answered, but the change conflicts with the key's state: an id already
    present, a key already rotated or no longer active. Retrying will not help."""


class UnknownKey(LookupError):
    """No key with that id."""


class KeyStore(Protocol):
    def add(self, record: KeyRecord) -> None:
        """Store a new record; durable on return. Refuses an id already present."""

    def get(self, key_id: str) -> KeyRecord | None: ...

    def all(self) -> list[KeyRecord]:
        """Every record, newest first."""

    def revoke(self, key_id: str, at: float) -> KeyRecord:
        """Mark revoked at ``at`` (a second revoke keeps the first time); UnknownKey."""

    def rotated(self, old_id: str, new: KeyRecord, old_expires_at: float) -> KeyRecord:
        """Add ``new`` and cut the old key's life to ``old_expires_at`` (the grace period)
        in one transaction; returns the updated old record. UnknownKey; KeyStoreError for a
        key already rotated, so that of two concurrent rotations exactly one succeeds."""

    def touch(self, last_used: dict[str, float]) -> None:
        """Record last use of many keys at once (batched off the request path)."""

    def close(self) -> None: ...
