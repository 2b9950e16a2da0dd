"""A ``grpc.aio`` server with the options every meshgate service wants, plus gRPC health.

Options: keepalive pings so a peer that vanished without a FIN (a crashed host, a dropped NAT
entry) is noticed within a minute instead of holding a stream for hours; a floor on how often
clients may ping; message size bounds a service raises only where it needs to (the control
plane sends whole snapshots). Health: the standard ``grpc.health.v1.Health`` service, which
Kubernetes' gRPC probes, Envoy's gRPC health checks and ``grpc_health_probe`` all speak. It is
our own small servicer rather than the reference one because a draining server must also *end*
its ``Watch`` streams: they never finish by themselves and would otherwise hold
``server.stop(grace)`` for the whole grace period.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from meshgate.runtime.tls import TlsFiles, server_credentials

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
SERVICE_UNKNOWN = health_pb2.HealthCheckResponse.SERVICE_UNKNOWN


@dataclass(frozen=True)
class GrpcOptions:
    keepalive_time_ms: int = 30_000
    keepalive_timeout_ms: int = 10_000
    #: Clients may ping this often at most while no call is active (gRPC's default is 5 min,
    #: which makes Envoy's 10 s HTTP/2 keepalive end in GOAWAY "too_many_pings").
    min_ping_interval_ms: int = 5_000
    max_receive_message_bytes: int = 4 * 1024 * 1024
    max_send_message_bytes: int = 4 * 1024 * 1024
    max_concurrent_streams: int | None = None
    extra: tuple[tuple[str, int | str], ...] = field(default=())

    def channel_args(self) -> list[tuple[str, Any]]:
        args: list[tuple[str, Any]] = [
            ("grpc.keepalive_time_ms", self.keepalive_time_ms),
            ("grpc.keepalive_timeout_ms", self.keepalive_timeout_ms),
            ("grpc.keepalive_permit_without_calls", 1),
            ("grpc.http2.min_ping_interval_without_data_ms", self.min_ping_interval_ms),
            ("grpc.http2.min_recv_ping_interval_without_data_ms", self.min_ping_interval_ms),
            ("grpc.max_receive_message_length", self.max_receive_message_bytes),
            ("grpc.max_send_message_length", self.max_send_message_bytes),
            # one process per port: a second control plane on the same port must fail to bind
            # instead of silently sharing (and splitting) the Envoys
            ("grpc.so_reuseport", 0),
        ]
        if self.max_concurrent_streams is not None:
            args.append(("grpc.max_concurrent_streams", self.max_concurrent_streams))
        return args + list(self.extra)


def make_server(options: GrpcOptions | None = None) -> grpc.aio.Server:
    return grpc.aio.server(options=(options or GrpcOptions()).channel_args())


def add_port(server: grpc.aio.Server, address: str, tls: TlsFiles | None = None) -> int:
    """Listen on ``address`` (``HOST:PORT``, or ``unix:PATH``); with ``tls``, mutual TLS only.

    Returns the bound port (1 for a Unix socket); raises OSError naming the address when it
    cannot be bound, since grpc only returns 0.
    """
    port = int(
        server.add_secure_port(address, server_credentials(tls))
        if tls is not None
        else server.add_insecure_port(address)
    )
    if port == 0:
        raise OSError(f"cannot listen on {address} (in use, or not an address of this host)")
    return port


class HealthServicer(health_pb2_grpc.HealthServicer):  # type: ignore[misc]
    """``grpc.health.v1.Health``: one status per service name (``""`` is the whole server)."""

    def __init__(self, services: tuple[str, ...] = ("",)) -> None:
        self._status: dict[str, int] = dict.fromkeys(services, NOT_SERVING)
        self._watchers: set[asyncio.Queue[int | None]] = set()
        self._ended = False

    def status(self, service: str = "") -> int:
        return int(self._status.get(service, SERVICE_UNKNOWN))

    def set_all(self, status: int) -> None:
        for name in self._status:
            self._status[name] = status
        for queue in self._watchers:
            queue.put_nowait(status)

    def end_watches(self) -> None:
        """End every Watch stream (status OK) and refuse new ones; for the last drain step."""
        self._ended = True
        for queue in self._watchers:
            queue.put_nowait(None)

    async def Check(
        self, request: health_pb2.HealthCheckRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> health_pb2.HealthCheckResponse:
        status = self._status.get(request.service)
        if status is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"unknown service {request.service!r}")
        return health_pb2.HealthCheckResponse(status=status)

    async def Watch(
        self, request: health_pb2.HealthCheckRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[health_pb2.HealthCheckResponse]:
        if self._ended:
            return
        queue: asyncio.Queue[int | None] = asyncio.Queue()
        self._watchers.add(queue)
        try:
            last = self.status(request.service)
            yield health_pb2.HealthCheckResponse(status=last)
            while await queue.get() is not None:
                status = self.status(request.service)
                if status != last:
                    last = status
                    yield health_pb2.HealthCheckResponse(status=status)
        finally:
            with contextlib.suppress(KeyError):
                self._watchers.remove(queue)


def add_health(server: grpc.aio.Server, services: tuple[str, ...] = ("",)) -> HealthServicer:
    servicer = HealthServicer(services)
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    return servicer
