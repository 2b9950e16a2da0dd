"""``http_get``, the probe ``meshgate up`` and the tests use on the control plane's admin:
every way of not getting an answer is an OSError, including a reply cut short."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import pytest

from meshgate.cli.control_plane import http_get


def _serve_once(reply: bytes) -> Iterator[str]:
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)

    def answer() -> None:
        conn, _ = srv.accept()
        with conn:
            conn.recv(65536)
            conn.sendall(reply)

    t = threading.Thread(target=answer, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{srv.getsockname()[1]}/healthz"
    t.join(5)
    srv.close()


@pytest.fixture
def cut_short() -> Iterator[str]:
    # promises 63 bytes, sends 2, closes: what a control plane killed mid-reply leaves
    yield from _serve_once(b"HTTP/1.1 200 OK\r\nContent-Length: 63\r\n\r\nok")


@pytest.fixture
def cut_short_error() -> Iterator[str]:
    yield from _serve_once(b"HTTP/1.1 503 Unavailable\r\nContent-Length: 63\r\n\r\nno")


@pytest.fixture
def garbage() -> Iterator[str]:
    yield from _serve_once(b"SSH-2.0-OpenSSH\r\n")


def test_an_answer_cut_short_is_an_oserror(cut_short: str) -> None:
    with pytest.raises(OSError, match="answer cut short"):
        http_get(cut_short, 2)


def test_an_error_answer_cut_short_is_an_oserror(cut_short_error: str) -> None:
    with pytest.raises(OSError, match="answer cut short"):
        http_get(cut_short_error, 2)


def test_a_reply_that_is_not_http_is_an_oserror(garbage: str) -> None:
    with pytest.raises(OSError):
        http_get(garbage, 2)
