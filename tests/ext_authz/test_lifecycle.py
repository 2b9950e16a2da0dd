"""Create, rotate (with grace), revoke and list over the SQLite store, on a fake clock."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from ext_authz.keys.format import parse
from ext_authz.keys.hashing import KeyHasher
from ext_authz.keys.lifecycle import KeyBook
from ext_authz.keys.record import KeyInputError, KeyRecord, parse_duration
from ext_authz.stores.base import KeyStore, KeyStoreError, UnknownKey
from ext_authz.stores.redis_store import RedisKeyStore
from ext_authz.stores.sqlite import SqliteKeyStore
from tests.ext_authz.keyring_support import Clock


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture(params=["sqlite", pytest.param("redis", marks=pytest.mark.integration)])
def book(request: pytest.FixtureRequest, tmp_path: Path, clock: Clock) -> Iterator[KeyBook]:
    """The same lifecycle over every store: SQLite, and Redis (a real redis-server)."""
    store: KeyStore
    if request.param == "sqlite":
        store = SqliteKeyStore(tmp_path / "keys.db")
    else:
        url = request.getfixturevalue("redis_url")
        store = RedisKeyStore(url, prefix=f"test:{uuid.uuid4().hex}:")
    yield KeyBook(store, KeyHasher(b"k" * 32), clock)
    store.close()


def test_create_stores_only_the_keyed_hash(book: KeyBook, tmp_path: Path) -> None:
    """(The Redis layout is checked in test_redis_store.py.)"""
    issued = book.create("ci", "acme", ("orders:read",), ttl=90 * 86400)
    rec = book.store.get(issued.record.key_id)
    assert rec == issued.record
    assert rec.expires_at == rec.created_at + 90 * 86400
    assert book.hasher.matches(issued.text, rec.digest)
    assert parse(issued.text).key_id == rec.key_id
    raw = b"".join(p.read_bytes() for p in tmp_path.glob("keys.db*"))
    assert issued.text.encode() not in raw  # (empty for Redis: its layout test checks it)
    assert issued.text not in repr(issued)


def test_rotate_keeps_the_old_key_for_the_grace_period(book: KeyBook, clock: Clock) -> None:
    old = book.create("ci", "acme", ("a", "b"), ttl=30 * 86400)
    clock.t += 100.125
    new, old_after = book.rotate(old.record.key_id, grace=3600)
    assert book.store.get(new.record.key_id) == new.record
    assert new.record.scopes == ("a", "b") and new.record.tenant == "acme"
    assert new.record.expires_at == clock.t + 30 * 86400  # same lifetime as the old one
    assert old_after.replaced_by == new.record.key_id
    assert old_after.expires_at == clock.t + 3600
    assert old_after.valid(clock.t + 3599) and not old_after.valid(clock.t + 3600)
    assert old_after.state(clock.t + 3600) == "expired"
    assert book.store.get(old.record.key_id) == old_after  # exact floats round-trip


def test_a_grace_never_extends_a_key_past_its_own_expiry(book: KeyBook, clock: Clock) -> None:
    old = book.create("ci", "acme", (), ttl=60)
    _, old_after = book.rotate(old.record.key_id, grace=86400)
    assert old_after.expires_at == old.record.expires_at


def test_only_an_active_key_rotates(book: KeyBook, clock: Clock) -> None:
    k = book.create("ci", "acme", ())
    book.revoke(k.record.key_id)
    with pytest.raises(KeyStoreError, match="is revoked; only an active key rotates"):
        book.rotate(k.record.key_id)


def test_revoke_is_immediate_and_keeps_the_first_time(book: KeyBook, clock: Clock) -> None:
    k = book.create("ci", "acme", ())
    first = book.revoke(k.record.key_id)
    assert first.revoked_at == clock.t and first.state(clock.t) == "revoked"
    clock.t += 50
    assert book.revoke(k.record.key_id).revoked_at == first.revoked_at


def _record(key_id: str, created: float = 1_800_000_000.0) -> KeyRecord:
    return KeyRecord(key_id, "n", "t", ("a",), "d" * 64, created)


def test_unknown_keys(book: KeyBook) -> None:
    with pytest.raises(UnknownKey):
        book.revoke("AAAAAAAAAAAA")
    with pytest.raises(UnknownKey):
        book.rotate("AAAAAAAAAAAA")
    with pytest.raises(UnknownKey):
        book.store.rotated("AAAAAAAAAAAA", _record("BBBBBBBBBBBB"), 1.0)
    assert book.store.get("BBBBBBBBBBBB") is None  # nothing half-done
    assert book.store.all() == []


def test_an_id_is_added_once(book: KeyBook) -> None:
    book.store.add(_record("AAAAAAAAAAAA"))
    with pytest.raises(KeyStoreError, match="key id AAAAAAAAAAAA exists"):
        book.store.add(_record("AAAAAAAAAAAA", created=5.0))
    assert book.store.get("AAAAAAAAAAAA") == _record("AAAAAAAAAAAA")


def test_list_is_newest_first_and_last_use_is_batched(book: KeyBook, clock: Clock) -> None:
    a = book.create("a", "t", ())
    clock.t += 1
    b = book.create("b", "t", ())
    assert [r.key_id for r in book.list()] == [b.record.key_id, a.record.key_id]
    book.store.touch({a.record.key_id: 5.0, b.record.key_id: 7.0})
    book.store.touch({a.record.key_id: 3.0})  # an older report never moves it back
    book.store.touch({"ZZZZZZZZZZZZ": 9.0})  # an unknown id is skipped, not created
    used = {r.key_id: r.last_used_at for r in book.list()}
    assert used == {a.record.key_id: 5.0, b.record.key_id: 7.0}
    assert all("digest" not in r.public() for r in book.list())


@pytest.mark.parametrize(
    ("name", "tenant", "scopes", "why"),
    [
        ("", "t", (), "name ''"),
        ("x\nforged log line", "t", (), "name"),
        ("ok", "a b", (), "tenant 'a b'"),
        ("ok", "t", ("has space",), "scope 'has space'"),
        ("ok", "t", ("x" * 129,), "scope"),
    ],
)
def test_bad_fields_are_refused(
    book: KeyBook, name: str, tenant: str, scopes: tuple[str, ...], why: str
) -> None:
    with pytest.raises(KeyInputError, match=why):
        book.create(name, tenant, scopes)
    assert book.list() == []


@pytest.mark.parametrize(
    ("text", "seconds"), [("90d", 90 * 86400.0), ("12h", 43200.0), ("2w", 1209600.0), ("5s", 5)]
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "0d", "-1d", "1y", "1.5d", "d", "90 days"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(KeyInputError, match="a positive whole number and a unit"):
        parse_duration(text, "--expires")


def test_a_key_rotates_once_then_its_successor_does(book: KeyBook) -> None:
    old = book.create("ci", "acme", ())
    new, _ = book.rotate(old.record.key_id)
    with pytest.raises(KeyStoreError, match=f"rotate {new.record.key_id} instead"):
        book.rotate(old.record.key_id)
    assert book.store.get(old.record.key_id).replaced_by == new.record.key_id  # type: ignore[union-attr]
    third, _ = book.rotate(new.record.key_id)
    assert len(book.list()) == 3 and third.record.key_id not in (old.record.key_id,)
