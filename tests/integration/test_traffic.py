"""Routing policies through real Envoy: splits, stickiness, affinity, rewrites, headers, WebSocket.

One stack (control plane with its canary, one Envoy, the three echo upstreams and the traffic
upstream) serves every test of this module, so the canary has also accepted every compiled form
used here. Each test asserts behaviour a client or an upstream can see, which the config alone
would not produce.
"""

from __future__ import annotations

import http.client
import json
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from meshgate.proxy.envoy_process import free_port

from .harness import Client, ControlPlane, Envoy, Upstreams, wait_until, write_config
from .upstreams_traffic import OP_TEXT, TrafficUpstream, WebSocketClient, ws_accept


def _routes() -> list[dict[str, Any]]:
    return [
        {
            "name": "split",
            "match": {"prefix": "/split/"},
            "split": {
                "variants": [
                    {"service": "alpha", "weight": 90},
                    {"service": "beta", "weight": 10},
                ]
            },
        },
        {
            "name": "by-header",
            "match": {"prefix": "/sticky-header/"},
            "split": {
                "sticky": {"header": "x-variant"},
                "variants": [
                    {"name": "a", "service": "alpha", "weight": 99},
                    {"name": "b", "service": "beta", "weight": 1},
                ],
            },
        },
        {
            "name": "by-cookie",
            "match": {"prefix": "/sticky-cookie/"},
            "split": {
                "sticky": {"cookie": {"name": "mg-variant", "ttl": "1h", "path": "/sticky-cookie"}},
                "variants": [
                    {"name": "blue", "service": "alpha", "weight": 50},
                    {"name": "green", "service": "beta", "weight": 50},
                    {"name": "off", "service": "gamma", "weight": 0},
                ],
            },
        },
        {
            "name": "ab-same-service",
            "match": {"prefix": "/ab/"},
            "split": {
                "sticky": {"cookie": {"name": "ab", "ttl": 0}},
                "variants": [
                    {"name": "x", "service": "traffic", "weight": 1},
                    {"name": "y", "service": "traffic", "weight": 1},
                ],
            },
        },
        {
            "name": "affinity-cookie",
            "match": {"prefix": "/affinity/"},
            "service": "pool",
            "session_affinity": {"cookie": {"name": "mg-session", "ttl": "1h", "path": "/"}},
        },
        {
            "name": "affinity-header",
            "match": {"prefix": "/affinity-header/"},
            "service": "pool",
            "session_affinity": {"header": "x-user"},
        },
        {
            "name": "no-affinity",
            "match": {"prefix": "/pool/"},
            "service": "pool",
        },
        {
            "name": "strip",
            "match": {"prefix": "/api/"},
            "service": "traffic",
            "rewrite": {"prefix": "/v2/", "host": "api.internal"},
        },
        {
            "name": "users",
            "match": {"regex": "^/users/([0-9]+)/profile$"},
            "service": "traffic",
            "rewrite": {
                "regex": {"pattern": "^/users/([0-9]+)/profile$", "substitution": "/profiles/\\1"}
            },
        },
        {
            "name": "whole-path",
            "match": {"regex": "^/old/[a-z]+$"},
            "service": "traffic",
            "rewrite": {"prefix": "/new"},
        },
        {
            "name": "headers",
            "match": {"prefix": "/headers/"},
            "service": "traffic",
            "request_headers": {
                "set": {
                    "x-client-ip": "%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%",
                    "x-discount": "50%%",
                    "x-gateway": "headers-route",
                },
                "add": {"x-tag": "gateway"},
                "remove": ["x-debug"],
            },
            "response_headers": {
                "set": {"cache-control": "no-store"},
                "add": {"x-route": "%ROUTE_NAME%"},
                "remove": ["x-powered-by"],
            },
        },
        {
            "name": "ws",
            "match": {"prefix": "/ws/"},
            "service": "traffic",
            "websocket": {"idle_timeout": "1s"},
        },
        {
            "name": "ws-timeout",
            "match": {"prefix": "/ws-timeout/"},
            "service": "traffic",
            "timeout": "500ms",
            "websocket": {},
        },
        {"name": "plain", "match": {"prefix": "/"}, "service": "traffic"},
    ]


class Gateway:
    def __init__(self, port: int, upstreams: Upstreams, envoy: Envoy) -> None:
        self.port = port
        self.upstreams = upstreams
        self.envoy = envoy

    def client(self) -> Client:
        return Client(self.port)


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    upstreams = Upstreams(["alpha", "beta", "gamma"])
    traffic = TrafficUpstream()
    port = free_port()
    config = {
        "listeners": [
            {
                "name": "public",
                "address": "127.0.0.1",
                "port": port,
                "virtual_hosts": [
                    {
                        "name": "default",
                        "request_headers": {"set": {"x-gateway": "meshgate"}},
                        "response_headers": {"set": {"x-gateway": "meshgate"}},
                        "routes": _routes(),
                    }
                ],
            }
        ],
        "services": [
            *(
                {"name": name, "endpoints": [{"address": "127.0.0.1", "port": p}]}
                for name, p in upstreams.ports.items()
            ),
            {"name": "traffic", "endpoints": [{"address": "127.0.0.1", "port": traffic.port}]},
            {
                "name": "pool",
                "lb_policy": "ring_hash",
                "endpoints": [
                    {"address": "127.0.0.1", "port": p} for p in upstreams.ports.values()
                ],
            },
        ],
    }
    config_file: Path = tmp_path_factory.mktemp("traffic") / "gateway.yaml"
    write_config(config_file, config)
    cp = ControlPlane(config_file)
    envoy = Envoy(cp.xds_port)
    client = Client(port)
    try:
        wait_until(lambda: client.request("/x")[0] == 200, 20, "routes served")
        yield Gateway(port, upstreams, envoy)
    finally:
        client.close()
        envoy.stop()
        cp.stop()
        traffic.stop()
        upstreams.stop()


def _echo(client: Client, path: str, **kw: Any) -> tuple[dict[str, str], dict[str, Any]]:
    status, headers, body = client.request(path, **kw)
    assert status == 200, (status, body)
    return headers, json.loads(body)


# --- splits -----------------------------------------------------------------------------


def test_split_90_10_over_2000_requests(gw: Gateway) -> None:
    client = gw.client()
    seen: Counter[tuple[str, str]] = Counter()
    for _ in range(2000):
        _, echo = _echo(client, "/split/x")
        seen[(echo["upstream"], echo["headers"]["x-meshgate-variant"])] += 1
    client.close()
    # The variant header names the service that answered; no other pairing occurs.
    assert set(seen) == {("alpha", "alpha"), ("beta", "beta")}
    share = seen[("alpha", "alpha")] / 2000
    assert 0.85 <= share <= 0.95, seen


def test_split_variant_is_in_the_access_log(gw: Gateway) -> None:
    client = gw.client()
    ids = {f"variant-log-{i}" for i in range(20)}
    for rid in ids:
        _echo(client, "/split/log", headers={"x-request-id": rid})
    client.close()

    def logged() -> list[dict[str, Any]]:
        lines = [e for e in gw.envoy.access_log() if e.get("request_id") in ids]
        return lines if len(lines) == len(ids) else []

    lines = wait_until(logged, 5, "access log lines")
    assert {e["variant"] for e in lines} <= {"alpha", "beta"}
    assert all(e["variant"] == e["upstream_cluster"] for e in lines)


def test_client_cannot_choose_the_variant_header(gw: Gateway) -> None:
    client = gw.client()
    for _ in range(20):
        _, echo = _echo(client, "/split/x", headers={"x-meshgate-variant": "forged"})
        assert echo["headers"]["x-meshgate-variant"] == echo["upstream"]
    # nor forge it on a route without a split
    _, echo = _echo(client, "/headers/x", headers={"x-meshgate-variant": "forged"})
    assert "x-meshgate-variant" not in {k for k, _ in echo["header_list"]}
    client.close()


def test_sticky_by_header(gw: Gateway) -> None:
    client = gw.client()
    # b has 1 % of the weight, yet a client naming it always gets it, and the upstream knows.
    for _ in range(50):
        _, echo = _echo(client, "/sticky-header/x", headers={"x-variant": "b"})
        assert (echo["upstream"], echo["headers"]["x-meshgate-variant"]) == ("beta", "b")
    for _ in range(20):
        _, echo = _echo(client, "/sticky-header/x", headers={"x-variant": "a"})
        assert (echo["upstream"], echo["headers"]["x-meshgate-variant"]) == ("alpha", "a")
    # An unknown variant name is drawn by weight like no header at all.
    drawn = Counter(
        _echo(client, "/sticky-header/x", headers={"x-variant": "zzz"})[1]["upstream"]
        for _ in range(50)
    )
    assert drawn["alpha"] >= 45
    client.close()


def _variant_cookie(headers: dict[str, str]) -> str:
    [pair, *attrs] = [p.strip() for p in headers["set-cookie"].split(";")]
    assert attrs == ["Max-Age=3600", "Path=/sticky-cookie"]
    name, _, value = pair.partition("=")
    assert name == "mg-variant"
    return value


def test_sticky_by_cookie(gw: Gateway) -> None:
    client = gw.client()
    headers, echo = _echo(client, "/sticky-cookie/x")
    variant = _variant_cookie(headers)
    service = {"blue": "alpha", "green": "beta"}[variant]
    assert (echo["upstream"], echo["headers"]["x-meshgate-variant"]) == (service, variant)
    # The cookie among others keeps the client in its variant; no new cookie is set.
    for i in range(50):
        cookie = f"theme=dark; mg-variant={variant}; n={i}" if i % 2 else f"mg-variant={variant}"
        headers, echo = _echo(client, "/sticky-cookie/x", headers={"cookie": cookie})
        assert (echo["upstream"], echo["headers"]["x-meshgate-variant"]) == (service, variant)
        assert "set-cookie" not in headers
    # Both variants are drawn for clients without a cookie, each told its variant.
    fresh: Counter[tuple[str, str]] = Counter()
    for _ in range(40):
        headers, echo = _echo(client, "/sticky-cookie/x")
        fresh[(_variant_cookie(headers), echo["upstream"])] += 1
    assert set(fresh) == {("blue", "alpha"), ("green", "beta")}
    client.close()


def test_sticky_cookie_of_a_drained_or_unknown_variant_is_redrawn(gw: Gateway) -> None:
    client = gw.client()
    for stale in ("off", "blue2", "xblue"):
        headers, echo = _echo(client, "/sticky-cookie/x", headers={"cookie": f"mg-variant={stale}"})
        assert echo["upstream"] in ("alpha", "beta")
        assert _variant_cookie(headers) in ("blue", "green")
    # A cookie whose name merely ends in the sticky name is not the sticky cookie.
    seen = {
        _echo(client, "/sticky-cookie/x", headers={"cookie": "xmg-variant=green"})[1]["upstream"]
        for _ in range(30)
    }
    assert seen == {"alpha", "beta"}
    client.close()


def test_variant_cookie_is_added_beside_the_upstreams_cookie(gw: Gateway) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=5)
    conn.request("GET", "/ab/x")
    resp = conn.getresponse()
    body = json.loads(resp.read())
    cookies = [v for k, v in resp.getheaders() if k.lower() == "set-cookie"]
    conn.close()
    # Two variants of one service, told apart by the header only; ttl 0: a session cookie.
    variant = dict(body["header_list"])["x-meshgate-variant"]
    assert sorted(cookies) == sorted(["upstream=1; Path=/", f"ab={variant}; Path=/"])


# --- session affinity -------------------------------------------------------------------


def test_session_affinity_cookie_pins_a_client_to_one_endpoint(gw: Gateway) -> None:
    client = gw.client()
    headers, first = _echo(client, "/affinity/x")
    # Envoy generated the cookie (the client had none) with the configured ttl and path.
    cookie = headers["set-cookie"]
    assert cookie.startswith('mg-session="')  # Envoy quotes the hash it generates
    assert "Max-Age=3600" in cookie and "Path=/" in cookie and "HttpOnly" in cookie
    pair = cookie.split(";")[0]
    client.close()
    # 30 requests, each on a new connection, all reach the endpoint the cookie names.
    reached = set()
    for _ in range(30):
        c = gw.client()
        reached.add(_echo(c, "/affinity/x", headers={"cookie": pair})[1]["upstream"])
        c.close()
    assert reached == {first["upstream"]}
    # Without the cookie, new connections spread over the endpoints (Envoy's generated cookie
    # hashes the client's address and port, so each connection gets its own).
    spread = set()
    for _ in range(30):
        c = gw.client()
        spread.add(_echo(c, "/affinity/x")[1]["upstream"])
        c.close()
    assert len(spread) >= 2


def test_session_affinity_by_header(gw: Gateway) -> None:
    for user in ("ann", "bob", "cy"):
        reached = set()
        for _ in range(15):
            c = gw.client()
            reached.add(_echo(c, "/affinity-header/x", headers={"x-user": user})[1]["upstream"])
            c.close()
        assert len(reached) == 1, (user, reached)
    # Without a hash policy the same ring_hash service spreads requests.
    spread = set()
    for _ in range(30):
        c = gw.client()
        spread.add(_echo(c, "/pool/x", headers={"x-user": "ann"})[1]["upstream"])
        c.close()
    assert len(spread) >= 2


# --- rewrites ---------------------------------------------------------------------------


def test_prefix_and_host_rewrite(gw: Gateway) -> None:
    client = gw.client()
    _, echo = _echo(client, "/api/orders/7?full=1", headers={"x-request-id": "rewrite-1"})
    assert echo["path"] == "/v2/orders/7"
    headers = dict(echo["header_list"])
    assert headers["host"] == "api.internal"
    assert headers["x-envoy-original-path"] == "/api/orders/7?full=1"
    client.close()
    # The access log keeps the path the client asked for (Envoy's x-envoy-original-path),
    # without its query string, but the authority is the rewritten one: Envoy rewrites the
    # request headers in place.
    [line] = wait_until(
        lambda: [e for e in gw.envoy.access_log() if e["request_id"] == "rewrite-1"], 5
    )
    assert (line["path"], line["authority"]) == ("/api/orders/7", "api.internal")


def test_regex_rewrite(gw: Gateway) -> None:
    client = gw.client()
    assert _echo(client, "/users/42/profile")[1]["path"] == "/profiles/42"
    client.close()


def test_prefix_rewrite_on_a_regex_route_replaces_the_whole_path(gw: Gateway) -> None:
    client = gw.client()
    assert _echo(client, "/old/page")[1]["path"] == "/new"
    client.close()


# --- header mutation --------------------------------------------------------------------


def test_request_headers_set_add_remove(gw: Gateway) -> None:
    client = gw.client()
    _, echo = _echo(
        client,
        "/headers/x",
        headers={"x-debug": "1", "x-tag": "client", "x-discount": "none", "x-gateway": "forged"},
    )
    pairs = echo["header_list"]
    values = {k: [v for k2, v in pairs if k2 == k] for k, _ in pairs}
    assert values["x-client-ip"] == ["127.0.0.1"]
    assert values["x-discount"] == ["50%"]  # set overwrote the client's; %% is a literal %
    assert values["x-tag"] == ["client", "gateway"]  # add appended
    assert "x-debug" not in values
    # the route's set wins over the virtual host's (most specific wins) ...
    assert values["x-gateway"] == ["headers-route"]
    # ... and routes without their own get the virtual host's
    _, plain = _echo(client, "/api/x", headers={"x-gateway": "forged"})
    assert [v for k, v in plain["header_list"] if k == "x-gateway"] == ["meshgate"]
    client.close()


def test_response_headers_set_add_remove(gw: Gateway) -> None:
    client = gw.client()
    headers, _ = _echo(client, "/headers/x")
    assert headers["cache-control"] == "no-store"  # the upstream sent max-age=60
    assert headers["x-route"] == "headers"
    assert "x-powered-by" not in headers
    assert headers["server-timing"] == "db;dur=5"  # untouched
    assert headers["x-gateway"] == "meshgate"  # the virtual host's
    # Routes without their own mutation keep the upstream's headers.
    headers, _ = _echo(client, "/plain")
    assert headers["x-powered-by"] == "test-upstream"
    assert headers["cache-control"] == "max-age=60"
    client.close()


# --- WebSocket --------------------------------------------------------------------------


def test_websocket_echo_round_trips_through_envoy(gw: Gateway) -> None:
    ws = WebSocketClient(gw.port, "/ws/chat")
    assert ws.status == 101
    assert ws.headers["sec-websocket-accept"] == ws_accept(ws.key)
    for text in ("hello", "x" * 300):
        ws.send_text(text)
        assert ws.receive() == (OP_TEXT, f"echo /ws/chat: {text}".encode())
    ws.close()


def test_websocket_idle_timeout_closes_an_idle_socket(gw: Gateway) -> None:
    ws = WebSocketClient(gw.port, "/ws/idle")
    assert ws.status == 101
    ws.send_text("ping")
    assert ws.receive()[0] == OP_TEXT
    started = time.monotonic()
    ws.sock.settimeout(5)
    assert ws.sock.recv(100) == b""  # Envoy closes the idle stream (idle_timeout: 1s)
    assert 0.5 < time.monotonic() - started < 4
    ws.close()


def test_upgrade_is_refused_on_a_route_without_websocket(gw: Gateway) -> None:
    ws = WebSocketClient(gw.port, "/no-ws/chat")
    assert ws.status == 403
    ws.close()


def test_route_timeout_does_not_cut_a_websocket(gw: Gateway) -> None:
    ws = WebSocketClient(gw.port, "/ws-timeout/x")
    assert ws.status == 101
    for i in range(6):  # 1.2 s in all, the route timeout is 500ms
        time.sleep(0.2)
        ws.send_text(str(i))
        assert ws.receive() == (OP_TEXT, f"echo /ws-timeout/x: {i}".encode())
    ws.close()
