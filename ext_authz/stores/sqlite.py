"""The embedded key store: one SQLite database file.

Durability: WAL journal with ``synchronous=FULL``, so a write that returned survives a
SIGKILL or a power cut (SQLite fsyncs the WAL before the commit returns); an interrupted
write is rolled back as a whole on the next open. Several processes (the CLI, the admin API,
the service) may open the same file; SQLite's locking serialises writers and a busy timeout
rides out short waits.
"""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path

from ext_authz.keys.record import KeyRecord
from ext_authz.stores.base import KeyConflict, KeyStoreError, UnknownKey
from meshgate.files import os_problem

SCHEMA = """
CREATE TABLE IF NOT EXISTS api_keys (
    key_id       TEXT PRIMARY KEY,
    name         TEXT NOT NULL,
    tenant       TEXT NOT NULL,
    scopes       TEXT NOT NULL,
    digest       TEXT NOT NULL,
    created_at   REAL NOT NULL,
    expires_at   REAL,
    revoked_at   REAL,
    replaced_by  TEXT,
    last_used_at REAL
)
"""
_COLUMNS = (
    "key_id, name, tenant, scopes, digest, created_at, expires_at, revoked_at, replaced_by, "
    "last_used_at"
)


def _record(row: tuple[object, ...]) -> KeyRecord:
    kid, name, tenant, scopes, digest, created, expires, revoked, replaced, used = row
    return KeyRecord(
        key_id=str(kid),
        name=str(name),
        tenant=str(tenant),
        scopes=tuple(json.loads(str(scopes))),
        digest=str(digest),
        created_at=float(created),  # type: ignore[arg-type]
        expires_at=None if expires is None else float(expires),  # type: ignore[arg-type]
        revoked_at=None if revoked is None else float(revoked),  # type: ignore[arg-type]
        replaced_by=None if replaced is None else str(replaced),
        last_used_at=None if used is None else float(used),  # type: ignore[arg-type]
    )


def _row(r: KeyRecord) -> tuple[object, ...]:
    return (
        r.key_id,
        r.name,
        r.tenant,
        json.dumps(list(r.scopes)),
        r.digest,
        r.created_at,
        r.expires_at,
        r.revoked_at,
        r.replaced_by,
        r.last_used_at,
    )


class SqliteKeyStore:
    def __init__(self, path: Path, busy_timeout: float = 5.0) -> None:
        self.path = path
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            # key hashes are not keys, but nobody else needs to read them; SQLite gives the
            # -wal and -shm files the database file's mode
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
            self._db = sqlite3.connect(
                str(path), timeout=busy_timeout, isolation_level=None, check_same_thread=False
            )
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute(SCHEMA)
        except OSError as exc:
            why = "it is a directory" if path.is_dir() else os_problem(exc, "create")
            raise KeyStoreError(f"key store {path}: cannot open it: {why}") from None
        except sqlite3.Error as exc:
            raise KeyStoreError(f"key store {path}: cannot open it: {exc}") from None

    def __repr__(self) -> str:
        return f"SqliteKeyStore({str(self.path)!r})"

    def _fail(self, doing: str, exc: sqlite3.Error) -> KeyStoreError:
        return KeyStoreError(f"key store {self.path}: cannot {doing}: {exc}")

    def add(self, record: KeyRecord) -> None:
        try:
            self._db.execute(
                f"INSERT INTO api_keys ({_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?)", _row(record)
            )
        except sqlite3.IntegrityError:
            raise KeyConflict(f"key store {self.path}: key id {record.key_id} exists") from None
        except sqlite3.Error as exc:
            raise self._fail("add a key", exc) from None

    def get(self, key_id: str) -> KeyRecord | None:
        try:
            row = self._db.execute(
                f"SELECT {_COLUMNS} FROM api_keys WHERE key_id = ?", (key_id,)
            ).fetchone()
        except sqlite3.Error as exc:
            raise self._fail("read a key", exc) from None
        return None if row is None else _record(row)

    def all(self) -> list[KeyRecord]:
        try:
            rows = self._db.execute(
                f"SELECT {_COLUMNS} FROM api_keys ORDER BY created_at DESC, key_id"
            ).fetchall()
        except sqlite3.Error as exc:
            raise self._fail("read the keys", exc) from None
        return [_record(r) for r in rows]

    def revoke(self, key_id: str, at: float) -> KeyRecord:
        try:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                cur = self._db.execute(
                    "UPDATE api_keys SET revoked_at = ? WHERE key_id = ? AND revoked_at IS NULL",
                    (at, key_id),
                )
                if cur.rowcount == 0 and self.get(key_id) is None:
                    raise UnknownKey(key_id)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            raise self._fail("revoke a key", exc) from None
        record = self.get(key_id)
        assert record is not None
        return record

    def rotated(self, old_id: str, new: KeyRecord, old_expires_at: float) -> KeyRecord:
        try:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                old = self.get(old_id)
                if old is None:
                    raise UnknownKey(old_id)
                if old.replaced_by is not None:  # of two concurrent rotations, one wins
                    by = old.replaced_by
                    raise KeyConflict(
                        f"key {old_id} was already rotated (replaced by {by}); rotate {by} instead"
                    )
                expires = (
                    old_expires_at
                    if old.expires_at is None
                    else min(old.expires_at, old_expires_at)
                )
                self._db.execute(
                    f"INSERT INTO api_keys ({_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?)", _row(new)
                )
                self._db.execute(
                    "UPDATE api_keys SET expires_at = ?, replaced_by = ? WHERE key_id = ?",
                    (expires, new.key_id, old_id),
                )
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            raise self._fail("rotate a key", exc) from None
        record = self.get(old_id)
        assert record is not None
        return record

    def touch(self, last_used: dict[str, float]) -> None:
        if not last_used:
            return
        try:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.executemany(
                    "UPDATE api_keys SET last_used_at = max(coalesce(last_used_at, 0), ?) "
                    "WHERE key_id = ?",
                    [(t, k) for k, t in last_used.items()],
                )
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            raise self._fail("record last use", exc) from None

    def data_version(self) -> int:
        """SQLite's ``PRAGMA data_version`` on this connection: it changes whenever another
        connection (another process) commits to the file, so a poller sees a change made
        anywhere with one cheap statement and reloads only then."""
        try:
            row = self._db.execute("PRAGMA data_version").fetchone()
        except sqlite3.Error as exc:
            raise self._fail("read the data version", exc) from None
        return int(row[0])

    def close(self) -> None:
        self._db.close()
