"""Wiring of the control plane process: what it serves, and in which order it starts and stops.

The process is a :class:`~meshgate.runtime.service.Service` (gRPC server, health, admin HTTP,
JSON logs, signals, drain) running :class:`ControlPlane`, which adds:

* the fleet's ADS on ``--xds-address`` (mutual TLS with ``--xds-tls-*``; a non-loopback
  address without it is refused unless ``--insecure-xds``), next to ``grpc.health.v1``;
* the canary's ADS on a second gRPC server bound to a Unix socket in a private directory
  (mode 0700, created here): a stream's snapshot group, and so whose ACK/NACK judges a
  candidate, follows from the server it arrived on, never from the node id it sends;
* ``/status`` on the admin HTTP port.

Config flow: sources (the file, the JWKS manager) -> SourceState -> compile worker process ->
Publisher; the event loop never parses or compiles, so xDS, health and status answer while a
config compiles. New signing keys that no compile can carry (the config is rejected) are put
into the published snapshot directly (``_rekey``).

Start: ports bound -> gRPC servers -> admin HTTP -> canary Envoy -> compile runner and config
watcher. Stop (SIGTERM/SIGINT): health NOT_SERVING -> watcher -> compile worker (killed, not
waited for) -> canary -> ADS streams closed (Envoys keep serving what they have and
reconnect, to another replica or to us when we return) -> gRPC servers -> admin HTTP -> exit 0.
Nothing else in the package reads arguments, installs signal handlers or binds sockets.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from meshgate.problems import Problem
from meshgate.runtime.gc_pause import gc_paused
from meshgate.runtime.grpc_server import GrpcOptions, add_port
from meshgate.runtime.logs import setup_logging
from meshgate.runtime.service import Service
from meshgate.runtime.settings import (
    split_address,
    yaml_limits,
)
from meshgate.runtime.workdirs import OwnedDir
from xds_server.compiler.context import IssuerKeys
from xds_server.compiler.features.jwt.rekey import rekeyed
from xds_server.jwks.manager import JwksManager
from xds_server.jwks.source import JwksSource
from xds_server.jwks.store import KeyStore
from xds_server.metrics import XdsMetrics
from xds_server.publish.publisher import Locator, Publisher
from xds_server.publish.validation import CanaryValidator, ValidateModeValidator, Validator
from xds_server.server.ads import AdsServicer, add_to_server
from xds_server.server.status import StatusRegistry, fleet_summary
from xds_server.settings import (
    Settings,
    parse_args,
)
from xds_server.snapshot.cache import CANARY_GROUP, DEFAULT_GROUP, SnapshotCache
from xds_server.snapshot.snapshot import Snapshot
from xds_server.sources.base import SourceError, SourceEvent
from xds_server.sources.file import FileConfigSource
from xds_server.sources.state import CompileInput, SourceState
from xds_server.worker.job import Compiled, Outcome, Rejected, to_snapshot
from xds_server.worker.runner import CompileRunner

log = logging.getLogger("meshgate.xds_server")

#: ADS sends whole snapshots: far larger messages than gRPC's 4 MiB default.
XDS_GRPC_OPTIONS = GrpcOptions(
    max_receive_message_bytes=64 * 1024 * 1024, max_send_message_bytes=256 * 1024 * 1024
)
#: A Unix socket path longer than this does not fit in ``sockaddr_un``.
_MAX_SOCKET_PATH = 107


class ControlPlane:
    """The control plane as an app of the service shell."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.cache = SnapshotCache()
        self.registry = StatusRegistry()
        self.metrics = XdsMetrics()
        self.registry.add_listener(self.metrics.on_event)
        self.publisher = Publisher(self.cache, None, self.metrics, source=settings.config)
        self.metrics.bind(lambda: self.publisher.accepted, self.registry.fleet_states)
        self.servicer: AdsServicer | None = None
        self.canary_servicer: AdsServicer | None = None
        self.canary: CanaryValidator | None = None
        self.private_dir: OwnedDir | None = None
        self.xds_port = 0
        self.tls = False
        self.service: Service | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._publish_lock = asyncio.Lock()
        # config flow: sources -> state -> compile worker -> publisher
        self.state = SourceState()
        self.source = FileConfigSource(settings.config, settings.poll_interval)
        # issuers' signing keys: fetched here, handed to the compiler like endpoints
        self.keys = JwksManager(
            KeyStore(settings.jwks_cache_dir()),
            self._on_event,
            on_fetch=lambda issuer, outcome: self.metrics.jwks_fetches.labels(
                issuer, outcome
            ).inc(),
        )
        self.metrics.bind_jwks(self.keys.metrics_view)
        #: The keys the published snapshot was compiled with (or re-keyed to).
        self._published_keys: Mapping[str, IssuerKeys] = {}
        #: The input generation the published keys came with.
        self._keys_generation = 0
        #: The JWKS sources of the published config (the compile job's report).
        self._published_sources: tuple[JwksSource, ...] = ()
        self.compiler = CompileRunner(
            self._on_outcome,
            timeout=settings.compile_timeout,
            max_bytes=settings.max_config_bytes,
            limits=yaml_limits(settings.max_config_nodes),
            # a file written in place may be seen half-way: read it once it is left alone
            # for a moment (a writer's pause, not the polling period, which may be long)
            settle=min(settings.poll_interval, 0.2),
            max_files=settings.max_config_files,
        )

    # -- config flow ---------------------------------------------------------------------
    def _on_event(self, event: SourceEvent) -> None:
        """Every source reports here; the state says whether to recompile."""
        request = self.state.apply(event)
        if isinstance(event, SourceError):
            self._on_config_error(list(event.problems), event.digest)
        if request is not None:
            self.compiler.submit(request)

    async def check_config(self) -> None:
        """Look at the config file now and return once what it holds is published, rejected
        or found unchanged (the watcher does the same every ``poll_interval``)."""
        self.source.check_once(self._on_event)
        if self.compiler.active:
            await self.compiler.idle()
        else:  # not started (tests, tools): compile here, still in a worker
            await self.compiler.run_pending()

    async def _on_outcome(self, request: CompileInput, outcome: Outcome) -> None:
        """The worker's answer for the newest input: publish, reject, or nothing new."""
        published = False
        if isinstance(outcome, Compiled):
            self.metrics.compile_seconds.observe(outcome.seconds)
            snapshot = await asyncio.to_thread(_rebuild, outcome)
            async with self._publish_lock:
                published = await self.publisher.offer(
                    snapshot, outcome.digest, self._locator(request.config.path, outcome.digest)
                )
            if published:
                self._published_keys = request.jwks
                self._keys_generation = request.generation
                self._published_sources = outcome.jwks_sources
                # the published config says which issuers' keys to keep current
                self.keys.reconcile(outcome.jwks_sources)
        elif isinstance(outcome, Rejected):
            self._on_config_error(list(outcome.problems), outcome.digest)
        if not published and request.jwks != self._published_keys:
            # the config cannot carry them (rejected, or refused by the validator): the
            # published snapshot gets them all the same
            await self._rekey(request)
        if outcome.watched:  # the files it read: the watcher looks at every one of them
            self.source.track(outcome.watched)
        self.state.settle(request.generation, outcome.digest, outcome.secret_files)

    async def _rekey(self, request: CompileInput) -> None:
        """Put ``request``'s signing keys into the published snapshot (see
        :mod:`xds_server.compiler.features.jwt.rekey`).

        Called with the outcomes, which the compile runner hands over one at a time and newest
        input last: a later compile carries the same keys or newer ones (the state's keys only
        move forward). And an input older than the keys published is never applied, should
        one ever arrive late."""
        async with self._publish_lock:
            current = self.publisher.current
            if current is None:  # nothing published yet: the first good config takes them
                return
            if request.generation < self._keys_generation:
                return
            candidate = await asyncio.to_thread(
                rekeyed, current, self._published_sources, request.jwks
            )
            if await self.publisher.amend(candidate, "signing keys"):
                self._published_keys = request.jwks
                self._keys_generation = request.generation
                if candidate is not current:
                    log.info(
                        "signing keys put into the published snapshot; its config stays the "
                        "last good one until the rejected config is fixed",
                        extra={"fields": {"issuers": sorted(request.jwks)}},
                    )
            else:
                log.error(
                    "signing keys changed, but the published snapshot cannot take them: it "
                    "keeps the keys it has",
                    extra={"fields": {"issuers": sorted(request.jwks)}},
                )

    def _locator(self, path: str, digest: str) -> Locator:
        """Traces an objection only Envoy finds back to the config's line, in a worker: it
        needs the parsed config, which the control plane does not hold."""

        async def locate(message: str) -> list[Problem]:
            return await self.compiler.locate(path, digest, message)

        return locate

    def _on_config_error(self, problems: list[Problem], digest: str) -> None:
        self.publisher.reject(problems, digest)

    # -- status --------------------------------------------------------------------------
    def ready(self) -> tuple[bool, str]:
        if self.publisher.current is None:
            return False, "no valid config published yet"
        return True, f"serving snapshot {self.publisher.state.version}"

    def status(self) -> dict[str, Any]:
        streams = list(self.registry.streams.values())
        xds = self.registry.as_dict()
        # The canary's own identity (node id, socket) is nobody's business: its state is.
        canary = [
            {k: v for k, v in s.as_dict().items() if k not in ("node_id", "peer", "cluster")}
            for s in streams
            if s.canary
        ]
        return {
            "config": self.publisher.state.as_dict(),
            "validator": self.publisher.validator.name if self.publisher.validator else None,
            "compile": self.compiler.as_dict(),
            "xds_port": self.xds_port,
            "xds_tls": "mutual" if self.tls else "off",
            "fleet": fleet_summary(streams, self.publisher.state.version),
            "envoys": [s.as_dict() for s in streams if not s.canary],
            "canary": canary,
            "recent_nacks": [n for n in xds["recent_nacks"] if n["group"] != CANARY_GROUP],
            "jwks": {
                **self.keys.as_dict(),
                # keys known but not in the published snapshot (a compile is on its way, or
                # the config is rejected)
                "pending": dict(self.state.keys) != dict(self._published_keys),
            },
        }

    # -- lifecycle (the service shell calls these) ----------------------------------------
    def configure(self, service: Service) -> None:
        s = self.settings
        s.check()
        tls = s.xds_tls()
        self.tls = tls is not None
        self.servicer = AdsServicer(self.cache, self.registry, s.nack_retry, DEFAULT_GROUP)
        add_to_server(service.server, self.servicer)
        self.xds_port = add_port(service.server, s.xds_address, tls)
        if s.validator == "canary":
            socket_path = self._private_socket()
            server = service.add_server(XDS_GRPC_OPTIONS)
            self.canary_servicer = AdsServicer(
                self.cache, self.registry, s.nack_retry, CANARY_GROUP
            )
            add_to_server(server, self.canary_servicer)
            add_port(server, f"unix:{socket_path}")
            os.chmod(socket_path, 0o600)
            self.canary = CanaryValidator(self.cache, self.registry, str(socket_path), s.envoy_path)
        service.admin_app.get("/status")(self.status)
        self.service = service

    def _private_socket(self) -> Path:
        """The canary's socket, in a fresh directory only our user can enter (mkdtemp: 0700).

        An :class:`OwnedDir`, so the directory of a control plane killed with SIGKILL is swept
        by the next one instead of piling up in /tmp."""
        self.private_dir = OwnedDir("meshgate-xds-")
        os.chmod(self.private_dir.path, 0o700)
        path = self.private_dir.path / "canary.sock"
        if len(str(path)) > _MAX_SOCKET_PATH:
            raise OSError(
                f"the canary's socket path {path} is longer than {_MAX_SOCKET_PATH} bytes; "
                "set TMPDIR to a shorter directory"
            )
        return path

    async def start(self) -> None:
        s = self.settings
        validator: Validator | None = None
        if self.canary is not None:
            self.canary.start()
            validator = self.canary
        elif s.validator == "validate-mode":
            validator = ValidateModeValidator(s.envoy_path)
        self.publisher.validator = validator
        admin = self.service.admin if self.service is not None else None
        log.info(
            "control plane listening",
            extra={
                "fields": {
                    "xds": f"{split_address(s.xds_address)[0]}:{self.xds_port}",
                    "xds_tls": "mutual" if self.tls else "off",
                    "admin": f"{split_address(s.admin_address)[0]}:{admin.port if admin else 0}",
                    "config": s.config,
                    "validator": s.validator,
                }
            },
        )
        # keys on disk are known before the first compile: a restart publishes them at once
        self.keys.load()
        self.keys.publish()
        self.keys.start()
        self._tasks.append(asyncio.create_task(self.compiler.run()))
        self._tasks.append(asyncio.create_task(self.source.run(self._on_event)))

    async def drain(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.keys.stop()
        await self.compiler.stop()  # a compile in progress is killed, not waited for
        if self.canary is not None:
            await asyncio.to_thread(self.canary.stop)
        # ADS streams never end by themselves: close them (Envoys keep their config and
        # reconnect), so that the servers' stop does not wait out its grace for them.
        for servicer in (self.servicer, self.canary_servicer):
            if servicer is not None:
                servicer.close()

    async def stop(self) -> None:
        if self.private_dir is not None:
            self.private_dir.remove()


def _rebuild(outcome: Compiled) -> Snapshot:
    """The worker's resources as a snapshot, off the event loop (0.1-0.4 s at 100,000 routes,
    most of it in the cycle collector unless it is paused)."""
    with gc_paused():
        return to_snapshot(outcome)


def make_service(plane: ControlPlane) -> Service:
    """The service shell for ``plane``; ``await make_service(p).start(p)`` runs a control plane
    in-process (tests), ``serve`` runs it as the process."""
    return Service(
        "meshgate control plane", plane.settings, plane.metrics.registry, XDS_GRPC_OPTIONS
    )


async def serve(settings: Settings) -> int:
    plane = ControlPlane(settings)
    return await make_service(plane).run(plane)


def main(argv: list[str] | None = None) -> int:
    settings = parse_args(argv)
    setup_logging("xds_server", settings.log_level, settings.log_format)
    return asyncio.run(serve(settings))
