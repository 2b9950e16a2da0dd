"""``python -m ext_authz`` replicas sharing one real redis-server: a revoke through any store
client reaches every replica within a second, a change no notice announced is caught at the
next resync, and a Redis outage costs freshness only."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from ext_authz.keys.hashing import load_or_create_hash_key
from ext_authz.keys.lifecycle import Issued, KeyBook
from ext_authz.stores.open import open_store
from ext_authz.stores.redis_store import DEFAULT_PREFIX, RedisKeyStore
from ext_authz.stores.sqlite import SqliteKeyStore
from tests.ext_authz.service_process import AuthzProcess
from tests.support.control_plane import wait_until
from tests.support.redis_server import redis_server

pytestmark = pytest.mark.integration

_db = iter(range(1, 16))


@pytest.fixture
def url(redis_url: str) -> str:
    """A database of the session's redis-server of its own (the service has no prefix flag)."""
    return redis_url.rsplit("/", 1)[0] + f"/{next(_db)}"


@pytest.fixture
def hash_key(tmp_path: Path) -> Path:
    path = tmp_path / "key-hash.key"
    load_or_create_hash_key(path)
    return path


@pytest.fixture
def book(url: str, hash_key: Path) -> Iterator[KeyBook]:
    store = RedisKeyStore(url)
    yield KeyBook(store, load_or_create_hash_key(hash_key))
    store.close()


def _replica(tmp: Path, name: str, url: str, hash_key: Path, *extra: str) -> AuthzProcess:
    p = AuthzProcess(tmp / name, url, hash_key, *extra)
    p.wait_ready()
    return p


def test_open_store_picks_the_store_by_its_spec(tmp_path: Path, url: str) -> None:
    sqlite = open_store(tmp_path / "k.db")
    assert isinstance(sqlite, SqliteKeyStore)
    sqlite.close()
    store = open_store(url)
    assert isinstance(store, RedisKeyStore)
    store.close()


def test_a_revoke_through_one_client_reaches_both_replicas_within_a_second(
    tmp_path: Path, url: str, hash_key: Path, book: KeyBook
) -> None:
    replicas = [_replica(tmp_path, n, url, hash_key) for n in ("a", "b")]
    try:
        issued = book.create("ci", "acme", ())  # after start: arrives by notice, not by load
        for r in replicas:
            r.wait_for(issued.text, (200, "ok"), timeout=2.0)
        book.revoke(issued.record.key_id)
        done = time.monotonic()
        for r in replicas:
            r.wait_for(issued.text, (401, "revoked_key"), timeout=5.0)
            latency = time.monotonic() - done
            print(f"revoke -> refused by replica: {latency * 1000:.0f} ms")
            assert latency < 1.0
        for r in replicas:
            assert r.terminate() == 0
            assert issued.text not in r.output()
    finally:
        for r in replicas:
            r.kill()


def _revoke_without_notice(url: str, issued: Issued) -> None:
    """What a broken subscription looks like: the record changes, no notice is published."""
    client = redis.Redis.from_url(url)
    try:
        key = f"{DEFAULT_PREFIX}rec:{issued.record.key_id}"
        client.hset(key, "revoked_at", repr(time.time()))
        client.incr(f"{DEFAULT_PREFIX}change_count")
    finally:
        client.close()


def test_a_change_without_a_notice_is_caught_at_the_next_resync(
    tmp_path: Path, url: str, hash_key: Path, book: KeyBook
) -> None:
    issued = book.create("ci", "acme", ())
    r = _replica(tmp_path, "a", url, hash_key, "--resync-interval", "2")
    try:
        r.wait_for(issued.text, (200, "ok"), timeout=2.0)
        _revoke_without_notice(url, issued)
        written = time.monotonic()
        r.wait_for(issued.text, (401, "revoked_key"), timeout=5.0)
        assert time.monotonic() - written < 2 + 1  # by the next resync
        assert r.terminate() == 0
        assert "without a notice" in r.output()
    finally:
        r.kill()


def test_a_redis_outage_keeps_the_keys_in_memory_answering(tmp_path: Path, hash_key: Path) -> None:
    with redis_server(tmp_path / "redis") as own_url:
        store = RedisKeyStore(own_url)
        issued = KeyBook(store, load_or_create_hash_key(hash_key)).create("ci", "acme", ())
        store.close()
        r = _replica(tmp_path, "a", own_url, hash_key, "--last-use-flush", "0.2")
    try:
        # redis-server is gone now
        def unreachable() -> bool:
            status, body = r.readyz()
            return status == 200 and "key store unreachable" in body["reason"]

        wait_until(unreachable, 10.0, "/readyz to report the outage")
        assert r.check(issued.text) == (200, "ok")
        time.sleep(1.0)
        assert r.check(issued.text) == (200, "ok")
        metrics = r.metrics()
        errors = next(
            line
            for line in metrics.splitlines()
            if line.startswith("meshgate_ext_authz_store_errors_total ")
        )
        assert float(errors.split()[1]) >= 2
        assert r.terminate() == 0
        output = r.output()
        assert output.count("key store unreachable") == 1  # once per outage
        assert issued.text not in output
    finally:
        r.kill()
