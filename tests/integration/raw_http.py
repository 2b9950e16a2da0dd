"""Clients that send requests exactly as written: HTTP/1.1 over a plain socket and HTTP/2
(cleartext, prior knowledge) with the ``h2`` state machine, its checks switched off.

``http.client`` and friends normalise what attack tests need to get wrong on purpose: a
lower-case method, a header twice, a path with ``#``, an upper-case HTTP/2 header name.
"""

from __future__ import annotations

import socket
from collections.abc import Sequence
from dataclasses import dataclass, field

import h2.config
import h2.connection
import h2.events

Headers = Sequence[tuple[str, str]]


@dataclass(frozen=True)
class Reply:
    """A response, or how the connection ended without one (``status`` 0)."""

    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    #: For status 0: "reset", "goaway", "closed".
    error: str = ""


def http1(
    port: int,
    path: str,
    headers: Headers = (),
    method: str = "GET",
    host: str = "127.0.0.1",
    family: socket.AddressFamily = socket.AF_INET,
) -> Reply:
    """One request on a fresh connection, the request line and headers sent as given."""
    lines = [f"{method} {path} HTTP/1.1", "host: gateway", "connection: close"]
    lines += [f"{name}: {value}" for name, value in headers]
    data = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.settimeout(5)
        sock.connect((host, port))
        sock.sendall(data)
        raw = b""
        while chunk := sock.recv(65536):
            raw += chunk
            reply = _complete(raw, method)
            if reply is not None:
                # Done: Envoy waits a second for the client to close first after a reply
                # that closes the connection (delayed_close_timeout).
                return reply
    return _complete(raw, method) or Reply(0, error="closed")


def _complete(raw: bytes, method: str) -> Reply | None:
    """The reply in ``raw``, once all of it is there (by its content-length)."""
    head, sep, body = raw.partition(b"\r\n\r\n")
    if not sep:
        return None
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    length = 0 if method.upper() == "HEAD" else int(headers.get("content-length", "0"))
    if len(body) < length:
        return None
    return Reply(int(status_line.split()[1]), headers, body)


def http2(port: int, path: str, headers: Headers = (), method: str = "GET") -> Reply:
    """One request on a fresh HTTP/2 connection; header names and values are sent unchecked."""
    config = h2.config.H2Configuration(
        client_side=True,
        validate_outbound_headers=False,
        normalize_outbound_headers=False,
        validate_inbound_headers=False,
    )
    conn = h2.connection.H2Connection(config)
    pseudo = [(":method", method), (":scheme", "http"), (":authority", "gateway"), (":path", path)]
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        conn.initiate_connection()
        stream = conn.get_next_available_stream_id()
        conn.send_headers(stream, [*pseudo, *headers], end_stream=True)
        sock.sendall(conn.data_to_send())
        status, reply_headers, body = 0, {}, b""
        try:
            while data := sock.recv(65536):
                for event in conn.receive_data(data):
                    if isinstance(event, h2.events.ResponseReceived):
                        reply_headers = {_text(k): _text(v) for k, v in event.headers}
                        status = int(reply_headers[":status"])
                    elif isinstance(event, h2.events.DataReceived):
                        body += event.data
                        conn.acknowledge_received_data(event.flow_controlled_length, stream)
                    elif isinstance(event, h2.events.StreamEnded):
                        return Reply(status, reply_headers, body)
                    elif isinstance(event, h2.events.StreamReset):
                        return Reply(0, error="reset")
                    elif isinstance(event, h2.events.ConnectionTerminated):
                        return Reply(0, error="goaway")
                sock.sendall(conn.data_to_send())
        except ConnectionResetError:
            return Reply(0, error="reset")
    return Reply(0, error="closed")


def _text(value: str | bytes) -> str:
    return value.decode("latin-1") if isinstance(value, bytes) else value
