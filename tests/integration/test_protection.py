"""Protection and response shaping through real Envoy: body and header limits, CORS,
compression, security and server headers, the response cache, connection limits, timeouts.

One control plane and one Envoy serve every test of the module (three listeners with
different settings), so the file stays fast; each test reads what the recording upstream saw.
"""

from __future__ import annotations

import gzip
import http.client
import json
import socket
import struct
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from meshgate.proxy.bootstrap import BootstrapParams
from meshgate.proxy.envoy_process import EnvoyProcess, free_port

from .harness import Client, ControlPlane, Envoy, wait_until, write_config
from .upstreams_protection import RecordingUpstream

APP = "https://app.example.com"
CSP = "default-src 'self' https://cdn.example.com/a%20b"


def _listener(name: str, port: int, routes: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "address": "127.0.0.1",
        "port": port,
        "virtual_hosts": [{"name": "default", "routes": routes}],
        **extra,
    }


def gateway_config(main: int, edge: int, tight: int, upstream: int) -> dict[str, Any]:
    main_listener = _listener(
        "main",
        main,
        [
            {"name": "upload", "match": {"prefix": "/upload"}, "service": "rec"},
            {
                "name": "teapot",
                "match": {"path": "/teapot"},
                "direct_response": {"status": 413, "body": "on purpose"},
            },
            {"name": "cached", "match": {"prefix": "/cacheable"}, "service": "rec", "cache": True},
            {"name": "nostore", "match": {"prefix": "/nostore"}, "service": "rec", "cache": True},
            {
                "name": "raw",
                "match": {"prefix": "/raw/"},
                "service": "rec",
                "compression": False,
                "security_headers": {"frame_options": "SAMEORIGIN"},
            },
            {
                "name": "partner",
                "match": {"prefix": "/partner/"},
                "service": "rec",
                "cors": {"allow_origins": ["https://partner.example.net"]},
            },
            {"name": "rest", "match": {"prefix": "/"}, "service": "rec"},
        ],
        limits={"max_request_headers_kb": 8},
        compression={"min_size": 1024},
    )
    main_listener["virtual_hosts"][0]["routes"][0]["max_request_bytes"] = 1024
    main_listener["virtual_hosts"][0]["cors"] = {
        "allow_origins": [APP],
        "allow_origin_regex": [r"https://[a-z]+\.example\.org"],
        "allow_methods": ["GET", "POST", "PUT"],
        "allow_headers": ["x-api-key", "content-type"],
        "expose_headers": ["x-request-id"],
        "allow_credentials": True,
        "max_age": "10m",
    }
    main_listener["virtual_hosts"][0]["security_headers"] = {
        "hsts": {"max_age": "8760h"},
        "content_security_policy": CSP,
    }
    edge_listener = _listener(
        "edge",
        edge,
        [
            {"name": "text", "match": {"prefix": "/text"}, "service": "rec", "compression": True},
            {"name": "rest", "match": {"prefix": "/"}, "service": "rec"},
        ],
        server_header={"mode": "replace", "value": "meshgate"},
        limits={"headers_with_underscores": "drop"},
        timeouts={"request_headers": "1s"},
    )
    tight_listener = _listener(
        "tight",
        tight,
        [{"match": {"prefix": "/"}, "service": "rec"}],
        limits={"max_connections": 2},
    )
    return {
        "listeners": [main_listener, edge_listener, tight_listener],
        "services": [{"name": "rec", "endpoints": [{"address": "127.0.0.1", "port": upstream}]}],
    }


@dataclass
class Gateway:
    main: Client
    edge: Client
    tight_port: int
    upstream: RecordingUpstream
    envoy: Envoy

    def seen(self, path: str) -> list[str]:
        return [f"{s.method} {s.path}" for s in self.upstream.requests(path)]


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    upstream = RecordingUpstream()
    main_port, edge_port, tight_port = free_port(), free_port(), free_port()
    path = tmp_path_factory.mktemp("protection") / "gateway.yaml"
    write_config(path, gateway_config(main_port, edge_port, tight_port, upstream.port))
    cp = ControlPlane(path)
    envoy = Envoy(cp.xds_port)
    main, edge = Client(main_port), Client(edge_port)
    try:
        wait_until(lambda: main.request("/ready")[0] == edge.request("/ready")[0] == 200, 15)
        yield Gateway(main, edge, tight_port, upstream, envoy)
    finally:
        main.close()
        edge.close()
        envoy.stop()
        cp.stop()
        upstream.stop()


def test_oversized_body_gets_json_413_and_never_reaches_upstream(gw: Gateway) -> None:
    status, headers, body = gw.main.request("/upload/big", method="POST", body=b"x" * 2000)
    assert status == 413
    assert headers["content-type"] == "application/json"
    assert json.loads(body) == {
        "error": "request_payload_too_large",
        "message": "the request body is larger than this route accepts",
        "request_id": headers["x-request-id"],
    }
    # Without a content-length the body is counted as it streams in; still refused whole.
    conn = http.client.HTTPConnection("127.0.0.1", gw.main.port, timeout=5)
    conn.request("POST", "/upload/chunked", body=iter([b"y" * 600, b"y" * 600]))
    resp = conn.getresponse()
    assert (resp.status, json.loads(resp.read())["error"]) == (413, "request_payload_too_large")
    conn.close()
    assert gw.seen("/upload") == []

    status, _, _ = gw.main.request("/upload/small", method="POST", body=b"x" * 1000)
    assert status == 200
    [seen] = gw.upstream.requests("/upload")
    assert (seen.path, seen.body_bytes) == ("/upload/small", 1000)
    # No limit on other routes of the listener.
    assert gw.main.request("/other", method="POST", body=b"x" * 5000)[0] == 200


def test_direct_response_with_413_keeps_its_own_body(gw: Gateway) -> None:
    status, headers, body = gw.main.request("/teapot")
    assert (status, body, headers["content-type"]) == (413, b"on purpose", "text/plain")


def test_too_large_headers_get_json_431(gw: Gateway) -> None:
    status, headers, body = gw.main.request("/big-headers", headers={"x-big": "v" * 10_000})
    assert status == 431
    doc = json.loads(body)
    assert doc["error"] == "http1.headers_too_large"
    assert doc["message"] == "the request headers are larger than this listener accepts"
    assert gw.seen("/big-headers") == []
    assert gw.main.request("/big-headers", headers={"x-ok": "v" * 4_000})[0] == 200


def test_cors_preflight_is_answered_by_envoy(gw: Gateway) -> None:
    preflight = {"origin": APP, "access-control-request-method": "PUT"}
    status, headers, _ = gw.main.request("/api/items", method="OPTIONS", headers=preflight)
    assert status == 200
    assert headers["access-control-allow-origin"] == APP
    assert headers["access-control-allow-methods"] == "GET,POST,PUT"
    assert headers["access-control-allow-headers"] == "x-api-key,content-type"
    assert headers["access-control-allow-credentials"] == "true"
    assert headers["access-control-max-age"] == "600"
    assert gw.seen("/api/items") == []  # the upstream never saw the preflight

    regex_origin = {**preflight, "origin": "https://shop.example.org"}
    _, headers, _ = gw.main.request("/api/items", method="OPTIONS", headers=regex_origin)
    assert headers["access-control-allow-origin"] == "https://shop.example.org"

    # An actual cross-origin request gets the allow and expose headers on the response.
    _, headers, _ = gw.main.request("/api/items", headers={"origin": APP})
    assert headers["access-control-allow-origin"] == APP
    assert headers["access-control-expose-headers"] == "x-request-id"


def test_cors_disallowed_origin_gets_no_cors_headers(gw: Gateway) -> None:
    evil = {"origin": "https://evil.example.com", "access-control-request-method": "PUT"}
    _, headers, _ = gw.main.request("/api/evil", method="OPTIONS", headers=evil)
    assert not [h for h in headers if h.startswith("access-control-")]
    _, headers, _ = gw.main.request("/api/evil", headers={"origin": "https://evil.example.com"})
    assert "access-control-allow-origin" not in headers

    # A route's own policy replaces the virtual host's.
    _, headers, _ = gw.main.request("/partner/x", headers={"origin": APP})
    assert "access-control-allow-origin" not in headers
    partner = {"origin": "https://partner.example.net"}
    _, headers, _ = gw.main.request("/partner/x", headers=partner)
    assert headers["access-control-allow-origin"] == "https://partner.example.net"


def test_compressible_response_is_gzip_encoded_when_asked(gw: Gateway) -> None:
    status, headers, body = gw.main.request("/text?size=4000", headers={"accept-encoding": "gzip"})
    assert status == 200
    assert headers["content-encoding"] == "gzip"
    assert "accept-encoding" in headers["vary"].lower()
    plain = gzip.decompress(body)
    assert len(plain) == 4000 and plain.startswith(b"compressible ")
    assert len(body) < 200

    _, headers, body = gw.main.request("/text?size=4000", headers={"accept-encoding": "br"})
    assert headers["content-encoding"] == "br"
    assert len(body) < 200
    # Equal preference: the first of the listener's algorithms (brotli, gzip) wins.
    for equal in ["gzip, br", "br, gzip", "*"]:
        _, headers, _ = gw.main.request("/text?size=4000", headers={"accept-encoding": equal})
        assert headers["content-encoding"] == "br"
    _, headers, _ = gw.main.request(
        "/text?size=4000", headers={"accept-encoding": "br;q=0.5, gzip"}
    )
    assert headers["content-encoding"] == "gzip"


def test_no_compression_when_small_unasked_or_opted_out(gw: Gateway) -> None:
    gz = {"accept-encoding": "gzip"}
    _, headers, body = gw.main.request("/text?size=500", headers=gz)  # below min_size
    assert "content-encoding" not in headers and len(body) == 500
    _, headers, body = gw.main.request("/text?size=4000")  # not asked
    assert "content-encoding" not in headers and len(body) == 4000
    _, headers, body = gw.main.request("/raw/text?size=4000", headers=gz)  # route opts out
    assert "content-encoding" not in headers and len(body) == 4000


def test_route_can_turn_compression_on_without_listener_settings(gw: Gateway) -> None:
    gz = {"accept-encoding": "gzip"}
    _, headers, body = gw.edge.request("/text?size=4000", headers=gz)
    assert headers["content-encoding"] == "gzip" and len(gzip.decompress(body)) == 4000
    _, headers, _ = gw.edge.request("/other/text?size=4000", headers=gz)
    assert "content-encoding" not in headers


def test_security_headers_present_and_override_upstream(gw: Gateway) -> None:
    _, headers, _ = gw.main.request("/framed")  # the upstream says ALLOWALL
    assert headers["x-frame-options"] == "DENY"
    assert headers["strict-transport-security"] == "max-age=31536000; includeSubDomains"
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["referrer-policy"] == "strict-origin-when-cross-origin"
    assert headers["content-security-policy"] == CSP  # the '%' arrived literally

    # Envoy's own replies carry them too.
    _, headers, _ = gw.main.request("/upload/x", method="POST", body=b"x" * 2000)
    assert headers["x-frame-options"] == "DENY"

    # A route's own policy replaces the virtual host's as a whole: no HSTS there.
    _, headers, _ = gw.main.request("/raw/framed")
    assert headers["x-frame-options"] == "SAMEORIGIN"
    assert "strict-transport-security" not in headers


def test_server_header_removed_or_replaced(gw: Gateway) -> None:
    _, headers, _ = gw.main.request("/anything")
    assert "server" not in headers  # the upstream sent "recording-upstream"
    _, headers, _ = gw.main.request("/cacheable/server")
    assert "server" not in headers
    status, headers, _ = gw.main.request("/teapot")
    assert "server" not in headers

    _, headers, _ = gw.edge.request("/anything")
    assert headers["server"] == "meshgate"
    status, headers, _ = gw.edge.request("/x", headers={"x-big": "v" * 70_000})
    assert status == 431 and headers["server"] == "meshgate"


def test_second_identical_get_is_served_from_cache(gw: Gateway) -> None:
    status, headers, body = gw.main.request("/cacheable/a")
    assert (status, body, headers["x-cache"]) == (200, b"fresh", "miss")
    assert "age" not in headers
    status, headers, body = gw.main.request("/cacheable/a")
    assert (status, body, headers["x-cache"]) == (200, b"fresh", "hit")
    assert int(headers["age"]) >= 0
    # Hits go through the filters before the cache: security headers and CORS apply.
    assert headers["x-frame-options"] == "DENY"
    assert gw.seen("/cacheable/a") == ["GET /cacheable/a"]

    _, headers, _ = gw.main.request("/cacheable/b")  # another URL, another entry
    assert headers["x-cache"] == "miss"


def test_no_store_response_is_not_cached(gw: Gateway) -> None:
    for _ in range(2):
        status, headers, body = gw.main.request("/nostore/a")
        assert (status, body, headers["x-cache"]) == (200, b"private", "miss")
    assert gw.seen("/nostore/a") == ["GET /nostore/a"] * 2
    _, headers, _ = gw.main.request("/not-cached-route")
    assert "x-cache" not in headers


def test_headers_with_underscores_rejected_by_default(gw: Gateway) -> None:
    status, headers, body = gw.main.request("/underscore", headers={"x_user": "admin"})
    assert status == 400
    assert json.loads(body)["message"] == "header names with underscores are not accepted here"
    assert gw.seen("/underscore") == []

    # The edge listener drops them instead: the request passes without the header.
    assert gw.edge.request("/underscore", headers={"x_user": "admin", "x-ok": "1"})[0] == 200
    [seen] = gw.upstream.requests("/underscore")
    assert "x_user" not in seen.headers and seen.headers["x-ok"] == "1"


def _connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=3)
    sock.sendall(b"GET /held HTTP/1.1\r\nhost: tight\r\n\r\n")
    return sock


def _answers(sock: socket.socket) -> bool:
    try:
        return sock.recv(4096).startswith(b"HTTP/1.1 200")
    except OSError:
        return False


def test_connections_beyond_max_connections_are_closed(gw: Gateway) -> None:
    held = [_connect(gw.tight_port), _connect(gw.tight_port)]
    try:
        assert all(_answers(s) for s in held)
        extra = _connect(gw.tight_port)
        assert not _answers(extra)  # closed by Envoy without an answer
        extra.close()
        stats = gw.envoy.stats("connection_limit.tight")
        assert stats["connection_limit.tight.limited_connections"] >= 1
    finally:
        for s in held:
            s.close()
    # Once a slot is free, a new connection is served again.
    wait_until(lambda: _answers(_connect(gw.tight_port)), 5, "a free connection slot")


def test_slow_request_headers_are_timed_out(gw: Gateway) -> None:
    with socket.create_connection(("127.0.0.1", gw.edge.port), timeout=5) as sock:
        sock.sendall(b"GET /slow HTTP/1.1\r\nhost: edge\r\n")  # never finishes the headers
        started = time.monotonic()
        reply = sock.recv(4096)
        waited = time.monotonic() - started
    assert reply.startswith(b"HTTP/1.1 408")
    assert 0.5 < waited < 3.0


def _h2_frames(sock: socket.socket, want: int) -> list[tuple[int, int, int, bytes]]:
    """Read HTTP/2 frames until ``want`` have arrived: (type, flags, stream, payload)."""
    data, frames = b"", list[tuple[int, int, int, bytes]]()
    while len(frames) < want:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
        while len(data) >= 9:
            length = int.from_bytes(data[:3], "big")
            if len(data) < 9 + length:
                break
            kind, flags, stream = data[3], data[4], int.from_bytes(data[5:9], "big")
            frames.append((kind, flags, stream & 0x7FFFFFFF, data[9 : 9 + length]))
            data = data[9 + length :]
    return frames


def test_http2_limits_are_advertised(gw: Gateway) -> None:
    with socket.create_connection(("127.0.0.1", gw.main.port), timeout=3) as sock:
        sock.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        frames = _h2_frames(sock, 2)
    settings = next(p for kind, flags, _, p in frames if kind == 0x4 and not flags & 0x1)
    values = dict(struct.unpack(">HI", settings[i : i + 6]) for i in range(0, len(settings), 6))
    assert values[0x3] == 100  # SETTINGS_MAX_CONCURRENT_STREAMS
    assert values[0x4] == 65_536  # SETTINGS_INITIAL_WINDOW_SIZE
    [increment] = [
        int.from_bytes(p, "big") for kind, _, stream, p in frames if kind == 0x8 and stream == 0
    ]
    assert increment + 65_535 == 1_048_576  # the connection window


def test_heap_overload_refuses_requests_instead_of_growing(tmp_path: Path) -> None:
    """The bootstrap's fixed-heap monitor: far over budget, Envoy answers 503 by itself."""
    upstream = RecordingUpstream()
    port = free_port()
    path = tmp_path / "gateway.yaml"
    write_config(
        path,
        {
            "listeners": [_listener("small", port, [{"match": {"prefix": "/"}, "service": "rec"}])],
            "services": [
                {"name": "rec", "endpoints": [{"address": "127.0.0.1", "port": upstream.port}]}
            ],
        },
    )
    cp = ControlPlane(path, validator="none")
    params = BootstrapParams(
        node_id="tiny-heap", xds_port=cp.xds_port, admin_port=free_port(), max_heap_bytes=1 << 20
    )
    envoy = EnvoyProcess(params, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    envoy.start()
    client = Client(port)
    try:
        envoy.wait_live()
        status, _, body = wait_until(lambda: _reply_503(client), 15, "overload 503")
        assert json.loads(body) == {
            "error": "overload",
            "message": "the gateway is overloaded; retry later",
            "request_id": None,
        }
        # The monitor samples every 0.25 s, so the first requests may pass; from then on
        # nothing reaches the upstream.
        before = len(upstream.requests())
        assert client.request("/")[0] == 503
        assert len(upstream.requests()) == before
    finally:
        client.close()
        envoy.stop()
        cp.stop()
        upstream.stop()


def _reply_503(client: Client) -> tuple[int, dict[str, str], bytes] | None:
    reply = client.request("/")
    return reply if reply[0] == 503 else None
