"""The service shell over real gRPC: health follows readiness, drain, a second signal.

A tiny app on :class:`meshgate.runtime.service.Service` with one slow unary method stands in for
a real service; the health service is queried with the standard ``grpc_health.v1`` client.
"""

from __future__ import annotations

import asyncio
import json
import urllib.request
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client import CollectorRegistry

from meshgate.runtime.service import Service
from meshgate.runtime.settings import ServiceSettings

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
SLOW = "/test.Slow/Sleep"


class SlowApp:
    """Ready when told; ``/test.Slow/Sleep`` sleeps the seconds in its request."""

    def __init__(self) -> None:
        self.is_ready = False
        self.port = 0
        self.drained = self.stopped = False
        self.finished: list[float] = []

    def configure(self, service: Service) -> None:
        async def sleep(request: bytes, context: Any) -> bytes:
            seconds = float(request.decode())
            await asyncio.sleep(seconds)
            self.finished.append(seconds)
            return b"done"

        handler = grpc.method_handlers_generic_handler(
            "test.Slow", {"Sleep": grpc.unary_unary_rpc_method_handler(sleep)}
        )
        service.server.add_generic_rpc_handlers((handler,))
        self.port = service.server.add_insecure_port("127.0.0.1:0")

    async def start(self) -> None:
        pass

    def ready(self) -> tuple[bool, str]:
        return self.is_ready, "ready" if self.is_ready else "warming up"

    async def drain(self) -> None:
        self.drained = True

    async def stop(self) -> None:
        self.stopped = True


@pytest.fixture
async def running() -> AsyncIterator[tuple[Service, SlowApp, grpc.aio.Channel]]:
    settings = ServiceSettings(drain_delay=0.5, drain_grace=10.0)
    service = Service("test service", settings, CollectorRegistry())
    app = SlowApp()
    await service.start(app)
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{app.port}")
    try:
        yield service, app, channel
    finally:
        await channel.close()
        if not service.draining:
            service.request_stop(force=True)
            await service.shutdown()


async def check(channel: grpc.aio.Channel) -> int:
    stub = health_pb2_grpc.HealthStub(channel)
    resp = await stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=2)
    return int(resp.status)


def readyz(service: Service) -> tuple[int, dict[str, Any]]:
    assert service.admin is not None
    url = f"http://127.0.0.1:{service.admin.port}/readyz"
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


async def until_status(channel: grpc.aio.Channel, want: int) -> None:
    for _ in range(100):
        if await check(channel) == want:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"health never became {want}")


async def test_health_follows_readiness_then_reports_not_serving_while_draining(
    running: tuple[Service, SlowApp, grpc.aio.Channel],
) -> None:
    service, app, channel = running
    assert await check(channel) == NOT_SERVING  # listening, but the app is not ready yet
    assert (await asyncio.to_thread(readyz, service))[0] == 503
    app.is_ready = True
    await until_status(channel, SERVING)
    assert (await asyncio.to_thread(readyz, service)) == (
        200,
        {"status": "ready", "reason": "ready"},
    )

    watch = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest(service=""))
    assert (await watch.read()).status == SERVING
    in_flight = asyncio.ensure_future(grpc_call(channel, 1.0))
    await asyncio.sleep(0.2)

    service.request_stop()
    stopping = asyncio.ensure_future(service.shutdown())
    # the watcher is told at once; during the drain delay new Checks still get an answer
    assert (await asyncio.wait_for(watch.read(), 2)).status == NOT_SERVING
    assert await check(channel) == NOT_SERVING
    code, body = await asyncio.to_thread(readyz, service)
    assert code == 503 and body["reason"] == "draining: the service is shutting down"

    assert await asyncio.wait_for(stopping, 15) == 0
    # the call that was running when the drain began was allowed to finish
    assert await in_flight == b"done" and app.finished == [1.0]
    assert app.drained and app.stopped
    assert await watch.read() is grpc.aio.EOF and await watch.code() == grpc.StatusCode.OK
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await check(channel)
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_a_second_stop_request_cancels_in_flight_calls_at_once(
    running: tuple[Service, SlowApp, grpc.aio.Channel],
) -> None:
    service, app, channel = running
    app.is_ready = True
    long_call = asyncio.ensure_future(grpc_call(channel, 60.0))
    await asyncio.sleep(0.2)
    service.request_stop()
    stopping = asyncio.ensure_future(service.shutdown())
    await asyncio.sleep(1.0)  # past the drain delay: waiting out the 10 s grace for the call
    assert not stopping.done()
    service.request_stop()  # what a second SIGTERM/SIGINT does
    assert await asyncio.wait_for(stopping, 3) == 1  # forced: exit code 1
    with pytest.raises(grpc.aio.AioRpcError) as cut:
        await long_call
    # gRPC's words for a server that cancels its calls while stopping
    assert cut.value.code() == grpc.StatusCode.UNAVAILABLE
    assert cut.value.details() == "Cancelling all calls"
    assert app.finished == []


async def grpc_call(channel: grpc.aio.Channel, seconds: float) -> bytes:
    call = channel.unary_unary(SLOW)
    result: bytes = await call(str(seconds).encode(), timeout=120)
    return result


async def test_a_startup_failure_is_one_error_and_undoes_what_started() -> None:
    class Broken(SlowApp):
        async def start(self) -> None:
            raise OSError("cannot open the widget")

    service = Service("broken", ServiceSettings(), CollectorRegistry())
    app = Broken()
    with pytest.raises(OSError, match="widget"):
        await service.start(app)
    assert app.drained and app.stopped
    with pytest.raises(grpc.aio.AioRpcError):
        async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
            await check(channel)
