"""Upstreams whose failures a test controls: flaky, failing, slow, unhealthy, or dead.

Each one is a small HTTP/1.1 server on its own asyncio loop in a thread of the test process,
so the test can flip its behaviour and read what it saw (attempts per key, connections,
requests in flight) directly, without another protocol. Behaviour per request comes from the
query string, the rest from attributes:

- ``?key=K&fail=N`` fails the first N requests carrying key K, then answers 200; how it fails
  is ``mode``: ``status`` (answer ``?status=``, default 503), ``reset`` (close the connection
  without answering) or ``slow`` (answer 200 only after ``?delay=`` seconds, default 2).
- ``?delay=S`` delays every answer by S seconds (with no ``fail``).
- ``fail_status`` (attribute) answers every request (except health checks) with that status.
- ``healthy`` (attribute) decides whether ``/healthz`` answers 200 or 503.

Every 200 is JSON ``{"upstream", "path", "attempt"}``: ``attempt`` is the how-manieth request
with this key the upstream has seen, so a client can tell that Envoy retried.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import threading
from collections import Counter
from urllib.parse import parse_qs, urlsplit

from meshgate.proxy.envoy_process import free_port

HEALTH_PATH = "/healthz"


class ResilienceUpstream:
    """One controllable upstream; ``stop()`` kills it (connections refused), ``start()``
    brings it back on the same port."""

    def __init__(self, name: str, port: int | None = None) -> None:
        self.name = name
        self.port = port or free_port()
        self.healthy = True
        self.fail_status: int | None = None
        self.attempts: Counter[str] = Counter()
        self.hits = 0  # requests other than health checks
        self.health_checks = 0
        self.connections = 0  # accepted in total
        self.open_connections = 0
        self.in_flight = 0
        self.max_in_flight = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._reserved: socket.socket | None = None
        self.start()

    def start(self) -> None:
        if self._reserved is not None:
            self._reserved.close()
            self._reserved = None

        async def serve() -> asyncio.Server:
            return await asyncio.start_server(
                self._handle, "127.0.0.1", self.port, reuse_address=True
            )

        self._server = asyncio.run_coroutine_threadsafe(serve(), self._loop).result(5)

    def stop(self) -> None:
        """Close the listening socket and every open connection, like a crashed process.

        The port stays bound (not listening), so connections are refused and no other process
        on this machine can pick it as a "free" port and answer in the dead upstream's place.
        """

        async def close() -> None:
            if self._server is not None:
                self._server.close()
                for writer in list(self._writers):
                    writer.transport.abort()
                await self._server.wait_closed()
                self._server = None

        asyncio.run_coroutine_threadsafe(close(), self._loop).result(5)
        if self._reserved is None:
            self._reserved = socket.socket()
            self._reserved.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self._reserved.bind(("127.0.0.1", self.port))

    def shutdown(self) -> None:
        self.stop()
        if self._reserved is not None:
            self._reserved.close()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop.close()

    @property
    def endpoint(self) -> dict[str, object]:
        return {"address": "127.0.0.1", "port": self.port}

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.open_connections += 1
        self._writers.add(writer)
        try:
            while await self._one_request(reader, writer):
                pass
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        except asyncio.CancelledError:  # loop stopping mid-request: just drop it
            pass
        finally:
            self.open_connections -= 1
            self._writers.discard(writer)
            with contextlib.suppress(Exception):
                writer.close()

    async def _one_request(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> bool:
        """Serve one request; False when the connection is done."""
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError:
            return False
        lines = head.decode("latin-1").split("\r\n")
        target = lines[0].split(" ")[1]
        headers = {
            k.strip().lower(): v.strip()
            for k, _, v in (line.partition(":") for line in lines[1:] if ":" in line)
        }
        length = int(headers.get("content-length", "0") or 0)
        if length:
            await reader.readexactly(length)
        url = urlsplit(target)
        if url.path == HEALTH_PATH:
            self.health_checks += 1
            _write(writer, 200 if self.healthy else 503, {"healthy": self.healthy})
            await writer.drain()
            return True

        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        self.hits += 1
        key = query.get("key", "")
        self.attempts[key] += 1
        attempt = self.attempts[key]
        failing = attempt <= int(query.get("fail", "0"))
        mode = query.get("mode", "status")
        delay = float(query.get("delay", "0"))
        if failing and mode == "reset":
            writer.transport.abort()
            return False
        if mode == "slow":  # only the failing attempts are slow
            delay = (delay or 2.0) if failing else 0.0
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if delay:
                await asyncio.sleep(delay)
        finally:
            self.in_flight -= 1
        if self.fail_status is not None:
            status = self.fail_status
        elif failing and mode == "status":
            status = int(query.get("status", "503"))
        else:
            status = 200
        _write(writer, status, {"upstream": self.name, "path": url.path, "attempt": attempt})
        await writer.drain()
        return True


def _write(writer: asyncio.StreamWriter, status: int, payload: dict[str, object]) -> None:
    body = json.dumps(payload).encode()
    writer.write(
        f"HTTP/1.1 {status} X\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\n\r\n".encode()
        + body
    )
