"""When keys are fetched again and whether they may still serve: decisions with an injected
clock and chance, no sockets, no sleeps."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from tests.support.tokens import SigningKey, jwks_of
from xds_server.jwks import freshness as fr
from xds_server.jwks.document import parse_jwks
from xds_server.jwks.source import JwksSource
from xds_server.jwks.store import StoredKeys

SRC = JwksSource("corp", "url:https://idp/jwks", "https://idp/jwks", None, 5, 300, 3600)
K1 = SigningKey.ec("k1")
KEYS = parse_jwks(json.dumps(jwks_of(K1)))
OTHER = parse_jwks(json.dumps(jwks_of(SigningKey.ec("k2"))))
T0 = 1_000_000.0


def fetched(at: float = T0) -> fr.IssuerState:
    return fr.succeeded(fr.starting(SRC, None, at), KEYS, at)


def test_a_new_issuer_is_fetched_at_once_and_has_no_keys_until_then() -> None:
    state = fr.starting(SRC, None, T0)
    assert state.next_fetch == T0
    assert fr.freshness(state, T0) == "never_fetched" and fr.usable(state, T0) is None


def test_keys_from_disk_serve_at_once_but_only_for_the_same_source() -> None:
    cached = StoredKeys("corp", SRC.fingerprint, KEYS, T0 - 10, 3600)
    assert fr.usable(fr.starting(SRC, cached, T0), T0) == cached
    moved = StoredKeys("corp", "url:https://old-idp/jwks", KEYS, T0 - 10, 3600)
    assert fr.starting(SRC, moved, T0).good is None


def test_success_schedules_the_next_fetch_after_refresh() -> None:
    state = fetched()
    assert state.next_fetch == T0 + 300
    assert fr.freshness(state, T0 + 299) == "fresh"
    assert fr.wake_at(state, T0) == T0 + 300


@pytest.mark.parametrize(
    ("failures", "low", "high"),
    [(1, 0.5, 1.0), (2, 1.0, 2.0), (3, 2.0, 4.0), (8, 64.0, 128.0), (9, 128, 256), (10, 150, 300)],
)
def test_backoff_doubles_with_jitter_and_never_exceeds_refresh(
    failures: int, low: float, high: float
) -> None:
    assert fr.backoff(failures, 300, 0.0) == low
    assert fr.backoff(failures, 300, 0.999999) == pytest.approx(high, rel=1e-5)
    assert fr.backoff(10_000, 300, 0.5) <= 300  # no overflow, capped


def test_failures_keep_the_last_good_keys_and_say_since_when() -> None:
    state = fr.failed(fetched(), "cannot connect", T0 + 300, chance=0.0)
    state = fr.failed(state, "HTTP 503", T0 + 301, chance=0.0)
    assert state.failures == 2 and state.failing_since == T0 + 300
    assert state.next_fetch == T0 + 301 + 1.0
    assert state.last_error == "HTTP 503" and state.last_error_at == T0 + 301
    assert fr.freshness(state, T0 + 301) == "stale"
    assert fr.usable(state, T0 + 301) is not None
    recovered = fr.succeeded(state, KEYS, T0 + 302)
    assert recovered.failures == 0 and recovered.failing_since is None
    assert fr.freshness(recovered, T0 + 302) == "fresh"


def test_keys_expire_max_stale_after_the_last_good_fetch_fetch_or_no_fetch() -> None:
    state = fr.failed(fetched(), "down", T0 + 300, chance=0.0)
    state = replace(state, failures=20)  # retries are a refresh interval apart by now
    # the keys must be dropped at T0 + 3600 even if the next retry is later
    state = fr.failed(state, "down", T0 + 3500, chance=0.99)
    assert state.next_fetch > T0 + 3600
    assert fr.wake_at(state, T0 + 3500) == T0 + 3600
    assert fr.usable(state, T0 + 3599.9) is not None
    assert fr.usable(state, T0 + 3600) is None
    assert fr.freshness(state, T0 + 3600) == "expired"
    # once expired, only the fetch schedule wakes the issuer
    assert fr.wake_at(state, T0 + 3600) == state.next_fetch


def test_a_failure_with_nothing_fetched_yet_stays_never_fetched() -> None:
    state = fr.failed(fr.starting(SRC, None, T0), "cannot connect", T0, chance=0.0)
    assert fr.freshness(state, T0) == "never_fetched"
    assert state.next_fetch == T0 + 0.5


def test_new_timings_keep_keys_and_bring_the_next_fetch_forward() -> None:
    state = fetched()
    quicker = JwksSource(**{**SRC.__dict__, "refresh": 60.0, "max_stale": 120.0})
    moved = fr.retarget(state, quicker, T0 + 10)
    assert moved.good == state.good and moved.next_fetch == T0 + 60
    assert fr.usable(moved, T0 + 121) is None  # the new max_stale applies at once


def test_a_refresh_with_the_same_keys_is_no_change() -> None:
    state = fetched()
    same = {"keys": [dict(reversed(K1.public_jwk().items()))]}  # other order, same key
    assert not fr.changed_document(state, parse_jwks(json.dumps(same, indent=2)))
    assert not fr.changed_document(state, KEYS)
    assert fr.changed_document(state, OTHER)
