"""The service shell: one process's gRPC server(s), health, admin HTTP, signals and stop order.

Every meshgate service (the control plane now; ext_authz, the rate limit service and ext_proc
next) is an :class:`App` run by :class:`Service`, so they all start, report health and stop the
same way. The app says what it serves (``configure``), what runs in the background
(``start``), whether it can do its job (``ready``) and how its long-lived work ends
(``drain``, ``stop``); the shell owns the order:

start   configure (servicers, ports) -> gRPC servers listen -> admin HTTP -> app.start
        -> health follows ``ready()`` (NOT_SERVING until the app is ready, then SERVING)
SIGTERM health NOT_SERVING and /readyz 503 -> ``drain_delay`` (load balancers notice)
        -> app.drain (end streams that never end by themselves) -> servers refuse new calls,
        in-flight calls get ``drain_grace`` -> app.stop -> admin HTTP stops -> exit 0
        A second SIGTERM/SIGINT skips what is left of the waits: calls still running are
        cancelled and the process exits 1, so a supervisor can tell a forced stop from a clean one.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from typing import Any, Protocol

import grpc
from fastapi import FastAPI
from prometheus_client import CollectorRegistry

from meshgate.runtime.admin_http import AdminServer, make_admin_app
from meshgate.runtime.grpc_server import (
    NOT_SERVING,
    SERVING,
    GrpcOptions,
    HealthServicer,
    add_health,
    make_server,
)
from meshgate.runtime.settings import ServiceSettings, split_address

log = logging.getLogger("meshgate.service")

#: Signals that start a graceful stop. SIGHUP is one of them: a control plane run from a
#: terminal or ssh session that closes was otherwise killed outright, skipping its cleanup.
_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)

#: How often health is brought in line with ``App.ready()``: readiness is the app's to compute
#: (it may depend on another process), so the shell samples it rather than being told.
READINESS_INTERVAL = 0.2


class App(Protocol):
    def configure(self, service: Service) -> None:
        """Register servicers and bind ports on ``service.server`` (or extra servers)."""

    async def start(self) -> None:
        """Background work, once every server listens (watchers, child processes)."""

    def ready(self) -> tuple[bool, str]:
        """Whether the app can do its job now, and why (shown by /readyz)."""

    async def drain(self) -> None:
        """Stop background work and end calls that never end by themselves (streams)."""

    async def stop(self) -> None:
        """Last cleanup, after the gRPC servers have stopped."""


class Service:
    """Runs one :class:`App`; see the module docstring for the order of things."""

    def __init__(
        self,
        name: str,
        settings: ServiceSettings,
        registry: CollectorRegistry,
        grpc_options: GrpcOptions | None = None,
    ) -> None:
        self.name = name
        self.settings = settings
        self.server = make_server(grpc_options)
        self.health = add_health(self.server)
        self._servers: list[grpc.aio.Server] = [self.server]
        self._healths: list[HealthServicer] = [self.health]
        self.admin_app: FastAPI = make_admin_app(name, self.readiness, registry)
        self.admin: AdminServer | None = None
        self._app: App | None = None
        self._draining = False
        self._stop = asyncio.Event()
        self._force = asyncio.Event()
        self._follow: asyncio.Task[None] | None = None
        self._started: list[grpc.aio.Server] = []

    # -- what apps use -------------------------------------------------------------------------

    def add_server(
        self, options: GrpcOptions | None = None, health: bool = False
    ) -> grpc.aio.Server:
        """Another gRPC server (e.g. on a private socket), started and stopped with the main one."""
        server = make_server(options)
        self._servers.append(server)
        if health:
            self._healths.append(add_health(server))
        return server

    @property
    def draining(self) -> bool:
        return self._draining

    def readiness(self) -> tuple[bool, str]:
        if self._draining:
            return False, "draining: the service is shutting down"
        if self._app is None:
            return False, "starting"
        return self._app.ready()

    def request_stop(self, force: bool = False) -> None:
        """What a signal does: the first asks for a graceful stop, the next for an immediate one."""
        if self._stop.is_set() or force:
            self._force.set()
        self._stop.set()

    # -- lifecycle -------------------------------------------------------------------------------

    async def start(self, app: App) -> None:
        """Everything up to serving; raises on a startup failure (after undoing what started)."""
        self._app = app
        try:
            app.configure(self)
            for server in self._servers:
                await server.start()
                self._started.append(server)
            host, port = split_address(self.settings.admin_address)
            self.admin = AdminServer(self.admin_app, host, port)
            self.admin.start()
            await app.start()
        except BaseException:
            self._force.set()
            await self.shutdown()
            raise
        self._apply_readiness()
        self._follow = asyncio.create_task(self._follow_readiness())

    async def run(self, app: App) -> int:
        """Start, serve until SIGTERM/SIGINT/SIGHUP, stop; the process exit code."""
        loop = asyncio.get_running_loop()
        for sig in _STOP_SIGNALS:
            loop.add_signal_handler(sig, self._on_signal, sig)
        try:
            try:
                await self.start(app)
            except Exception as exc:  # startup failure: one clear line, not a traceback
                log.error(f"cannot start {self.name}", extra={"fields": {"error": str(exc)}})
                return 1
            await self._stop.wait()
            return await self.shutdown()
        finally:
            for sig in _STOP_SIGNALS:
                loop.remove_signal_handler(sig)

    def _on_signal(self, sig: int) -> None:
        if self._stop.is_set():
            log.warning("second signal: stopping at once", extra={"fields": {"signal": sig}})
        else:
            log.info(
                "stopping: draining (a second signal stops at once)",
                extra={"fields": {"signal": signal.Signals(sig).name}},
            )
        self.request_stop()

    async def shutdown(self) -> int:
        """Drain and stop (see the module docstring); 0 when it finished within its grace."""
        s = self.settings
        self._draining = True
        if self._follow is not None:
            self._follow.cancel()
        for health in self._healths:
            health.set_all(NOT_SERVING)
        if s.drain_delay > 0:
            delay = asyncio.ensure_future(asyncio.sleep(s.drain_delay))
            if not await self._unless_forced(delay):
                delay.cancel()
        if self._app is not None:
            await self._app.drain()
        for health in self._healths:
            health.end_watches()
        grace = 0.0 if self._force.is_set() else s.drain_grace
        stops = asyncio.gather(*(server.stop(grace) for server in self._started))
        if not await self._unless_forced(stops):
            # a second signal while in-flight calls finish: cancel them now
            await asyncio.gather(*(server.stop(None) for server in self._started))
            await stops
        if self._app is not None:
            await self._app.stop()
        if self.admin is not None:
            await self.admin.shutdown()
        forced = self._force.is_set()
        log.info(f"{self.name} stopped", extra={"fields": {"forced": forced}})
        return 1 if forced else 0

    async def _unless_forced(self, work: asyncio.Future[Any]) -> bool:
        """Wait for ``work`` unless a forced stop comes first; True when ``work`` finished.
        ``work`` is left running otherwise: the caller decides how to cut it short."""
        forced = asyncio.ensure_future(self._force.wait())
        try:
            await asyncio.wait({work, forced}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            forced.cancel()
        if work.done():
            work.result()
            return True
        return False

    def _apply_readiness(self) -> None:
        ok, _ = self.readiness()
        status = SERVING if ok else NOT_SERVING
        for health in self._healths:
            if health.status() != status:
                health.set_all(status)

    async def _follow_readiness(self) -> None:
        while True:
            await asyncio.sleep(READINESS_INTERVAL)
            self._apply_readiness()
