"""Wiring of the ext_authz process: the key store, the keyring, the HTTP ext_authz server.

The process is a :class:`~meshgate.runtime.service.Service` (health, admin HTTP /healthz
/readyz /metrics, JSON logs, signals, drain) running :class:`AuthzApp`:

Configure: with ``--admin-token-file``, the key API (:mod:`ext_authz.admin_api`) is mounted
on the admin HTTP app (a token file that cannot be read fails the start).
Start: hash key -> store opened -> first full load of the keys (tried once here; when the
store cannot be read yet, the refresher keeps trying and the service is not ready) -> HTTP
ext_authz listening on ``--listen`` (only once the keys are loaded: before that every valid
key would be refused as unknown) -> refresher and last-use flusher.
Stop (SIGTERM/SIGINT): /readyz 503 -> the listener closes, open connections get
``drain_grace`` -> refresher stopped, pending last use written -> store closed -> exit 0.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from ext_authz.admin_api import KeyAdmin, mount_key_api, read_admin_token
from ext_authz.decide import Decision
from ext_authz.http_server import serve
from ext_authz.keyring import Keyring
from ext_authz.keys.hashing import load_or_create_hash_key
from ext_authz.keys.lifecycle import KeyBook
from ext_authz.settings import Settings, parse_args
from ext_authz.stores.base import KeyStore
from ext_authz.stores.open import open_store
from ext_authz.sync import KeySync
from meshgate.runtime.logs import setup_logging
from meshgate.runtime.service import Service
from meshgate.runtime.settings import split_address

log = logging.getLogger("meshgate.ext_authz")

#: Decisions take microseconds; the buckets start there.
LATENCY_BUCKETS = (1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 0.1)


class AuthzMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.decisions = Counter(
            "meshgate_ext_authz_decisions",
            "ext_authz decisions by result (allow, deny) and reason code",
            ["result", "reason"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "meshgate_ext_authz_decision_seconds",
            "time to decide one check (the HTTP exchange excluded)",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.store_errors = Counter(
            "meshgate_ext_authz_store_errors",
            "key store calls that failed (reads, change checks, last-use writes)",
            registry=self.registry,
        )
        self.keys = Gauge(
            "meshgate_ext_authz_keys", "key records in memory", registry=self.registry
        )

    def on_decision(self, decision: Decision, seconds: float) -> None:
        result = "allow" if decision.allowed else "deny"
        self.decisions.labels(result, decision.reason).inc()
        self.latency.observe(seconds)


class AuthzApp:
    """The ext_authz service as an app of the service shell."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.metrics = AuthzMetrics()
        self.service: Service | None = None
        self.store: KeyStore | None = None
        self.keyring: Keyring | None = None
        self.sync: KeySync | None = None
        self.server: asyncio.Server | None = None
        self._serving: asyncio.Task[None] | None = None
        self.key_admin: KeyAdmin | None = None

    def configure(self, service: Service) -> None:
        self.service = service  # no gRPC service of its own: Envoy speaks HTTP ext_authz here
        token_file = self.settings.admin_token_file
        if token_file is not None:  # read before the admin HTTP listens; a bad file fails start
            token = read_admin_token(Path(token_file))
            mount_key_api(service.admin_app, token, lambda: self.key_admin)
            fields = {"routes": "/v1/keys", "token_file": token_file}
            log.info("key API mounted on the admin address", extra={"fields": fields})

    async def start(self) -> None:
        s = self.settings
        split_address(s.listen)
        hasher = await asyncio.to_thread(load_or_create_hash_key, Path(s.hash_key_file))
        self.store = await asyncio.to_thread(open_store, s.store)
        self.keyring = Keyring(hasher)
        self.metrics.keys.set_function(lambda: len(self.keyring or ()))
        self.sync = KeySync(
            self.store,
            self.keyring,
            resync_interval=s.resync_interval,
            flush_interval=s.last_use_flush,
            on_store_error=self.metrics.store_errors.inc,
        )
        self.key_admin = KeyAdmin(KeyBook(self.store, hasher), self.sync, self.keyring)
        log.info("key store", extra={"fields": {"store": s.store_name()}})
        if await self.sync.load():
            await self._serve()  # a port that cannot be bound fails the start
        else:
            self._serving = asyncio.create_task(self._serve_once_loaded())
        self.sync.start()

    async def _serve(self) -> None:
        assert self.keyring is not None
        host, port = split_address(self.settings.listen)
        self.server = await serve(host, port, self.keyring, on_decision=self.metrics.on_decision)
        log.info("serving HTTP ext_authz", extra={"fields": {"listen": self.settings.listen}})

    async def _serve_once_loaded(self) -> None:
        assert self.sync is not None
        while not self.sync.loaded:
            await asyncio.sleep(0.1)
        try:
            await self._serve()
        except OSError as exc:
            fields = {"listen": self.settings.listen, "error": str(exc)}
            log.error("cannot listen", extra={"fields": fields})
            if self.service is not None:
                self.service.request_stop(force=True)

    def ready(self) -> tuple[bool, str]:
        if self.sync is None or not self.sync.loaded or self.server is None:
            problem = self.sync.problem() if self.sync is not None else None
            return False, "loading the keys" + (f": {problem}" if problem else "")
        problem = self.sync.problem()
        if problem:
            return True, f"answering from the keys in memory; key store unreachable: {problem}"
        return True, f"{len(self.keyring or ())} keys loaded"

    async def drain(self) -> None:
        if self._serving is not None:
            self._serving.cancel()
        if self.server is not None:
            self.server.close()  # no new connections
            grace = self.settings.drain_grace
            # Envoy keeps its connections open: give them the grace, then cut them
            try:
                await asyncio.wait_for(self.server.wait_closed(), grace)
            except TimeoutError:
                pass
        if self.sync is not None:
            await self.sync.stop()

    async def stop(self) -> None:
        if self.store is not None:
            self.store.close()


def make_service(app: AuthzApp) -> Service:
    return Service("meshgate ext_authz", app.settings, app.metrics.registry)


async def run(settings: Settings) -> int:
    app = AuthzApp(settings)
    return await make_service(app).run(app)


def main(argv: list[str] | None = None) -> int:
    settings = parse_args(argv)
    setup_logging("ext_authz", settings.log_level, settings.log_format)
    return asyncio.run(run(settings))
