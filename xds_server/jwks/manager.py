"""Keeps every configured issuer's signing keys current, and says when the usable set changes.

One task per issuer with a URL or file source: fetch, validate, keep (memory and disk), sleep
until the next refresh, the next retry or the moment the keys expire, whichever comes first.
The manager learns which issuers exist from the compiled config (``reconcile``, fed by the
compile job's ``jwks_sources``) and reports its complete view of usable keys as a
:class:`~xds_server.sources.base.KeysChanged` event, like any source; the control plane
recompiles with it. A refresh that returns the same keys emits nothing.

At start, the keys on disk are the view (each bounded by the ``max_stale`` it was fetched
under) before any config is compiled, so a control plane restarted while the identity
provider is down publishes them with its first snapshot.

The decisions (when, whether stale) are :mod:`xds_server.jwks.freshness`'s; this module does
the waiting, the I/O and the telling (logs, metrics, status).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import httpx

from xds_server.compiler.context import IssuerKeys
from xds_server.jwks import freshness as fr
from xds_server.jwks.document import JwksError, parse_jwks
from xds_server.jwks.fetch import FetchError, fetch, new_client
from xds_server.jwks.source import JwksSource
from xds_server.jwks.store import KeyStore, StoredKeys, StoreError
from xds_server.sources.base import Emit, KeysChanged

log = logging.getLogger("meshgate.jwks")

SOURCE_NAME = "jwks"
#: How many key ids status lists per issuer.
_MAX_KIDS_SHOWN = 20

Fetcher = Callable[[JwksSource], Awaitable[bytes]]
#: (issuer, outcome): updated, unchanged, failed or invalid.
OnFetch = Callable[[str, str], None]


class JwksManager:
    def __init__(
        self,
        store: KeyStore,
        emit: Emit,
        *,
        fetcher: Fetcher | None = None,
        on_fetch: OnFetch | None = None,
        clock: Callable[[], float] = time.time,
        chance: Callable[[], float] = random.random,
    ) -> None:
        self.store = store
        self._emit = emit
        self._fetcher = fetcher
        self._client: httpx.AsyncClient | None = None  # made on the first URL fetch
        self._on_fetch = on_fetch or (lambda issuer, outcome: None)
        self.clock = clock
        self._chance = chance
        #: Good sets known by (issuer, fingerprint): read from disk, then kept as fetched.
        self._cached: dict[tuple[str, str], StoredKeys] = {}
        self.states: dict[str, fr.IssuerState] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        #: Refresh tasks run only once started (a control plane compiling for a tool or a
        #: test without being started fetches nothing).
        self.running = False
        #: Before the first reconcile the config is unknown: the view is what disk holds.
        self.configured = False
        self._view: dict[str, IssuerKeys] | None = None

    # -- start: what disk holds ------------------------------------------------------------
    def load(self) -> None:
        """Read the cache; then :meth:`publish` gives its usable keys (call before the first
        compile so that they are in the first snapshot)."""
        for entry in self.store.load():
            self._cached[(entry.issuer, entry.fingerprint)] = entry
        if self._cached:
            log.info(
                "JWKS cache loaded",
                extra={"fields": {"entries": len(self._cached), "issuers": self._issuers()}},
            )

    def _issuers(self) -> list[str]:
        return sorted({issuer for issuer, _ in self._cached})

    # -- what is usable now ----------------------------------------------------------------
    def view(self) -> dict[str, IssuerKeys]:
        """Issuer -> keys in force now. Before the config is known: the newest set on disk
        of each issuer that is younger than the ``max_stale`` it was fetched under."""
        now = self.clock()
        out: dict[str, IssuerKeys] = {}
        if not self.configured:
            for entry in sorted(self._cached.values(), key=lambda e: e.fetched_at):
                if now < entry.expires_at:
                    out[entry.issuer] = IssuerKeys(entry.fingerprint, entry.keys.document)
        else:
            for issuer, state in self.states.items():
                good = fr.usable(state, now)
                if good is not None:
                    out[issuer] = IssuerKeys(good.fingerprint, good.keys.document)
        return {issuer: out[issuer] for issuer in sorted(out)}

    def publish(self) -> None:
        """Emit the view if it changed since last told."""
        view = self.view()
        if view == self._view:
            return
        before = self._view or {}
        self._view = view
        if self.configured:
            now = self.clock()
            for issuer in sorted(set(before) - set(view)):
                state = self.states.get(issuer)
                if state is not None and fr.freshness(state, now) == "expired":
                    self._log_dropped(state)
        self._emit(KeysChanged(SOURCE_NAME, view))

    def _log_dropped(self, state: fr.IssuerState) -> None:
        log.error(
            "signing keys expired: the issuer's tokens are refused (401) until its JWKS can "
            "be fetched",
            extra={
                "fields": {
                    "issuer": state.source.issuer,
                    "source": state.source.shown,
                    "max_stale": state.source.max_stale,
                    "last_error": state.last_error,
                }
            },
        )

    # -- which issuers -------------------------------------------------------------------
    def reconcile(self, sources: Iterable[JwksSource]) -> None:
        """Follow the published config: start, retime or stop each issuer's task."""
        wanted = {s.issuer: s for s in sources}
        now = self.clock()
        self.configured = True
        for issuer in list(self.states):
            if issuer not in wanted:
                self._stop_task(issuer)
                del self.states[issuer]
        for issuer, source in wanted.items():
            state = self.states.get(issuer)
            if state is not None and state.source == source:
                continue
            self._stop_task(issuer)
            if state is not None and state.source.fingerprint == source.fingerprint:
                self.states[issuer] = fr.retarget(state, source, now)
            else:
                cached = self._cached.get((issuer, source.fingerprint))
                self.states[issuer] = fr.starting(source, cached, now)
                if source.url is not None and source.url.startswith("http:"):
                    log.warning(
                        "JWKS fetched over plain HTTP: anyone on the path can swap the keys",
                        extra={"fields": {"issuer": issuer, "source": source.shown}},
                    )
            self._start_task(issuer)
        self.publish()

    def start(self) -> None:
        """Run the refresh tasks (in the running event loop), now and for later issuers."""
        self.running = True
        for issuer in self.states:
            if issuer not in self._tasks:
                self._start_task(issuer)

    def _start_task(self, issuer: str) -> None:
        if self.running:
            self._tasks[issuer] = asyncio.get_running_loop().create_task(self._run(issuer))

    def _stop_task(self, issuer: str) -> None:
        task = self._tasks.pop(issuer, None)
        if task is not None:
            task.cancel()

    async def stop(self) -> None:
        self.running = False
        tasks = list(self._tasks.values())
        self._tasks.clear()
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._client is not None:
            client, self._client = self._client, None
            await client.aclose()

    # -- one issuer ------------------------------------------------------------------------
    async def _run(self, issuer: str) -> None:
        while True:
            now = self.clock()
            state = self.states[issuer]
            delay = fr.wake_at(state, now) - now
            if delay > 0:
                await asyncio.sleep(delay)
            if self.clock() >= self.states[issuer].next_fetch:
                await self.fetch_once(issuer)
            self.publish()

    async def fetch_once(self, issuer: str) -> None:
        """Fetch ``issuer``'s keys now and record the outcome (never raises but for cancel)."""
        state = self.states[issuer]
        source = state.source
        try:
            data = await self._fetch(source)
            keys = parse_jwks(data)
        except JwksError as exc:
            self._failed(issuer, f"not a usable JWKS: {exc}", "invalid")
            return
        except FetchError as exc:
            self._failed(issuer, str(exc), exc.kind)
            return
        except Exception as exc:  # a bug must not end the issuer's refresh loop
            log.exception("JWKS fetch failed unexpectedly", extra={"fields": {"issuer": issuer}})
            self._failed(issuer, f"internal error ({type(exc).__name__})", "failed")
            return
        now = self.clock()
        changed = fr.changed_document(state, keys)
        was_failing = state.failing_since is not None or state.good is None
        new = fr.succeeded(state, keys, now)
        self.states[issuer] = new
        assert new.good is not None
        self._cached[(issuer, source.fingerprint)] = new.good
        self._on_fetch(issuer, "updated" if changed else "unchanged")
        if changed or was_failing:
            log.info(
                "signing keys updated" if changed else "JWKS reachable again; keys unchanged",
                extra={
                    "fields": {
                        "issuer": issuer,
                        "source": source.shown,
                        "keys": keys.count,
                        "kids": list(keys.kids[:_MAX_KIDS_SHOWN]),
                    }
                },
            )
        if changed and keys.skipped:
            log.warning(
                "JWKS keys left out",
                extra={"fields": {"issuer": issuer, "skipped": list(keys.skipped)}},
            )
        self.publish()  # into the compile at once; the disk can wait
        await self._save(new.good)

    async def _fetch(self, source: JwksSource) -> bytes:
        if self._fetcher is not None:
            return await self._fetcher(source)
        if self._client is None and source.url is not None:
            self._client = new_client()
        return await fetch(self._client, source)

    def _failed(self, issuer: str, reason: str, kind: str) -> None:
        state = fr.failed(self.states[issuer], reason, self.clock(), self._chance())
        self.states[issuer] = state
        self._on_fetch(issuer, kind)
        fields = {
            "issuer": issuer,
            "source": state.source.shown,
            "error": reason,
            "failures": state.failures,
            "retry_in": round(state.next_fetch - self.clock(), 1),
        }
        if fr.usable(state, self.clock()) is None:
            log.error(
                "cannot fetch signing keys and none are in force: the issuer's tokens are "
                "refused (401)",
                extra={"fields": fields},
            )
        else:
            expiry = fr.expires_at(state)
            fields["serving_until"] = expiry
            log.warning(
                "cannot fetch signing keys; the last good keys keep serving",
                extra={"fields": fields},
            )

    async def _save(self, entry: StoredKeys) -> None:
        previous = self.store.error
        try:
            await asyncio.to_thread(self.store.save, entry)
        except StoreError as exc:
            if str(exc) != previous:
                log.error(
                    "cannot write the JWKS cache: keys serve from memory, but a restart while "
                    "the identity provider is down would have none",
                    extra={"fields": {"error": str(exc)}},
                )
            return
        if previous is not None:
            log.info(
                "JWKS cache writable again", extra={"fields": {"dir": str(self.store.directory)}}
            )

    # -- status ----------------------------------------------------------------------------
    def as_dict(self) -> dict[str, Any]:
        now = self.clock()
        return {
            "cache": {
                "directory": str(self.store.directory) if self.store.directory else None,
                "error": self.store.error,
            },
            "issuers": [self._issuer_dict(s, now) for _, s in sorted(self.states.items())],
        }

    def _issuer_dict(self, state: fr.IssuerState, now: float) -> dict[str, Any]:
        good, src = fr.usable(state, now), state.source
        return {
            "issuer": src.issuer,
            "source": src.shown,
            "state": fr.freshness(state, now),
            "stale_since": state.failing_since if good is not None else None,
            "keys": good.keys.count if good is not None else 0,
            "kids": list(good.keys.kids[:_MAX_KIDS_SHOWN]) if good is not None else [],
            "skipped": list(good.keys.skipped) if good is not None else [],
            "fetched_at": state.good.fetched_at if state.good is not None else None,
            "expires_at": fr.expires_at(state),
            "failures": state.failures,
            "last_error": state.last_error,
            "last_error_at": state.last_error_at,
            "next_fetch": state.next_fetch,
            "refresh": src.refresh,
            "max_stale": src.max_stale,
        }

    def metrics_view(self) -> list[tuple[str, str, int, float | None]]:
        """(issuer, freshness, keys in force, age of the set in force) per issuer."""
        now = self.clock()
        out: list[tuple[str, str, int, float | None]] = []
        for issuer, state in sorted(self.states.items()):
            good = fr.usable(state, now)
            age = now - good.fetched_at if good is not None else None
            count = good.keys.count if good is not None else 0
            out.append((issuer, fr.freshness(state, now), count, age))
        return out
