"""The key text appears in no decision, no log record and no response, whatever the outcome."""

from __future__ import annotations

import asyncio
import logging

import pytest

from ext_authz.decide import decide_request
from ext_authz.headers import POLICY_HEADER, SCOPES_HEADER
from ext_authz.http_server import serve
from ext_authz.keys.format import mint
from tests.ext_authz.keyring_support import NOW, issue, keyring_of

GOOD = issue(scopes=("orders:read",))
REVOKED = issue(revoked_at=NOW)
STRANGER = mint().text
FORGED = mint(GOOD.record.key_id).text
SECRETS = (GOOD.text, REVOKED.text, STRANGER, FORGED)


def _cases() -> list[dict[str, str]]:
    out: list[dict[str, str]] = []
    for text in SECRETS:
        for scopes in ("", "orders:read", "admin"):
            base = {POLICY_HEADER: "partners", SCOPES_HEADER: scopes}
            out.append({**base, "x-api-key": text})
            out.append({**base, "authorization": f"Bearer {text}"})
            out.append({**base, "x-api-key": text + "x"})  # malformed: one character too many
    return out


def _assert_clean(text: str) -> None:
    for secret in SECRETS:
        assert secret not in text
        assert secret[4:-6] not in text  # not even the id and secret without the frame
        assert secret[16:-6] not in text  # nor the secret part alone


def test_no_decision_repr_holds_the_key() -> None:
    ring = keyring_of(GOOD, REVOKED)
    reasons = set()
    for headers in _cases():
        d = decide_request(headers, ring, NOW)
        reasons.add(d.reason)
        _assert_clean(repr(d) + str(d) + d.body.decode() + repr(d.headers))
    assert reasons == {
        "ok",
        "malformed_key",
        "unknown_key",
        "wrong_secret",
        "revoked_key",
        "insufficient_scope",
    }


async def test_no_log_record_or_response_holds_the_key(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    server = await serve("127.0.0.1", 0, keyring_of(GOOD, REVOKED), clock=lambda: NOW)
    port = server.sockets[0].getsockname()[1]
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        for headers in _cases():
            # the key in the path too: a query string is never logged
            lines = [f"GET /orders?api_key={GOOD.text} HTTP/1.1", "host: x"]
            lines += [f"{k}: {v}" for k, v in headers.items()]
            writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            length = int(head.split(b"content-length: ")[1].split(b"\r\n")[0])
            _assert_clean((head + await reader.readexactly(length)).decode())
        writer.write(f"GET / HTTP/1.1\r\nx-api-key: {GOOD.text}\r\nbroken\r\n\r\n".encode())
        _assert_clean((await asyncio.wait_for(reader.read(), 5)).decode())
        writer.close()
    finally:
        server.close()
        await server.wait_closed()
    assert len(caplog.records) >= len(_cases())  # the decisions were logged...
    for record in caplog.records:  # ...and none of them names a key
        _assert_clean(record.getMessage() + repr(record.args) + str(record.exc_text))
