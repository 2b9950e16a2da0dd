"""The Redis key store against a real redis-server: the same lifecycle as the SQLite store,
atomic rotate and revoke, change notices (PUBLISH + counter) and errors that name the store
but never its password."""

from __future__ import annotations

import socket
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from ext_authz.keys.hashing import KeyHasher
from ext_authz.keys.lifecycle import KeyBook
from ext_authz.keys.record import KeyRecord
from ext_authz.stores.base import KeyStoreError
from ext_authz.stores.redis_store import RedisKeyStore, redact
from meshgate.proxy.envoy_process import free_port
from tests.ext_authz.keyring_support import Clock
from tests.support.redis_server import redis_server

pytestmark = [pytest.mark.integration]


@pytest.fixture
def prefix() -> str:
    return f"test:{uuid.uuid4().hex}:"


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(redis_url: str, prefix: str) -> Iterator[RedisKeyStore]:
    s = RedisKeyStore(redis_url, prefix=prefix)
    yield s
    s.close()


@pytest.fixture
def book(store: RedisKeyStore, clock: Clock) -> KeyBook:
    return KeyBook(store, KeyHasher(b"k" * 32), clock)


def _raw(redis_url: str) -> redis.Redis:
    return redis.Redis.from_url(redis_url, decode_responses=True)


def _record(key_id: str, created: float = 1_800_000_000.0) -> KeyRecord:
    return KeyRecord(key_id, "n", "t", ("a",), "d" * 64, created)


# The lifecycle itself runs over this store in tests/ext_authz/test_lifecycle.py; here what is
# Redis's own: the data layout, prefixes, change notices, atomicity and connection errors.


def test_the_layout_holds_only_the_keyed_hash_and_no_none_strings(
    book: KeyBook, redis_url: str, prefix: str, store: RedisKeyStore
) -> None:
    issued = book.create("ci", "acme", ("orders:read", "x"), ttl=90 * 86400)
    rec = store.get(issued.record.key_id)
    assert rec == issued.record
    r = _raw(redis_url)
    keys = set(r.scan_iter(f"{prefix}*"))
    assert keys == {f"{prefix}rec:{rec.key_id}", f"{prefix}ids", f"{prefix}change_count"}
    stored = r.hgetall(f"{prefix}rec:{rec.key_id}")
    assert issued.text not in "".join(stored.values())
    assert "revoked_at" not in stored  # None is an absent field, not a string "None"


def test_touch_of_an_unknown_id_creates_nothing(
    store: RedisKeyStore, redis_url: str, prefix: str
) -> None:
    store.touch({"ZZZZZZZZZZZZ": 9.0})
    assert not _raw(redis_url).exists(f"{prefix}rec:ZZZZZZZZZZZZ")


def test_prefixes_keep_stores_apart(redis_url: str, store: RedisKeyStore) -> None:
    store.add(_record("AAAAAAAAAAAA"))
    other = RedisKeyStore(redis_url, prefix="other:")
    try:
        assert other.all() == [] and other.get("AAAAAAAAAAAA") is None
        assert other.changes_channel == "other:changes"
    finally:
        other.close()


# --- change notices ---------------------------------------------------------------------------


def _messages(sub: redis.client.PubSub, n: int, wait: float = 5.0) -> list[str]:
    got: list[str] = []
    deadline = time.monotonic() + wait
    while len(got) < n and time.monotonic() < deadline:
        m = sub.get_message(ignore_subscribe_messages=True, timeout=0.1)
        if m is not None:
            got.append(m["data"])
    return got


def test_every_change_publishes_the_changed_key_id(
    book: KeyBook, store: RedisKeyStore, redis_url: str, prefix: str
) -> None:
    assert store.changes_channel == f"{prefix}changes"
    sub = _raw(redis_url).pubsub()
    sub.subscribe(store.changes_channel)
    assert sub.get_message(timeout=2)["type"] == "subscribe"  # type: ignore[index]
    k = book.create("ci", "acme", ())
    assert _messages(sub, 1) == [k.record.key_id]
    new, _ = book.rotate(k.record.key_id)
    assert sorted(_messages(sub, 2)) == sorted([k.record.key_id, new.record.key_id])
    book.revoke(new.record.key_id)
    assert _messages(sub, 1) == [new.record.key_id]
    book.revoke(new.record.key_id)  # no change: no notice
    store.touch({k.record.key_id: 1.0})  # last use is not a change a replica must see
    assert _messages(sub, 1, wait=0.5) == []
    sub.close()


def test_the_change_counter_counts_changed_records(book: KeyBook, store: RedisKeyStore) -> None:
    assert store.change_count() == 0
    k = book.create("ci", "acme", ())
    assert store.change_count() == 1
    new, _ = book.rotate(k.record.key_id)  # two records changed
    assert store.change_count() == 3
    book.revoke(new.record.key_id)
    assert store.change_count() == 4
    book.revoke(new.record.key_id)
    store.touch({k.record.key_id: 1.0})
    assert store.change_count() == 4


# --- atomicity ----------------------------------------------------------------------------------


def test_of_concurrent_rotations_of_one_key_exactly_one_wins(
    redis_url: str, prefix: str, store: RedisKeyStore
) -> None:
    store.add(_record("OLDOLDOLDOLD"))
    n = 8
    stores = [RedisKeyStore(redis_url, prefix=prefix) for _ in range(n)]
    barrier = threading.Barrier(n)
    won: list[str] = []
    lost: list[str] = []

    def rotate(i: int) -> None:
        new_id = f"NEW{i:09d}"
        barrier.wait()
        try:
            stores[i].rotated("OLDOLDOLDOLD", _record(new_id), 1_800_003_600.0)
            won.append(new_id)
        except KeyStoreError as exc:
            lost.append(str(exc))

    threads = [threading.Thread(target=rotate, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    for s in stores:
        s.close()
    assert len(won) == 1 and len(lost) == n - 1
    assert all(f"already rotated (replaced by {won[0]})" in m for m in lost)
    old = store.get("OLDOLDOLDOLD")
    assert old is not None and old.replaced_by == won[0]
    assert sorted(r.key_id for r in store.all()) == sorted(["OLDOLDOLDOLD", won[0]])


def test_a_rotation_onto_an_existing_id_changes_nothing(store: RedisKeyStore) -> None:
    store.add(_record("OLDOLDOLDOLD"))
    store.add(_record("TAKENTAKENTA"))
    count = store.change_count()
    with pytest.raises(KeyStoreError, match="key id TAKENTAKENTA exists"):
        store.rotated("OLDOLDOLDOLD", _record("TAKENTAKENTA", created=9.0), 5.0)
    assert store.get("OLDOLDOLDOLD") == _record("OLDOLDOLDOLD")
    assert store.get("TAKENTAKENTA") == _record("TAKENTAKENTA")
    assert store.change_count() == count


# --- errors ---------------------------------------------------------------------------------------


def test_an_unreachable_redis_is_named_with_the_reason() -> None:
    port = free_port()  # nothing listens there
    url = f"redis://127.0.0.1:{port}/3"
    with pytest.raises(KeyStoreError) as info:
        RedisKeyStore(url, timeout=2)
    msg = str(info.value)
    assert msg.startswith(f"key store redis://127.0.0.1:{port}/3: cannot reach it: "), msg
    assert "refused" in msg.lower()


def test_a_redis_that_never_answers_times_out_with_the_reason() -> None:
    with socket.socket() as silent:  # accepts connections (backlog) but never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        port = silent.getsockname()[1]
        t0 = time.monotonic()
        with pytest.raises(KeyStoreError) as info:
            RedisKeyStore(f"redis://127.0.0.1:{port}", timeout=0.3)
        assert time.monotonic() - t0 < 5
    msg = str(info.value)
    assert msg.startswith(f"key store redis://127.0.0.1:{port}/0: cannot reach it: "), msg
    assert "timeout" in msg.lower() or "timed out" in msg.lower()


def test_a_lost_connection_is_reported_on_the_next_operation(tmp_path: Path) -> None:
    with redis_server(tmp_path / "r") as url:
        s = RedisKeyStore(url, timeout=1)
    # the server has stopped
    with pytest.raises(KeyStoreError, match=r"^key store redis://127\.0\.0\.1:\d+/0: cannot reach"):
        s.all()
    s.close()


def test_redact() -> None:
    assert redact("redis://user:secret@host:6380/2") == "redis://user:***@host:6380/2"
    assert redact("redis://:secret@host") == "redis://:***@host"
    assert redact("redis://host:6379/0") == "redis://host:6379/0"


def test_a_password_is_never_shown(tmp_path: Path) -> None:
    secret = "s3cret-Pa55word"
    port = free_port()
    url = f"redis://app:{secret}@127.0.0.1:{port}/0"
    with pytest.raises(KeyStoreError) as info:  # unreachable
        RedisKeyStore(url, timeout=2)
    assert secret not in str(info.value)
    assert f"redis://app:***@127.0.0.1:{port}/0: cannot reach it" in str(info.value)
    with redis_server(tmp_path / "auth", "--requirepass", secret) as plain:
        good = plain.replace("redis://", f"redis://:{secret}@")
        s = RedisKeyStore(good)
        try:
            s.add(_record("AAAAAAAAAAAA"))
            assert s.get("AAAAAAAAAAAA") == _record("AAAAAAAAAAAA")
            assert secret not in repr(s) and ":***@" in repr(s)
            assert secret not in s.url
        finally:
            s.close()
        wrong = plain.replace("redis://", "redis://:wrong-guess-pw@")
        with pytest.raises(KeyStoreError) as info:
            RedisKeyStore(wrong)
        assert "wrong-guess-pw" not in str(info.value)
        assert str(info.value).startswith("key store redis://:***@127.0.0.1:")
        assert ": cannot log in: " in str(info.value)
        with pytest.raises(KeyStoreError, match=r"/0: cannot log in: Authentication required"):
            RedisKeyStore(plain)
