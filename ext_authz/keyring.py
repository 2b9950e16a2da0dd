"""The service's in-memory copy of the key records: what the request path reads.

A store is never on the request path (see :mod:`ext_authz.stores.base`): a refresher loads
every record with :meth:`Keyring.replace_all` and feeds single changes to
:meth:`Keyring.apply`, and :meth:`Keyring.verify` answers from the dict alone. Last use is
noted in memory and handed out in one batch by :meth:`Keyring.take_last_use`, so a flusher
can write it with ``KeyStore.touch`` without a write per request.

Nothing here keeps, logs or repeats a presented key: a :class:`KeyCheck` holds the public
key id and the record (whose repr hides the digest), never the text.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from ext_authz.keys.format import KeyFormatError, parse
from ext_authz.keys.hashing import KeyHasher
from ext_authz.keys.record import KeyRecord

#: Why a presented key was not accepted; a fixed set, so that logs, metrics labels and
#: response bodies can carry it without echoing anything the client sent.
KeyProblem = Literal["malformed_key", "unknown_key", "wrong_secret", "expired_key", "revoked_key"]
KEY_PROBLEMS: tuple[KeyProblem, ...] = (
    "malformed_key",
    "unknown_key",
    "wrong_secret",
    "expired_key",
    "revoked_key",
)


@dataclass(frozen=True)
class KeyCheck:
    """The verdict on one presented key: ``record`` when accepted, ``problem`` when not.

    ``key_id`` is the public id whenever the key was well-formed (for the audit trail),
    None for malformed input.
    """

    problem: KeyProblem | None
    key_id: str | None = None
    record: KeyRecord | None = None

    @property
    def ok(self) -> bool:
        return self.problem is None


class Keyring:
    def __init__(self, hasher: KeyHasher, records: Iterable[KeyRecord] = ()) -> None:
        self._hasher = hasher
        self._records: dict[str, KeyRecord] = {r.key_id: r for r in records}
        self._last_use: dict[str, float] = {}

    def __len__(self) -> int:
        return len(self._records)

    def __repr__(self) -> str:
        return f"Keyring({len(self._records)} keys)"

    def get(self, key_id: str) -> KeyRecord | None:
        return self._records.get(key_id)

    def replace_all(self, records: Iterable[KeyRecord]) -> None:
        """A full resync: the records become exactly ``records`` (keys gone from the store
        are gone here). Built aside and swapped in, so a reader never sees half of it."""
        self._records = {r.key_id: r for r in records}

    def apply(self, record: KeyRecord) -> None:
        """One change from the store (created, rotated, revoked): the record replaces any
        record with its key id."""
        self._records[record.key_id] = record

    def verify(self, presented: str, now: float) -> KeyCheck:
        """Is ``presented`` a key that is valid at ``now``?

        The format check comes first, so garbage costs no lookup and never reaches the dict;
        the secret is checked (in constant time) before the key's state, so whoever knows
        only a public key id learns nothing about whether that key is expired or revoked.
        """
        try:
            key = parse(presented)
        except KeyFormatError:
            return KeyCheck("malformed_key")
        record = self._records.get(key.key_id)
        if record is None:
            return KeyCheck("unknown_key", key.key_id)
        if not self._hasher.matches(key.text, record.digest):
            return KeyCheck("wrong_secret", key.key_id)
        state = record.state(now)
        if state == "revoked":
            return KeyCheck("revoked_key", key.key_id)
        if state == "expired":
            return KeyCheck("expired_key", key.key_id)
        self._last_use[key.key_id] = now
        return KeyCheck(None, key.key_id, record)

    def take_last_use(self) -> dict[str, float]:
        """Last use of every key accepted since the previous call (key id -> time), for one
        batched ``KeyStore.touch``; the pending set starts empty again."""
        taken, self._last_use = self._last_use, {}
        return taken
