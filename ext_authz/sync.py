"""Keeping the in-memory :class:`~ext_authz.keyring.Keyring` in line with the key store, and
writing the keys' last use back to it; nothing here is on the request path.

A revoke made anywhere (the CLI in another process, another replica) must be refused here
within a second:

* SQLite: every ``poll_interval`` (0.25 s) one ``PRAGMA data_version`` on the service's own
  connection, which changes whenever another connection commits; when it moved, a full reload
  (``Keyring.replace_all``). A full reload also happens every ``resync_interval``.
* Redis: a thread subscribed to the store's change channel fetches each changed record and
  applies it (``Keyring.apply``); on every (re)subscription and every ``resync_interval`` a
  full reload, so a notice missed (a broken subscription, a change written without one) is
  caught at the next resync. The store's change counter tells when notices were missed.

A store that cannot be reached costs nothing but freshness: the keyring keeps answering from
memory, the outage is logged once (and its end once), every failed call is counted, and
:meth:`KeySync.problem` says it for /readyz. Every keyring change happens on the event loop.

Last use: every ``flush_interval`` the keyring's pending last-use times go to
``KeyStore.touch`` in a worker thread; a failed batch is kept and retried with the next one.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from ext_authz.keyring import Keyring
from ext_authz.keys.record import KeyRecord
from ext_authz.stores.base import KeyStore, KeyStoreError

log = logging.getLogger("meshgate.ext_authz.sync")

T = TypeVar("T")

#: Seconds between SQLite change checks.
POLL_INTERVAL = 0.25
#: Seconds the Redis listener waits for a notice before looking at its other duties.
_LISTEN_WAIT = 0.2
#: Seconds before a failed Redis subscription is tried again.
_RETRY = 0.5


def _why(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__


class StoreHealth:
    """Whether the store answered last time; logs an outage once, and its end once."""

    def __init__(self, on_error: Callable[[], None] | None = None) -> None:
        self._on_error = on_error
        self._lock = threading.Lock()
        self.problem: str | None = None
        self.since: float | None = None

    def failed(self, doing: str, exc: BaseException) -> None:
        if self._on_error is not None:
            self._on_error()
        with self._lock:
            first = self.problem is None
            self.problem = f"cannot {doing}: {_why(exc)}"
            if first:
                self.since = time.time()
        if first:
            log.warning(
                "key store unreachable: answering from the keys in memory",
                extra={"fields": {"doing": doing, "error": _why(exc)}},
            )

    def ok(self) -> None:
        with self._lock:
            was = self.problem
            self.problem = self.since = None
        if was is not None:
            log.info("key store reachable again")


class KeySync:
    """The refresher and the last-use flusher of one keyring and its store."""

    def __init__(
        self,
        store: KeyStore,
        keyring: Keyring,
        *,
        resync_interval: float = 30.0,
        flush_interval: float = 5.0,
        poll_interval: float = POLL_INTERVAL,
        on_store_error: Callable[[], None] | None = None,
    ) -> None:
        self.store, self.keyring = store, keyring
        self.resync_interval = resync_interval
        self.flush_interval = flush_interval
        self.poll_interval = poll_interval
        self.health = StoreHealth(on_store_error)
        self.loaded = False
        # one thread for every store call but the Redis listener's: a SQLite connection is
        # used by one thread at a time, and a slow store never holds up the event loop
        self._io = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="keystore")
        self._stop = threading.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._listener: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._version: int | None = None
        self._unflushed: dict[str, float] = {}
        self._expected_changes: int | None = None

    @property
    def _redis(self) -> bool:
        return hasattr(self.store, "subscribe")

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._io, fn, *args)

    async def call(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` on the store thread the refresher uses (the admin API's writes: a
        SQLite connection is used by one thread at a time); KeyStoreError once stopping."""
        if self._stop.is_set():
            raise KeyStoreError("the service is stopping")
        return await self._run(fn, *args)

    # -- loading -------------------------------------------------------------------------------

    def _read_all(self) -> tuple[int | None, list[KeyRecord]]:
        version = None
        if hasattr(self.store, "data_version"):
            version = int(self.store.data_version())  # before reading: a later commit reloads
        return version, self.store.all()

    async def load(self) -> bool:
        """One full reload; False (logged, counted) when the store cannot be read."""
        try:
            version, records = await self._run(self._read_all)
        except Exception as exc:
            self.health.failed("read the keys", exc)
            return False
        self.keyring.replace_all(records)
        self._version = version
        self.health.ok()
        if not self.loaded:
            log.info("keys loaded", extra={"fields": {"keys": len(records)}})
        self.loaded = True
        return True

    def problem(self) -> str | None:
        return self.health.problem

    # -- running -------------------------------------------------------------------------------

    def start(self) -> None:
        """The refresher and the flusher, as tasks of the running loop (and a thread for Redis)."""
        self._loop = asyncio.get_running_loop()
        self._tasks.append(asyncio.create_task(self._flush_loop(), name="last-use flusher"))
        if self._redis:
            self._listener = threading.Thread(
                target=self._listen, name="keystore-changes", daemon=True
            )
            self._listener.start()
        else:
            self._tasks.append(asyncio.create_task(self._poll_loop(), name="key store poller"))

    async def stop(self) -> None:
        """End the refresher and the flusher, then write what last use is still pending."""
        self._stop.set()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._listener is not None:
            await asyncio.to_thread(self._listener.join, 2.0)
        await self.flush()
        self._io.shutdown(wait=True)

    async def _poll_loop(self) -> None:
        next_full = time.monotonic() + self.resync_interval
        while True:
            await asyncio.sleep(self.poll_interval)
            try:
                version = await self._run(self.store.data_version)  # type: ignore[attr-defined]
            except Exception as exc:
                self.health.failed("check the key store for changes", exc)
                continue
            if version != self._version or time.monotonic() >= next_full or not self.loaded:
                if await self.load():
                    next_full = time.monotonic() + self.resync_interval
            else:
                self.health.ok()

    # -- Redis: the change listener (a thread) -------------------------------------------------

    def _post(self, fn: Callable[..., None], *args: Any) -> None:
        assert self._loop is not None
        with contextlib.suppress(RuntimeError):  # the loop has closed: we are stopping
            self._loop.call_soon_threadsafe(fn, *args)

    def _loaded(self, records: list[KeyRecord]) -> None:
        self.keyring.replace_all(records)
        if not self.loaded:
            log.info("keys loaded", extra={"fields": {"keys": len(records)}})
        self.loaded = True

    def _resync(self) -> None:
        store: Any = self.store
        count = int(store.change_count())
        records = store.all()
        expected = self._expected_changes
        if expected is not None and count > expected:
            log.info(
                "resync: the store changed without a notice reaching this replica",
                extra={"fields": {"missed": count - expected}},
            )
        self._expected_changes = count
        self._post(self._loaded, records)

    def _listen(self) -> None:
        store: Any = self.store
        pubsub: Any = None
        next_full = 0.0
        while not self._stop.is_set():
            try:
                if pubsub is None:
                    pubsub = store.subscribe()
                    next_full = 0.0  # whatever changed while not subscribed
                if time.monotonic() >= next_full:
                    self._resync()
                    next_full = time.monotonic() + self.resync_interval
                    self.health.ok()
                message = pubsub.get_message(timeout=_LISTEN_WAIT)
                if message is None or message.get("type") != "message":
                    continue
                if self._expected_changes is not None:
                    self._expected_changes += 1
                record = store.get(str(message["data"]))
                if record is not None:
                    self._post(self.keyring.apply, record)
            except Exception as exc:
                self.health.failed("follow the key store's changes", exc)
                if pubsub is not None:
                    with contextlib.suppress(Exception):
                        pubsub.close()
                    pubsub = None
                self._stop.wait(_RETRY)
        if pubsub is not None:
            with contextlib.suppress(Exception):
                pubsub.close()

    # -- last use ------------------------------------------------------------------------------

    async def _flush_loop(self) -> None:
        while True:
            await asyncio.sleep(self.flush_interval)
            await self.flush()

    async def flush(self) -> None:
        """Hand the keyring's pending last use to ``KeyStore.touch`` (kept on failure)."""
        for key_id, at in self.keyring.take_last_use().items():
            self._unflushed[key_id] = max(at, self._unflushed.get(key_id, at))
        if not self._unflushed:
            return
        batch, self._unflushed = self._unflushed, {}
        try:
            await self._run(self.store.touch, batch)
        except Exception as exc:
            self.health.failed("record last use", exc)
            for key_id, at in batch.items():
                self._unflushed[key_id] = max(at, self._unflushed.get(key_id, at))
