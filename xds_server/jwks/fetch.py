"""Read a JWKS: one HTTP GET (bounded in time and size) or one bounded file read.

Only the transport is here; whether the bytes are a usable key set is
:mod:`xds_server.jwks.document`'s question. Everything that can go wrong becomes a
:class:`FetchError` whose message is safe to log and show: it names the source without a URL's
credentials and never quotes the body.

HTTP uses ``httpx`` (maintained, asyncio-native, the test suite's client already): proxies and
CA bundles come from the usual environment (``HTTPS_PROXY``, ``NO_PROXY``, ``SSL_CERT_FILE``).
Redirects are followed (at most 3), never from ``https`` down to ``http``.
"""

from __future__ import annotations

import asyncio
import os
import stat
from typing import Literal

import httpx

from meshgate.files import file_kind
from meshgate.redact import excerpt, redact_text
from xds_server.jwks.source import JwksSource, safe_url

#: A JWKS is a few kilobytes; an identity provider publishing more is not sending keys.
MAX_JWKS_BYTES = 512 * 1024
MAX_REDIRECTS = 3
_ACCEPT = "application/jwk-set+json, application/json;q=0.9, */*;q=0.1"

FailureKind = Literal["failed", "invalid"]


class FetchError(Exception):
    """The source could not be read; ``kind`` is ``failed`` (unreachable, an HTTP error, a
    timeout) or ``invalid`` (it answered, with something that is not a JWKS)."""

    def __init__(self, message: str, kind: FailureKind = "failed") -> None:
        super().__init__(message)
        self.kind: FailureKind = kind


def new_client() -> httpx.AsyncClient:
    """The manager's one client (connections are reused across refreshes)."""
    return httpx.AsyncClient(
        follow_redirects=True,
        max_redirects=MAX_REDIRECTS,
        headers={"accept": _ACCEPT, "user-agent": "meshgate-control-plane"},
    )


async def fetch(client: httpx.AsyncClient | None, source: JwksSource) -> bytes:
    """The body at ``source``'s URL (``client`` is needed then), or the bytes of its file."""
    if source.url is not None:
        assert client is not None
        return await fetch_url(client, source.url, source.timeout)
    assert source.file is not None
    try:
        async with asyncio.timeout(source.timeout):  # a hung network file system
            return await asyncio.to_thread(read_file, source.file)
    except TimeoutError:
        raise FetchError(f"the file could not be read within {source.timeout:g}s") from None


async def fetch_url(
    client: httpx.AsyncClient, url: str, timeout: float, max_bytes: int = MAX_JWKS_BYTES
) -> bytes:
    """GET ``url`` within ``timeout`` seconds in all (connect, headers and body)."""
    try:
        async with asyncio.timeout(timeout):
            async with client.stream("GET", url, timeout=timeout) as resp:
                return await _body(url, resp, max_bytes)
    except TimeoutError:
        raise FetchError(f"no complete answer within {timeout:g}s") from None
    except httpx.TooManyRedirects:
        raise FetchError(f"more than {MAX_REDIRECTS} redirects") from None
    except httpx.HTTPError as exc:
        raise FetchError(_transport_reason(exc, url)) from None


async def _body(url: str, resp: httpx.Response, max_bytes: int) -> bytes:
    if url.startswith("https:") and resp.url.scheme != "https":
        raise FetchError(f"redirected from https to {safe_url(str(resp.url))}; refused")
    if resp.status_code != 200:
        reason = excerpt(resp.reason_phrase or "", 40)
        raise FetchError(f"HTTP {resp.status_code} {reason}".rstrip())
    ctype = resp.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype and "json" not in ctype and ctype not in ("text/plain", "application/octet-stream"):
        # an HTML login page or error page of a proxy in the way: not keys
        raise FetchError(f"answered with content type {excerpt(ctype, 40)!r}, not JSON", "invalid")
    declared = resp.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_bytes:
        raise FetchError(f"the answer is {declared} bytes, more than {max_bytes}", "invalid")
    chunks: list[bytes] = []
    size = 0
    async for chunk in resp.aiter_bytes():
        size += len(chunk)
        if size > max_bytes:
            raise FetchError(f"the answer is more than {max_bytes} bytes", "invalid")
        chunks.append(chunk)
    return b"".join(chunks)


def _transport_reason(exc: httpx.HTTPError, url: str) -> str:
    """What went wrong, without the URL's credentials (httpx texts may quote the URL)."""
    kinds: dict[type[Exception], str] = {
        httpx.ConnectError: "cannot connect",
        httpx.ConnectTimeout: "connect timed out",
        httpx.ReadTimeout: "read timed out",
        httpx.RemoteProtocolError: "broken HTTP answer",
        httpx.UnsupportedProtocol: "unsupported URL",
    }
    kind = kinds.get(type(exc), type(exc).__name__)
    text = str(exc).replace(url, safe_url(url))
    detail = excerpt(redact_text(text), 160) if text else ""
    return f"{kind}: {detail}" if detail else kind


def read_file(path: str, max_bytes: int = MAX_JWKS_BYTES) -> bytes:
    """A regular file's bytes, at most ``max_bytes``; never opens a FIFO or a device (see
    :mod:`meshgate.files` for why)."""
    try:
        st = os.stat(path)
        if not stat.S_ISREG(st.st_mode):
            raise FetchError(f"is {file_kind(st.st_mode)}, not a regular file", "invalid")
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise FetchError("file not found") from None
    except PermissionError:
        raise FetchError("permission denied (check the file's owner and mode)") from None
    except (OSError, ValueError) as exc:
        raise FetchError(f"cannot open the file: {getattr(exc, 'strerror', None) or exc}") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise FetchError("is not a regular file", "invalid")
        data = b""
        while len(data) <= max_bytes:
            chunk = os.read(fd, max_bytes + 1 - len(data))
            if not chunk:
                break
            data += chunk
    except OSError as exc:
        raise FetchError(f"cannot read the file: {exc.strerror or exc}") from None
    finally:
        os.close(fd)
    if len(data) > max_bytes:
        raise FetchError(f"the file is more than {max_bytes} bytes", "invalid")
    return data
