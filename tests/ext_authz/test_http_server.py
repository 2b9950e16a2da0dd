"""The HTTP ext_authz server over a real loopback socket (no Envoy): verdicts, keep-alive and
pipelining, and every way a client can misbehave without ending the server."""

from __future__ import annotations

import asyncio
import json
import socket
import struct
from collections.abc import AsyncIterator

import pytest

from ext_authz.decide import Decision
from ext_authz.headers import SCOPES_HEADER
from ext_authz.http_server import serve
from ext_authz.keyring import Keyring
from ext_authz.keys.format import mint
from tests.ext_authz.keyring_support import NOW, issue, keyring_of

GOOD = issue(tenant="acme", scopes=("orders:read", "orders:write"))
EXPIRED = issue(expires_at=NOW)
REVOKED = issue(revoked_at=NOW)

Response = tuple[int, dict[str, str], bytes]


def request(
    headers: dict[str, str] | None = None, *, path: str = "/orders", body: bytes = b""
) -> bytes:
    lines = [f"GET {path} HTTP/1.1", "host: authz"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    if body:
        lines.append(f"content-length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


async def read_response(reader: asyncio.StreamReader) -> Response:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    body = await asyncio.wait_for(reader.readexactly(int(headers["content-length"])), 5)
    return status, headers, body


async def closed(reader: asyncio.StreamReader) -> bool:
    try:
        return await asyncio.wait_for(reader.read(1), 5) == b""
    except ConnectionError:
        return True


class Authz:
    def __init__(self, server: asyncio.Server, keyring: Keyring) -> None:
        self.server, self.keyring = server, keyring
        self.port: int = server.sockets[0].getsockname()[1]

    async def connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        return await asyncio.open_connection("127.0.0.1", self.port)

    async def ask(self, raw: bytes) -> Response:
        reader, writer = await self.connect()
        try:
            writer.write(raw)
            return await read_response(reader)
        finally:
            writer.close()


async def _start(max_head_bytes: int = 64 * 1024) -> Authz:
    ring = keyring_of(GOOD, EXPIRED, REVOKED)
    server = await serve("127.0.0.1", 0, ring, clock=lambda: NOW, max_head_bytes=max_head_bytes)
    return Authz(server, ring)


@pytest.fixture
async def authz() -> AsyncIterator[Authz]:
    a = await _start()
    yield a
    a.server.close()
    await a.server.wait_closed()


async def test_an_accepted_key_gets_200_with_the_identity_headers(authz: Authz) -> None:
    status, headers, body = await authz.ask(
        request({"x-api-key": GOOD.text, SCOPES_HEADER: "orders:read"})
    )
    kid = GOOD.record.key_id
    assert (status, body) == (200, b"")
    assert headers["x-meshgate-key-id"] == kid
    assert headers["x-meshgate-subject"] == f"key:{kid}"
    assert headers["x-meshgate-tenant"] == "acme"
    assert headers["x-meshgate-roles"] == "orders:read,orders:write"
    assert authz.keyring.take_last_use() == {kid: NOW}


async def test_bearer_and_apikey_schemes_are_accepted(authz: Authz) -> None:
    for value in (f"Bearer {GOOD.text}", f"ApiKey {GOOD.text}"):
        status, _, _ = await authz.ask(request({"authorization": value}))
        assert status == 200


@pytest.mark.parametrize(
    ("headers", "status", "reason"),
    [
        ({}, 401, "missing_key"),
        ({"authorization": "Bearer a.jwt.token"}, 401, "missing_key"),
        ({"x-api-key": "mgk_nope"}, 401, "malformed_key"),
        ({"x-api-key": mint().text}, 401, "unknown_key"),
        ({"x-api-key": mint(GOOD.record.key_id).text}, 401, "wrong_secret"),
        ({"x-api-key": EXPIRED.text}, 401, "expired_key"),
        ({"x-api-key": REVOKED.text}, 401, "revoked_key"),
        ({"x-api-key": GOOD.text, SCOPES_HEADER: "admin"}, 403, "insufficient_scope"),
    ],
)
async def test_each_denial(authz: Authz, headers: dict[str, str], status: int, reason: str) -> None:
    got, resp_headers, body = await authz.ask(request(headers))
    assert got == status
    error = "unauthorized" if status == 401 else "forbidden"
    assert json.loads(body) == {"error": error, "reason": reason}
    assert resp_headers["content-type"] == "application/json"
    assert ("www-authenticate" in resp_headers) is (status == 401)
    if status == 401:
        assert resp_headers["www-authenticate"] == 'ApiKey realm="meshgate"'
    assert "x-meshgate-subject" not in resp_headers


async def test_keep_alive_serves_several_requests_on_one_connection(authz: Authz) -> None:
    reader, writer = await authz.connect()
    try:
        for i in range(6):
            key = GOOD.text if i % 2 == 0 else "garbage"
            writer.write(request({"x-api-key": key}, body=b"ignored" if i == 3 else b""))
            status, headers, _ = await read_response(reader)
            assert status == (200 if i % 2 == 0 else 401)
            assert "connection" not in headers
    finally:
        writer.close()


async def test_pipelined_requests_are_answered_in_order(authz: Authz) -> None:
    keys = [GOOD.text, "garbage", REVOKED.text, GOOD.text, mint().text]
    raw = b"".join(request({"x-api-key": k}) for k in keys)
    reader, writer = await authz.connect()
    try:
        writer.write(raw[:37])  # one request split across reads, the rest all at once
        await writer.drain()
        await asyncio.sleep(0.05)
        writer.write(raw[37:])
        answers = [await read_response(reader) for _ in keys]
    finally:
        writer.close()
    assert [(s, json.loads(b)["reason"] if b else "ok") for s, _, b in answers] == [
        (200, "ok"),
        (401, "malformed_key"),
        (401, "revoked_key"),
        (200, "ok"),
        (401, "unknown_key"),
    ]


async def test_connection_close_is_honoured(authz: Authz) -> None:
    reader, writer = await authz.connect()
    writer.write(request({"x-api-key": GOOD.text, "connection": "close"}) + request())
    status, headers, _ = await read_response(reader)
    assert (status, headers["connection"]) == (200, "close")
    assert await closed(reader)  # the request after it is not answered
    writer.close()


@pytest.mark.parametrize(
    "raw",
    [
        b"NOT HTTP AT ALL\r\n\r\n",
        b"GET /orders HTTP/1.1\r\nhost: x\r\nno colon here\r\n\r\n",
        b"GET /orders HTTP/9.9\r\n\r\n",
        b"GET / HTTP/1.1\r\nhost: x\r\nconnection: upgrade\r\nupgrade: websocket\r\n\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",  # a TLS ClientHello
    ],
)
async def test_malformed_http_is_400_and_closed(authz: Authz, raw: bytes) -> None:
    reader, writer = await authz.connect()
    writer.write(raw)
    status, headers, _ = await read_response(reader)
    assert (status, headers["connection"]) == (400, "close")
    assert await closed(reader)
    writer.close()
    assert (await authz.ask(request({"x-api-key": GOOD.text})))[0] == 200


async def test_a_bad_request_after_good_ones_still_gets_them_answered(authz: Authz) -> None:
    reader, writer = await authz.connect()
    writer.write(request({"x-api-key": GOOD.text}) + b"BROKEN\r\n\r\n")
    assert (await read_response(reader))[0] == 200
    assert (await read_response(reader))[0] == 400
    assert await closed(reader)
    writer.close()


async def test_oversized_headers_are_431_and_closed(authz: Authz) -> None:
    many = {f"x-filler-{i}": "v" * 1000 for i in range(70)}  # ~70 KiB of headers
    reader, writer = await authz.connect()
    try:
        writer.write(request({"x-api-key": GOOD.text, **many}))
        status, headers, _ = await read_response(reader)
    finally:
        writer.close()
    assert (status, headers["connection"]) == (431, "close")
    assert await closed(reader)
    assert (await authz.ask(request({"x-api-key": GOOD.text})))[0] == 200


async def test_headers_just_under_the_limit_are_served(authz: Authz) -> None:
    many = {f"x-filler-{i}": "v" * 1000 for i in range(60)}
    assert (await authz.ask(request({"x-api-key": GOOD.text, **many})))[0] == 200


async def test_a_header_that_never_ends_is_cut_off() -> None:
    """One header value arriving piece by piece is held inside the parser, where no header
    callback sees it: the server still counts it and refuses it once past the limit."""
    authz = await _start(max_head_bytes=4096)
    reader, writer = await authz.connect()
    answer = asyncio.create_task(read_response(reader))
    try:
        writer.write(b"GET / HTTP/1.1\r\nx-big: ")
        for _ in range(40):  # 20 KiB, unless the answer comes first
            await asyncio.sleep(0.01)
            if answer.done():
                break
            writer.write(b"v" * 512)
        status, headers, _ = await answer
        assert (status, headers["connection"]) == (431, "close")
        assert await closed(reader)
    finally:
        writer.close()
        authz.server.close()
        await authz.server.wait_closed()


async def test_clients_vanishing_mid_request_do_not_end_the_server(authz: Authz) -> None:
    # a head cut short, politely
    _, writer = await authz.connect()
    writer.write(b"GET /orders HTTP/1.1\r\nx-api-key: mgk_")
    await writer.drain()
    writer.close()
    # many requests sent, no answer read, connection reset
    _, writer = await authz.connect()
    writer.write(request({"x-api-key": GOOD.text}) * 200)
    await writer.drain()
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.close()
    # reset in the middle of a head
    _, writer = await authz.connect()
    writer.write(b"GET /orders HTTP/1.1\r\nhost")
    await writer.drain()
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.close()
    await asyncio.sleep(0.1)
    assert authz.server.is_serving()
    assert (await authz.ask(request({"x-api-key": GOOD.text})))[0] == 200


async def test_a_client_that_half_closes_still_gets_its_answers(authz: Authz) -> None:
    reader, writer = await authz.connect()
    writer.write(request({"x-api-key": GOOD.text}) + request({"x-api-key": "nope"}))
    writer.write_eof()
    assert [(await read_response(reader))[0] for _ in range(2)] == [200, 401]
    assert await closed(reader)
    writer.close()


async def test_the_decision_hook_sees_every_decision_and_its_duration() -> None:
    seen: list[tuple[Decision, float]] = []
    ring = keyring_of(GOOD, REVOKED)
    server = await serve(
        "127.0.0.1", 0, ring, clock=lambda: NOW, on_decision=lambda d, s: seen.append((d, s))
    )
    try:
        a = Authz(server, ring)
        await a.ask(request({"x-api-key": GOOD.text}))
        await a.ask(request({"x-api-key": REVOKED.text}))
        await a.ask(request({}))
    finally:
        server.close()
        await server.wait_closed()
    assert [(d.status, d.reason) for d, _ in seen] == [
        (200, "ok"),
        (401, "revoked_key"),
        (401, "missing_key"),
    ]
    assert all(0 <= s < 1 for _, s in seen)
