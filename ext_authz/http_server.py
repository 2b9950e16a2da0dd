"""Envoy's HTTP ext_authz protocol, served by a plain asyncio server parsing with httptools.

Envoy sends each request it wants checked as an HTTP request carrying the original method,
path and (allowed) headers, without the body; the answer's status is the verdict: 200 lets
the request through with the identity headers Envoy's ``allowed_upstream_headers`` picks,
anything else is sent to the client as it is (status, JSON body, ``www-authenticate``).

Why not an ASGI framework: a check is a dict lookup and one HMAC, so per-request framework
overhead would dominate, and the protocol needs none of it. What this server guarantees:

* keep-alive and pipelining: requests on a connection are answered in order (the decision
  is synchronous, so each answer is written before the next request is looked at), and a
  client that stops reading pauses reading from it instead of buffering without bound;
* bounded heads: more than ``max_head_bytes`` of request line and headers is refused with
  431 and the connection closed, counted as they arrive, so no header grows without bound;
* malformed HTTP (or an upgrade) is answered 400 and the connection closed; a client that
  disconnects mid-request costs only its connection; nothing a client sends ends the server;
* closing is graceful: after a last answer the server half-closes and discards what the
  client still sends for a moment (:data:`LINGER_SECONDS`), because closing with unread input
  makes the kernel send a reset that can destroy the answer before the client reads it.

The key text is never logged: log lines carry the status, the reason code, the public key id
and the route's policy name, never a header value or the path (a query string may hold a key).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import httptools

from ext_authz.decide import Decision, decide_request
from ext_authz.headers import POLICY_HEADER
from ext_authz.keyring import Keyring

log = logging.getLogger(__name__)

#: Request line and headers of one request, at most.
MAX_HEAD_BYTES = 64 * 1024
#: How long a connection being closed keeps discarding input after its last answer.
LINGER_SECONDS = 2.0

_PHRASES = {
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
}


def response_bytes(
    status: int, headers: tuple[tuple[str, str], ...], body: bytes, close: bool
) -> bytes:
    """One HTTP/1.1 response. Header values come from key records (names, tenants and scopes
    are restricted to printable characters without CR or LF), never from the request."""
    lines = [f"HTTP/1.1 {status} {_PHRASES[status]}"]
    lines += [f"{name}: {value}" for name, value in headers]
    lines.append(f"content-length: {len(body)}")
    if close:
        lines.append("connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def _plain(status: int) -> bytes:
    return response_bytes(
        status, (("content-type", "text/plain"),), _PHRASES[status].encode(), True
    )


@dataclass
class _Request:
    headers: dict[str, str]
    keep_alive: bool


class _Refuse(Exception):
    """Raised inside a parser callback to stop parsing and answer ``status``."""

    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


#: Called after each decision with the decision and the seconds it took (for metrics); it
#: runs on the request path, so it must be quick and must not raise.
DecisionHook = Callable[[Decision, float], None]


class AuthzProtocol(asyncio.Protocol):
    """One client connection (normally one of Envoy's pooled connections)."""

    def __init__(
        self,
        keyring: Keyring,
        clock: Callable[[], float],
        max_head_bytes: int,
        on_decision: DecisionHook | None = None,
    ) -> None:
        self._keyring, self._clock, self._max_head = keyring, clock, max_head_bytes
        self._on_decision = on_decision
        self._transport: asyncio.Transport | None = None
        self._parser = httptools.HttpRequestParser(self)
        self._done: list[_Request] = []
        self._headers: dict[str, str] = {}
        self._in_head = False
        self._message = 0  # which request of the connection is being parsed
        self._head_parsed = 0  # bytes of request line and headers the parser handed us
        self._head_carried = 0  # bytes of later reads spent wholly on the same head
        self._finishing = False  # the last answer is written; input is discarded
        self._linger: asyncio.TimerHandle | None = None

    # -- asyncio.Protocol --------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None  # a request cut short is simply dropped with its connection
        self._done.clear()
        if self._linger is not None:
            self._linger.cancel()

    def pause_writing(self) -> None:
        if self._transport is not None:
            self._transport.pause_reading()  # the client is not reading its answers

    def resume_writing(self) -> None:
        if self._open():
            assert self._transport is not None
            self._transport.resume_reading()

    def _open(self) -> bool:
        return not self._finishing and self._transport is not None

    def data_received(self, data: bytes) -> None:
        if not self._open():
            return
        continuing, message = self._in_head, self._message
        refuse: int | None = None
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserCallbackError as exc:
            cause = exc.__context__
            refuse = cause.status if isinstance(cause, _Refuse) else 500
            if refuse == 500:
                log.error("ext_authz: parser callback failed: %s", type(cause).__name__)
        except (httptools.HttpParserError, httptools.HttpParserUpgrade):
            refuse = 400
        else:
            if continuing and self._in_head and self._message == message:
                # the whole read went to a head still unfinished (a header arriving piece by
                # piece, held inside the parser): count it, or it could grow without bound
                self._head_carried += len(data)
                if self._head_carried > self._max_head:
                    refuse = 431
        if not self._answer_done():
            return
        if refuse is not None:
            self._close_with(_plain(refuse))

    # -- httptools callbacks -----------------------------------------------------------

    def on_message_begin(self) -> None:
        self._message += 1
        self._in_head = True
        self._headers = {}
        self._head_parsed = self._head_carried = 0

    def _count(self, n: int) -> None:
        self._head_parsed += n
        if self._head_parsed > self._max_head:
            raise _Refuse(431)

    def on_url(self, url: bytes) -> None:
        self._count(len(url) + 16)  # the method, the version and the line's CRLF, roughly

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count(len(name) + len(value) + 4)
        key = name.decode("latin-1").lower()
        text = value.decode("latin-1")
        # repeated headers fold into one comma-separated value, as HTTP defines; a repeated
        # key header so becomes malformed rather than "whichever came first"
        old = self._headers.get(key)
        self._headers[key] = text if old is None else f"{old},{text}"

    def on_headers_complete(self) -> None:
        self._in_head = False

    def on_message_complete(self) -> None:
        if self._parser.should_upgrade():  # websocket, h2c or CONNECT: not a check
            raise _Refuse(400)
        self._done.append(_Request(self._headers, self._parser.should_keep_alive()))
        self._headers = {}

    # -- answers -----------------------------------------------------------------------

    def _answer_done(self) -> bool:
        """Answer every request completed so far, in order; False once the connection is
        closing (a request that did not ask for keep-alive, or an internal error)."""
        done, self._done = self._done, []
        for request in done:
            if not self._open():
                return False
            assert self._transport is not None
            started = time.perf_counter()
            try:
                decision = decide_request(request.headers, self._keyring, self._clock())
            except Exception as exc:  # a bug must cost one connection, not the service
                log.error("ext_authz: decision failed: %s", type(exc).__name__)
                self._close_with(_plain(500))
                return False
            if self._on_decision is not None:
                self._on_decision(decision, time.perf_counter() - started)
            self._log(decision, request.headers.get(POLICY_HEADER, ""))
            close = not request.keep_alive
            answer = response_bytes(decision.status, decision.headers, decision.body, close)
            if close:
                self._close_with(answer)
                return False
            self._transport.write(answer)
        return self._open()

    def _close_with(self, payload: bytes) -> None:
        """Write the last answer, half-close, and close for good once the client has closed
        too or :data:`LINGER_SECONDS` have passed."""
        transport = self._transport
        if not self._open() or transport is None:
            return
        self._finishing = True
        transport.write(payload)
        if not transport.can_write_eof():
            transport.close()
            return
        transport.write_eof()
        transport.resume_reading()  # keep draining even if the client had stopped reading
        loop = asyncio.get_running_loop()
        self._linger = loop.call_later(LINGER_SECONDS, transport.close)

    def eof_received(self) -> bool:
        return False  # the client is done: close (after any answer still being written)

    @staticmethod
    def _log(decision: Decision, policy: str) -> None:
        log.debug(
            "ext_authz %d %s key_id=%s policy=%s",
            decision.status,
            decision.reason,
            decision.key_id or "-",
            policy[:128] or "-",
        )


async def serve(
    host: str,
    port: int,
    keyring: Keyring,
    *,
    clock: Callable[[], float] = time.time,
    max_head_bytes: int = MAX_HEAD_BYTES,
    on_decision: DecisionHook | None = None,
) -> asyncio.Server:
    """Start serving HTTP ext_authz checks on ``host``:``port`` (0: any free port) from
    ``keyring``; the caller closes the returned server. ``on_decision`` sees every decision
    and how long it took (metrics)."""
    loop = asyncio.get_running_loop()
    return await loop.create_server(
        lambda: AuthzProtocol(keyring, clock, max_head_bytes, on_decision), host, port
    )
