"""The JWKS manager with an in-memory fetcher and clock: what it emits, keeps and reports."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from tests.support.tokens import SigningKey, jwks_of
from xds_server.compiler.context import IssuerKeys
from xds_server.jwks.document import parse_jwks
from xds_server.jwks.fetch import FetchError
from xds_server.jwks.manager import JwksManager
from xds_server.jwks.source import JwksSource
from xds_server.jwks.store import KeyStore, StoredKeys
from xds_server.sources.base import KeysChanged, SourceEvent

K1, K2 = SigningKey.ec("k1"), SigningKey.ec("k2")
URL = "https://user:pw@idp.example/jwks?api_key=s3cret"
SRC = JwksSource("corp", f"url:{URL}", URL, None, 5, 300, 3600)


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


class Idp:
    """Answers fetches from memory: a document, or an error."""

    def __init__(self) -> None:
        self.answer: bytes | Exception = json.dumps(jwks_of(K1)).encode()
        self.fetches = 0

    async def __call__(self, source: JwksSource) -> bytes:
        self.fetches += 1
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer


def normal(*keys: SigningKey) -> str:
    return parse_jwks(json.dumps(jwks_of(*keys))).document


@pytest.fixture
def env(tmp_path: Path) -> tuple[JwksManager, list[SourceEvent], Idp, Clock, list[tuple[str, str]]]:
    events: list[SourceEvent] = []
    outcomes: list[tuple[str, str]] = []
    idp, clock = Idp(), Clock()
    manager = JwksManager(
        KeyStore(tmp_path / "jwks"),
        events.append,
        fetcher=idp,
        on_fetch=lambda i, o: outcomes.append((i, o)),
        clock=clock,
        chance=lambda: 0.0,
    )
    return manager, events, idp, clock, outcomes


Env = tuple[JwksManager, list[SourceEvent], Idp, Clock, list[tuple[str, str]]]


async def test_fetched_keys_are_emitted_and_an_unchanged_refresh_emits_nothing(env: Env) -> None:
    manager, events, idp, clock, outcomes = env
    manager.reconcile([SRC])
    assert events == [KeysChanged("jwks", {})]  # nothing fetched yet: no keys
    events.clear()
    await manager.fetch_once("corp")
    manager.publish()
    assert events == [KeysChanged("jwks", {"corp": IssuerKeys(SRC.fingerprint, normal(K1))})]
    clock.now += 300
    await manager.fetch_once("corp")
    manager.publish()
    assert len(events) == 1  # same keys: nothing new
    assert outcomes == [("corp", "updated"), ("corp", "unchanged")]
    # but the cache knows they were confirmed later (a restart counts max_stale from here)
    [entry] = manager.store.load()
    assert entry.fetched_at == clock.now


async def test_rotation_is_emitted(env: Env) -> None:
    manager, events, idp, clock, _ = env
    manager.reconcile([SRC])
    await manager.fetch_once("corp")
    idp.answer = json.dumps(jwks_of(K1, K2)).encode()
    await manager.fetch_once("corp")
    manager.publish()
    assert isinstance(events[-1], KeysChanged)
    assert events[-1].keys["corp"].document == normal(K1, K2)


async def test_outage_keeps_the_last_good_keys_until_max_stale_then_drops_them(
    env: Env, caplog: pytest.LogCaptureFixture
) -> None:
    manager, events, idp, clock, outcomes = env
    manager.reconcile([SRC])
    await manager.fetch_once("corp")
    manager.publish()
    idp.answer = FetchError("cannot connect: [Errno 111] Connection refused")
    clock.now += 300
    await manager.fetch_once("corp")
    manager.publish()
    assert list(events[-1].keys) == ["corp"]  # type: ignore[union-attr]
    [issuer] = manager.as_dict()["issuers"]
    assert issuer["state"] == "stale" and issuer["stale_since"] == clock.now
    assert issuer["last_error"] == "cannot connect: [Errno 111] Connection refused"
    assert issuer["keys"] == 1 and issuer["kids"] == ["k1"]
    clock.now += 3300  # 3600 s after the last good fetch
    manager.publish()
    assert events[-1] == KeysChanged("jwks", {})
    assert manager.as_dict()["issuers"][0]["state"] == "expired"
    assert outcomes[-1] == ("corp", "failed")
    assert any("signing keys expired" in r.getMessage() for r in caplog.records)


async def test_an_invalid_document_is_refused_and_the_last_good_stays(env: Env) -> None:
    manager, events, idp, clock, outcomes = env
    manager.reconcile([SRC])
    await manager.fetch_once("corp")
    idp.answer = b'{"keys": "nope"}'
    await manager.fetch_once("corp")
    manager.publish()
    assert events[-1].keys["corp"].document == normal(K1)  # type: ignore[union-attr]
    assert outcomes[-1] == ("corp", "invalid")
    assert manager.as_dict()["issuers"][0]["last_error"] == (
        "not a usable JWKS: not a JWKS: 'keys' must be a list of keys (a JSON string)"
    )


async def test_unreachable_with_nothing_on_disk_means_no_keys_and_a_reason(env: Env) -> None:
    manager, events, idp, clock, _ = env
    idp.answer = FetchError("cannot connect: [Errno 111] Connection refused")
    manager.reconcile([SRC])
    await manager.fetch_once("corp")
    manager.publish()
    assert not any(isinstance(e, KeysChanged) and e.keys for e in events)
    [issuer] = manager.as_dict()["issuers"]
    assert issuer["state"] == "never_fetched" and issuer["keys"] == 0
    assert issuer["last_error"].startswith("cannot connect")
    assert issuer["next_fetch"] == clock.now + 0.5  # retried soon (backoff from 1 s, jittered)


async def test_status_never_shows_url_credentials(env: Env) -> None:
    manager, *_ = env
    manager.reconcile([SRC])
    text = json.dumps(manager.as_dict())
    assert "pw" not in text and "s3cret" not in text and "user" not in text
    assert manager.as_dict()["issuers"][0]["source"] == "url https://idp.example/jwks?<redacted>"


async def test_keys_on_disk_are_the_view_before_the_config_is_known(
    env: Env, tmp_path: Path
) -> None:
    manager, events, idp, clock, _ = env
    keys = parse_jwks(json.dumps(jwks_of(K1)))
    fresh = StoredKeys("corp", SRC.fingerprint, keys, clock.now - 100, 3600)
    expired = StoredKeys("old", "url:https://old/jwks", keys, clock.now - 7200, 3600)
    manager.store.save(fresh)
    manager.store.save(expired)
    manager.load()
    manager.publish()
    assert events == [KeysChanged("jwks", {"corp": IssuerKeys(SRC.fingerprint, keys.document)})]
    # the config confirms the source: the keys stay, nothing new to say, a fetch is due now
    manager.reconcile([SRC])
    assert len(events) == 1
    assert manager.states["corp"].next_fetch == clock.now


async def test_a_new_source_for_an_issuer_does_not_reuse_the_old_keys(env: Env) -> None:
    manager, events, idp, clock, _ = env
    manager.reconcile([SRC])
    await manager.fetch_once("corp")
    manager.publish()
    moved = JwksSource("corp", "url:https://new/jwks", "https://new/jwks", None, 5, 300, 3600)
    manager.reconcile([moved])
    assert events[-1] == KeysChanged("jwks", {})
    manager.reconcile([])
    assert manager.states == {} and manager.as_dict()["issuers"] == []


async def test_the_refresh_loop_fetches_retries_and_expires_on_its_own(tmp_path: Path) -> None:
    """Real tasks and real (short) time; the fetcher is in memory."""
    events: list[SourceEvent] = []
    idp = Idp()
    manager = JwksManager(KeyStore(tmp_path / "jwks"), events.append, fetcher=idp)
    quick = JwksSource("corp", "file:/x", None, "/x", 1, 0.05, 0.4)
    manager.start()
    manager.reconcile([quick])
    try:
        await _until(lambda: any(isinstance(e, KeysChanged) and e.keys for e in events))
        before = idp.fetches
        await _until(lambda: idp.fetches >= before + 3)  # refreshes every 0.05 s
        idp.answer = FetchError("down")
        await _until(lambda: events[-1] == KeysChanged("jwks", {}), timeout=3)
        assert manager.as_dict()["issuers"][0]["state"] == "expired"
        idp.answer = json.dumps(jwks_of(K2)).encode()
        await _until(lambda: bool(events[-1].keys), timeout=3)  # type: ignore[union-attr]
        assert events[-1].keys["corp"].document == normal(K2)  # type: ignore[union-attr]
    finally:
        await manager.stop()


async def _until(predicate: object, timeout: float = 2.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():  # type: ignore[operator]
            await asyncio.sleep(0.01)
