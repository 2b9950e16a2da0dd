"""Reading a JWKS over real HTTP (a loopback server) and from files: every failure is a
short, safe reason."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

import httpx
import pytest

from tests.support.jwks_server import JwksServer
from tests.support.tokens import SigningKey, jwks_of
from xds_server.jwks.fetch import FetchError, fetch, fetch_url, new_client, read_file
from xds_server.jwks.source import JwksSource

DOC = jwks_of(SigningKey.ec("k1"))


@pytest.fixture
async def client() -> object:
    c = new_client()
    yield c
    await c.aclose()


@pytest.fixture
def idp() -> object:
    with JwksServer(DOC) as server:
        yield server


async def test_the_document_is_fetched(client: httpx.AsyncClient, idp: JwksServer) -> None:
    assert json.loads(await fetch_url(client, idp.url, 2)) == DOC


async def test_an_http_error_says_its_status(client: httpx.AsyncClient, idp: JwksServer) -> None:
    idp.status = 503
    with pytest.raises(FetchError) as info:
        await fetch_url(client, idp.url, 2)
    assert str(info.value) == "HTTP 503 Service Unavailable" and info.value.kind == "failed"


async def test_an_html_page_is_not_keys(client: httpx.AsyncClient, idp: JwksServer) -> None:
    idp.content_type, idp.document = "text/html; charset=utf-8", b"<html>sign in</html>"
    with pytest.raises(FetchError) as info:
        await fetch_url(client, idp.url, 2)
    assert str(info.value) == "answered with content type 'text/html', not JSON"
    assert info.value.kind == "invalid"


async def test_a_huge_answer_is_cut_off(client: httpx.AsyncClient, idp: JwksServer) -> None:
    idp.document = b"x" * 5000
    with pytest.raises(FetchError, match="the answer is 5000 bytes, more than 1000"):
        await fetch_url(client, idp.url, 2, max_bytes=1000)


async def test_a_slow_answer_times_out(client: httpx.AsyncClient, idp: JwksServer) -> None:
    idp.delay = 1.0
    with pytest.raises(FetchError, match=r"read timed out|no complete answer within 0.2s"):
        await fetch_url(client, idp.url, 0.2)


async def test_a_stopped_server_is_unreachable(client: httpx.AsyncClient, idp: JwksServer) -> None:
    url = idp.url
    idp.stop()
    with pytest.raises(FetchError, match=r"^cannot connect"):
        await fetch_url(client, url, 2)
    idp.start()  # the same port again
    assert json.loads(await fetch_url(client, url, 2)) == DOC


async def test_credentials_in_the_url_never_appear_in_the_reason(
    client: httpx.AsyncClient,
) -> None:
    with pytest.raises(FetchError) as info:
        await fetch_url(client, "http://alice:hunter2@127.0.0.1:1/jwks?token=abc", 2)
    assert "hunter2" not in str(info.value) and "abc" not in str(info.value)


def test_a_file_is_read(tmp_path: Path) -> None:
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps(DOC))
    assert json.loads(read_file(str(path))) == DOC


def test_a_fifo_is_refused_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "jwks.json"
    os.mkfifo(fifo)
    with pytest.raises(FetchError, match="is a FIFO \\(named pipe\\), not a regular file"):
        read_file(str(fifo))


@pytest.mark.parametrize(
    ("setup", "reason"),
    [
        (lambda p: None, "file not found"),
        (lambda p: p.write_bytes(b"x" * 2000), "the file is more than 1000 bytes"),
        (lambda p: p.mkdir(), "is a directory, not a regular file"),
    ],
)
def test_file_problems(tmp_path: Path, setup: object, reason: str) -> None:
    path = tmp_path / "jwks.json"
    setup(path)  # type: ignore[operator]
    with pytest.raises(FetchError) as info:
        read_file(str(path), max_bytes=1000)
    assert str(info.value) == reason


async def test_fetch_reads_a_file_source_without_a_client(tmp_path: Path) -> None:
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps(DOC))
    source = JwksSource("corp", "file:jwks.json", None, str(path), 1, 1, 1)
    assert json.loads(await asyncio.wait_for(fetch(None, source), 5)) == DOC
