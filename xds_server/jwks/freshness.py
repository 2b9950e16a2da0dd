"""When to fetch an issuer's keys again, and whether the keys it has may still be used: pure.

Every function here takes the time (``now``, Unix seconds) and, where it needs chance, a
number in [0, 1), so the decisions are tested without sockets, sleeps or clocks. The manager
(:mod:`xds_server.jwks.manager`) does the I/O and calls these.

- A successful fetch: the next one after ``refresh``.
- A failed fetch: retried with exponential backoff (1 s, 2 s, 4 s ... never longer than
  ``refresh``), each delay jittered to 50-100 % so that replicas (and issuers) that failed
  together do not retry together.
- The last good set serves until it is ``max_stale`` old (counted from the last fetch that
  returned it); then it is dropped and the issuer's tokens get 401. Never longer: keys an
  identity provider has withdrawn must stop working even if it never answers again.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

from xds_server.jwks.document import KeySet
from xds_server.jwks.source import JwksSource
from xds_server.jwks.store import StoredKeys

#: First retry delay after a failure (doubling from there, capped at ``refresh``).
INITIAL_BACKOFF = 1.0

Freshness = Literal["fresh", "stale", "expired", "never_fetched"]


@dataclass(frozen=True)
class IssuerState:
    """What the manager knows about one issuer's keys."""

    source: JwksSource
    #: The last good set (fetched now, or read back from disk), whatever its age.
    good: StoredKeys | None = None
    #: Failed fetches in a row.
    failures: int = 0
    #: When fetches started failing (None while the last one succeeded).
    failing_since: float | None = None
    last_error: str | None = None
    last_error_at: float | None = None
    last_attempt: float | None = None
    next_fetch: float = 0.0


def starting(source: JwksSource, cached: StoredKeys | None, now: float) -> IssuerState:
    """A newly configured issuer: fetched at once; a set from disk serves meanwhile.

    A cached set is only taken for the same source (fingerprint), so keys fetched for an old
    URL never serve a new one."""
    good = cached if cached is not None and cached.fingerprint == source.fingerprint else None
    return IssuerState(source, good, next_fetch=now)


def retarget(state: IssuerState, source: JwksSource, now: float) -> IssuerState:
    """The same source with other timings (refresh, timeout, max_stale): keys and failures
    stay, the next fetch is due no later than the new refresh interval allows."""
    last = state.last_attempt if state.last_attempt is not None else now
    due = state.next_fetch if state.failures else last + source.refresh
    return replace(state, source=source, next_fetch=min(state.next_fetch, due))


def usable(state: IssuerState, now: float) -> StoredKeys | None:
    """The set to give Envoy, or None: there is none, or it is older than ``max_stale``."""
    good = state.good
    if good is None or now >= good.fetched_at + state.source.max_stale:
        return None
    return good


def freshness(state: IssuerState, now: float) -> Freshness:
    if state.good is None:
        return "never_fetched"
    if usable(state, now) is None:
        return "expired"
    return "stale" if state.failing_since is not None else "fresh"


def expires_at(state: IssuerState) -> float | None:
    return None if state.good is None else state.good.fetched_at + state.source.max_stale


def backoff(failures: int, refresh: float, chance: float) -> float:
    """Delay before retry number ``failures`` (1 = the first retry); ``chance`` in [0, 1)."""
    delay = min(refresh, INITIAL_BACKOFF * 2.0 ** min(failures - 1, 32))
    return delay * (0.5 + chance / 2)


def succeeded(state: IssuerState, keys: KeySet, now: float) -> IssuerState:
    src = state.source
    good = StoredKeys(src.issuer, src.fingerprint, keys, now, src.max_stale)
    return replace(
        state,
        good=good,
        failures=0,
        failing_since=None,
        last_attempt=now,
        next_fetch=now + src.refresh,
    )


def failed(state: IssuerState, error: str, now: float, chance: float) -> IssuerState:
    failures = state.failures + 1
    return replace(
        state,
        failures=failures,
        failing_since=state.failing_since if state.failing_since is not None else now,
        last_error=error,
        last_error_at=now,
        last_attempt=now,
        next_fetch=now + backoff(failures, state.source.refresh, chance),
    )


def wake_at(state: IssuerState, now: float) -> float:
    """When the manager must look at this issuer again: its next fetch, or the moment its
    keys expire if that comes first (they must be dropped then, fetch or no fetch)."""
    wake = state.next_fetch
    expiry = expires_at(state)
    if expiry is not None and expiry > now:
        wake = min(wake, expiry)
    return wake


def changed_document(state: IssuerState, keys: KeySet) -> bool:
    """Whether ``keys`` differ from the set in hand (an unchanged refresh emits nothing)."""
    return state.good is None or state.good.keys.document != keys.document
