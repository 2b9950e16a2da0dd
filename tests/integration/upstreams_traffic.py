"""An upstream for the routing tests: an HTTP echo that keeps repeated headers, and WebSocket.

The demo echo folds headers into a dict, so an ``add`` (append) that produces a second header
line would be invisible; this one answers with every header line in order. It also sends
response headers of its own (``x-powered-by``, ``server-timing``, ``cache-control``) for the
gateway to remove or override, and it speaks just enough WebSocket (RFC 6455: the handshake and
unfragmented frames) to echo text messages, so an upgrade through Envoy can be seen end to end.
Plain asyncio streams on a thread of the test process; no dependency.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import os
import socket
import struct
import threading
from urllib.parse import urlsplit

from meshgate.proxy.envoy_process import free_port

#: RFC 6455 section 1.3: the server proves it read the key by hashing it with this GUID.
WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
OP_TEXT, OP_CLOSE = 0x1, 0x8
#: Headers the gateway is asked to remove, override or keep beside its own in the tests.
UPSTREAM_RESPONSE_HEADERS = (
    ("x-powered-by", "test-upstream"),
    ("server-timing", "db;dur=5"),
    ("cache-control", "max-age=60"),
    ("set-cookie", "upstream=1; Path=/"),
)


def ws_accept(key: str) -> str:
    return base64.b64encode(hashlib.sha1((key + WS_GUID).encode()).digest()).decode()


def encode_frame(opcode: int, payload: bytes, mask: bool) -> bytes:
    """One final frame; clients must mask what they send, servers must not (RFC 6455 5.1)."""
    head = bytes([0x80 | opcode])
    mask_bit = 0x80 if mask else 0
    n = len(payload)
    if n < 126:
        head += bytes([mask_bit | n])
    elif n < 1 << 16:
        head += bytes([mask_bit | 126]) + struct.pack("!H", n)
    else:
        head += bytes([mask_bit | 127]) + struct.pack("!Q", n)
    if not mask:
        return head + payload
    key = os.urandom(4)
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


async def read_frame(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    b0, b1 = await reader.readexactly(2)
    n = b1 & 0x7F
    if n == 126:
        (n,) = struct.unpack("!H", await reader.readexactly(2))
    elif n == 127:
        (n,) = struct.unpack("!Q", await reader.readexactly(8))
    key = await reader.readexactly(4) if b1 & 0x80 else b""
    data = await reader.readexactly(n)
    if key:
        data = bytes(b ^ key[i % 4] for i, b in enumerate(data))
    return b0 & 0x0F, data


async def _websocket(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, key: str, path: str
) -> None:
    writer.write(
        (
            "HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: Upgrade\r\n"
            f"sec-websocket-accept: {ws_accept(key)}\r\n\r\n"
        ).encode()
    )
    await writer.drain()
    while True:
        opcode, data = await read_frame(reader)
        if opcode == OP_CLOSE:
            writer.write(encode_frame(OP_CLOSE, data[:2], mask=False))
            await writer.drain()
            return
        if opcode == OP_TEXT:
            writer.write(encode_frame(OP_TEXT, f"echo {path}: ".encode() + data, mask=False))
            await writer.drain()


async def _handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, name: str) -> None:
    try:
        while True:
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except (asyncio.IncompleteReadError, ConnectionError):
                return
            lines = head.decode("latin-1").split("\r\n")
            method, target, _ = lines[0].split(" ", 2)
            header_list = [
                [k.strip().lower(), v.strip()]
                for k, _, v in (ln.partition(":") for ln in lines[1:] if ":" in ln)
            ]
            headers = dict(header_list)
            path = urlsplit(target).path
            if headers.get("upgrade", "").lower() == "websocket":
                await _websocket(reader, writer, headers["sec-websocket-key"], path)
                return
            length = int(headers.get("content-length", "0") or 0)
            if length:
                await reader.readexactly(length)
            body = json.dumps(
                {"upstream": name, "method": method, "path": path, "header_list": header_list}
            ).encode()
            extra = "".join(f"{k}: {v}\r\n" for k, v in UPSTREAM_RESPONSE_HEADERS)
            writer.write(
                (
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                    f"content-length: {len(body)}\r\n{extra}\r\n"
                ).encode()
                + body
            )
            await writer.drain()
    except (ConnectionError, asyncio.IncompleteReadError):
        return
    finally:
        with contextlib.suppress(Exception):
            writer.close()


class TrafficUpstream:
    """The server above on a free loopback port, served from a thread of the test process."""

    def __init__(self, name: str = "traffic") -> None:
        self.name = name
        self.port = free_port()
        self._loop = asyncio.new_event_loop()
        self._server: asyncio.Server | None = None
        started = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(started,), daemon=True)
        self._thread.start()
        if not started.wait(10):
            raise RuntimeError("traffic upstream did not start")

    def _run(self, started: threading.Event) -> None:
        asyncio.set_event_loop(self._loop)

        async def serve() -> None:
            self._server = await asyncio.start_server(
                lambda r, w: _handle(r, w, self.name), "127.0.0.1", self.port
            )

        self._loop.run_until_complete(serve())
        started.set()
        self._loop.run_forever()

    def stop(self) -> None:
        async def close() -> None:
            if self._server is not None:
                self._server.close()
            for task in asyncio.all_tasks():
                if task is not asyncio.current_task():
                    task.cancel()

        asyncio.run_coroutine_threadsafe(close(), self._loop).result(5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)


class WebSocketClient:
    """A blocking RFC 6455 client over a plain socket: handshake, text messages, close."""

    def __init__(self, port: int, path: str, host: str = "localhost") -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall(
            (
                f"GET {path} HTTP/1.1\r\nhost: {host}\r\nupgrade: websocket\r\n"
                f"connection: Upgrade\r\nsec-websocket-key: {self.key}\r\n"
                "sec-websocket-version: 13\r\n\r\n"
            ).encode()
        )
        self._buf = b""
        head = self._read_until(b"\r\n\r\n").decode("latin-1").split("\r\n")
        self.status = int(head[0].split(" ")[1])
        self.headers = {
            k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in head[1:])
        }

    def _read_until(self, marker: bytes) -> bytes:
        while marker not in self._buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed during the handshake")
            self._buf += chunk
        head, _, self._buf = self._buf.partition(marker)
        return head

    def _read_exactly(self, n: int) -> bytes:
        while len(self._buf) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed mid-frame")
            self._buf += chunk
        data, self._buf = self._buf[:n], self._buf[n:]
        return data

    def send_text(self, text: str) -> None:
        self.sock.sendall(encode_frame(OP_TEXT, text.encode(), mask=True))

    def receive(self) -> tuple[int, bytes]:
        b0, b1 = self._read_exactly(2)
        n = b1 & 0x7F
        if n == 126:
            (n,) = struct.unpack("!H", self._read_exactly(2))
        elif n == 127:
            (n,) = struct.unpack("!Q", self._read_exactly(8))
        return b0 & 0x0F, self._read_exactly(n)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.sendall(encode_frame(OP_CLOSE, struct.pack("!H", 1000), mask=True))
        self.sock.close()
