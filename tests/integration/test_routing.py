"""Routing, local replies, request ids and access logs through real Envoy."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from .harness import Client, ControlPlane, Envoy, wait_until

ROUTES: list[dict[str, Any]] = [
    {"name": "exact", "match": {"path": "/exact"}, "service": "beta"},
    {
        "name": "by-header",
        "match": {"prefix": "/api/", "headers": [{"name": "x-variant", "exact": "gamma"}]},
        "service": "gamma",
    },
    {
        "name": "post-only",
        "match": {"prefix": "/api/", "methods": ["POST", "PUT"]},
        "service": "beta",
    },
    {"name": "orders", "match": {"regex": "^/api/orders/[0-9]+$"}, "service": "gamma"},
    {"name": "api", "match": {"prefix": "/api/"}, "service": "alpha", "timeout": "300ms"},
    {
        "name": "ping",
        "match": {"path": "/ping"},
        "direct_response": {"status": 200, "body": "pong", "content_type": "text/plain"},
    },
]

Stack = Callable[..., tuple[ControlPlane, Envoy]]


def _serving(client: Client) -> bool:
    return client.upstream("/api/x") == "alpha"


def test_routes_reach_the_right_upstream(stack: Stack, listener_port: int) -> None:
    cp, envoy = stack(ROUTES)
    client = Client(listener_port)
    wait_until(lambda: _serving(client), 15, "routes served")

    assert client.upstream("/exact") == "beta"
    assert client.upstream("/exact/more") == "status 404"  # exact is exact
    assert client.upstream("/api/x", headers={"x-variant": "gamma"}) == "gamma"
    assert client.upstream("/api/x", headers={"x-variant": "other"}) == "alpha"
    assert client.upstream("/api/x", method="POST", body=b"{}") == "beta"
    assert client.upstream("/api/x", method="PUT", body=b"{}") == "beta"
    assert client.upstream("/api/x", method="DELETE") == "alpha"
    assert client.upstream("/api/orders/42") == "gamma"
    assert client.upstream("/api/orders/x42") == "alpha"
    status, headers, body = client.request("/ping")
    assert (status, body, headers["content-type"]) == (200, b"pong", "text/plain")

    # the control plane knows this Envoy and its ACKs
    st = cp.status()
    [node] = st["envoys"]
    assert node["node_id"] == "envoy-1"
    assert {t: v["acked_version"] == v["sent_version"] for t, v in node["types"].items()} == {
        "CDS": True,
        "EDS": True,
        "LDS": True,
        "RDS": True,
    }


def test_local_replies_are_json_with_request_id(stack: Stack, listener_port: int) -> None:
    routes = [
        {"name": "slow", "match": {"prefix": "/slow"}, "service": "alpha", "timeout": "200ms"},
        {"name": "nowhere", "match": {"prefix": "/down"}, "service": "down"},
        {"name": "api", "match": {"prefix": "/api/"}, "service": "alpha"},
    ]
    cp, envoy = stack(routes, extra_services=[{"name": "down"}])
    client = Client(listener_port)
    wait_until(lambda: _serving(client), 15, "routes served")

    status, headers, body = client.request("/nope")
    assert status == 404
    assert headers["content-type"] == "application/json"
    doc = json.loads(body)
    assert doc == {
        "error": "route_not_found",
        "message": "no route matches this request",
        "request_id": headers["x-request-id"],
    }

    status, headers, body = client.request("/slow?delay=1")
    assert status == 504
    doc = json.loads(body)
    assert doc["error"] == "response_timeout"
    assert doc["message"] == "the upstream did not answer within the route timeout"
    assert doc["request_id"] == headers["x-request-id"]

    status, headers, body = client.request("/down")
    assert status == 503
    doc = json.loads(body)
    assert doc["error"] == "no_healthy_upstream"
    assert doc["request_id"] == headers["x-request-id"]


def test_request_id_generated_returned_and_logged(stack: Stack, listener_port: int) -> None:
    cp, envoy = stack(ROUTES)
    client = Client(listener_port)
    wait_until(lambda: _serving(client), 15, "routes served")

    status, headers, body = client.request("/api/orders/7")
    generated = headers["x-request-id"]
    assert len(generated) == 36  # a UUID, generated because the client sent none
    assert json.loads(body)["headers"]["x-request-id"] == generated  # the upstream saw it too

    status, headers, _ = client.request("/api/orders/8", headers={"x-request-id": "my-id-1"})
    assert headers["x-request-id"] == "my-id-1"  # kept from a trusted (loopback) client

    def logged() -> list[dict[str, Any]]:
        return [e for e in envoy.access_log() if e["request_id"] in (generated, "my-id-1")]

    entries = wait_until(lambda: len(logged()) == 2 and logged(), 5, "access log lines")
    first = next(e for e in entries if e["request_id"] == generated)
    assert first["route"] == "orders"
    assert first["upstream_cluster"] == "gamma"
    assert first["status"] == 200
    assert first["method"] == "GET" and first["path"] == "/api/orders/7"
    assert isinstance(first["duration_ms"], int)
    assert first["upstream_host"].startswith("127.0.0.1:")
