"""A tiny HTTP/1.1 echo upstream: the quickstart's backend and the tests' upstream.

It answers every request with JSON naming itself, so routing is visible from the client:
``{"upstream": "echo-a", "method": "GET", "path": "/api/x", "headers": {...}}``. Query
parameters ``status=503`` and ``delay=0.5`` make it fail or stall on demand (timeouts, retries),
``pad=2000`` adds that many bytes of padding (compression).
Plain asyncio streams keep it dependency-free and fast enough to never be the bottleneck in a
benchmark of Envoy itself.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
from urllib.parse import parse_qs, urlsplit

_REASONS = {200: "OK", 404: "Not Found", 500: "Internal Server Error", 503: "Service Unavailable"}
MAX_HEADER_BYTES = 64 * 1024
MAX_BODY_BYTES = 16 * 1024 * 1024


async def _read_body(reader: asyncio.StreamReader, headers: dict[str, str]) -> bytes:
    if headers.get("transfer-encoding", "").lower() == "chunked":
        body = bytearray()
        while True:
            size_line = await reader.readuntil(b"\r\n")
            size = int(size_line.split(b";")[0].strip(), 16)
            if size == 0:
                await reader.readuntil(b"\r\n")
                return bytes(body)
            body += await reader.readexactly(size)
            await reader.readexactly(2)
            if len(body) > MAX_BODY_BYTES:
                raise ValueError("body too large")
    length = int(headers.get("content-length", "0") or 0)
    if length > MAX_BODY_BYTES:
        raise ValueError("body too large")
    return await reader.readexactly(length) if length else b""


def _response(status: int, payload: dict[str, object], keep_alive: bool) -> bytes:
    body = json.dumps(payload).encode()
    head = (
        f"HTTP/1.1 {status} {_REASONS.get(status, 'Status')}\r\n"
        f"content-type: application/json\r\ncontent-length: {len(body)}\r\n"
        f"connection: {'keep-alive' if keep_alive else 'close'}\r\n\r\n"
    )
    return head.encode() + body


def make_handler(
    name: str,
) -> object:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
                    return
                lines = head.decode("latin-1").split("\r\n")
                method, target, version = lines[0].split(" ", 2)
                headers: dict[str, str] = {}
                for line in lines[1:]:
                    if ":" in line:
                        k, v = line.split(":", 1)
                        headers[k.strip().lower()] = v.strip()
                body = await _read_body(reader, headers)
                url = urlsplit(target)
                query = parse_qs(url.query)
                status = int(query.get("status", ["200"])[0])
                delay = float(query.get("delay", ["0"])[0])
                if delay > 0:
                    await asyncio.sleep(delay)
                keep_alive = headers.get("connection", "").lower() != "close" and version.endswith(
                    "1.1"
                )
                payload: dict[str, object] = {
                    "upstream": name,
                    "method": method,
                    "path": url.path,
                    "query": url.query,
                    "headers": headers,
                    "body_bytes": len(body),
                }
                pad = min(int(query.get("pad", ["0"])[0]), MAX_BODY_BYTES)
                if pad > 0:  # a bigger (compressible) body on demand
                    payload["padding"] = "meshgate " * (pad // 9 + 1)
                writer.write(_response(status, payload, keep_alive))
                await writer.drain()
                if not keep_alive:
                    return
        except (ConnectionError, ValueError, asyncio.IncompleteReadError):
            return
        except asyncio.CancelledError:  # server shutting down mid-request: just drop it
            return
        finally:
            with contextlib.suppress(Exception):
                writer.close()

    return handle


async def start(name: str, host: str = "127.0.0.1", port: int = 0) -> asyncio.Server:
    """Start serving in the running loop; ``server.sockets[0].getsockname()[1]`` is the port."""
    handler = make_handler(name)
    return await asyncio.start_server(
        handler,  # type: ignore[arg-type]
        host,
        port,
        limit=MAX_HEADER_BYTES,
        reuse_address=True,
    )


async def _main(name: str, host: str, port: int) -> None:
    server = await start(name, host, port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    server.close()
    await server.wait_closed()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="meshgate demo echo upstream")
    parser.add_argument("--name", default="echo")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    asyncio.run(_main(args.name, args.host, args.port))


if __name__ == "__main__":
    main()
