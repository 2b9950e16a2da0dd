"""An upstream for the protection tests that remembers every request it was sent.

The echo upstream answers with JSON only; these tests need responses of a chosen size and type
(compression), with cache headers (caching), with a ``server`` and security headers of its own
(to see the gateway replace them), and above all a record of what reached the upstream (a body
refused with 413 must never arrive). Plain asyncio streams on a thread of the test process keep
that record in memory, where the test can read it directly.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from dataclasses import dataclass
from email.utils import formatdate
from urllib.parse import parse_qs, urlsplit

from meshgate.proxy.envoy_process import free_port


@dataclass(frozen=True)
class Seen:
    """One request as the upstream received it."""

    method: str
    path: str
    body_bytes: int
    headers: dict[str, str]
    #: Every header line in order, repeated names included (``headers`` keeps the last).
    header_lines: tuple[tuple[str, str], ...] = ()
    query: str = ""


_KINDS = ("text", "cacheable", "nostore", "framed")


def _body_for(path: str, query: dict[str, list[str]]) -> tuple[int, dict[str, str], bytes]:
    """What to answer, by the last path segment naming a kind of response (``/raw/text/x``)."""
    kind = next((seg for seg in reversed(path.split("/")) if seg in _KINDS), "")
    size = int(query.get("size", ["0"])[0])
    if kind == "text":
        return 200, {"content-type": "text/plain"}, (b"compressible " * (size // 13 + 1))[:size]
    if kind == "cacheable":
        return 200, {"content-type": "text/plain", "cache-control": "public, max-age=60"}, b"fresh"
    if kind == "nostore":
        return 200, {"content-type": "text/plain", "cache-control": "no-store"}, b"private"
    if kind == "framed":
        # A header the gateway's security policy must override.
        return 200, {"content-type": "text/plain", "x-frame-options": "ALLOWALL"}, b"framed"
    return 200, {"content-type": "text/plain"}, b"ok"


class RecordingUpstream:
    """HTTP/1.1 server on a free loopback port; ``seen`` lists every request in arrival order."""

    def __init__(self) -> None:
        self.port = free_port()
        self.seen: list[Seen] = []
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._server: asyncio.Server | None = None
        started = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(started,), daemon=True)
        self._thread.start()
        if not started.wait(5):
            raise RuntimeError("recording upstream did not start")

    def _run(self, started: threading.Event) -> None:
        asyncio.set_event_loop(self._loop)
        self._server = self._loop.run_until_complete(
            asyncio.start_server(self._handle, "127.0.0.1", self.port)
        )
        started.set()
        self._loop.run_forever()

    def requests(self, path_prefix: str = "/") -> list[Seen]:
        with self._lock:
            return [s for s in self.seen if s.path.startswith(path_prefix)]

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError, ValueError):
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                method, target, _ = lines[0].split(" ", 2)
                pairs = tuple(
                    (k.strip().lower(), v.strip())
                    for k, _, v in (ln.partition(":") for ln in lines[1:] if ":" in ln)
                )
                headers = dict(pairs)
                body = await self._read_body(reader, headers)
                url = urlsplit(target)
                with self._lock:
                    self.seen.append(Seen(method, url.path, len(body), headers, pairs, url.query))
                query = parse_qs(url.query)
                await asyncio.sleep(float(query.get("delay", ["0"])[0]))
                status, extra, payload = _body_for(url.path, query)
                head_lines = [
                    f"HTTP/1.1 {status} OK",
                    "server: recording-upstream",
                    # Caches need the date to judge freshness; real servers always send it.
                    f"date: {formatdate(usegmt=True)}",
                ]
                head_lines += [f"{k}: {v}" for k, v in extra.items()]
                head_lines.append(f"content-length: {len(payload)}")
                writer.write(("\r\n".join(head_lines) + "\r\n\r\n").encode() + payload)
                await writer.drain()
        writer.close()

    @staticmethod
    async def _read_body(reader: asyncio.StreamReader, headers: dict[str, str]) -> bytes:
        if headers.get("transfer-encoding", "").lower() == "chunked":
            body = bytearray()
            while True:
                size = int((await reader.readuntil(b"\r\n")).split(b";")[0].strip(), 16)
                if size == 0:
                    await reader.readuntil(b"\r\n")
                    return bytes(body)
                body += await reader.readexactly(size)
                await reader.readexactly(2)
        length = int(headers.get("content-length", "0") or 0)
        return await reader.readexactly(length) if length else b""

    def stop(self) -> None:
        async def _close() -> None:
            if self._server is not None:
                self._server.close()

        asyncio.run_coroutine_threadsafe(_close(), self._loop).result(5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
