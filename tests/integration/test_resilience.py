"""Retries, outlier detection, circuit breakers, health checks, load balancing and connection
pools, enforced by real Envoy against upstreams that fail on demand.

Each test asserts behaviour a client or an upstream can see (a retried request succeeds, an
ejected endpoint gets no traffic, a burst gets 503s), so it fails if the feature is not
compiled, not just if the config is wrong. Intervals are short to keep the file fast.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from .harness import Client, ControlPlane, Envoy, wait_until
from .upstreams_resilience import ResilienceUpstream

Stack = Callable[..., tuple[ControlPlane, Envoy]]
Factory = Callable[[str], ResilienceUpstream]


@pytest.fixture
def controllable() -> Iterator[Factory]:
    made: list[ResilienceUpstream] = []

    def make(name: str) -> ResilienceUpstream:
        up = ResilienceUpstream(name)
        made.append(up)
        return up

    yield make
    for up in made:
        up.shutdown()


def _route(name: str, service: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "match": {"prefix": f"/{name}"}, "service": service, **extra}


def _service(name: str, *ups: ResilienceUpstream, **extra: Any) -> dict[str, Any]:
    return {"name": name, "endpoints": [u.endpoint for u in ups], **extra}


def _json(body: bytes) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(body)
    return data


def _cluster_config(envoy: Envoy, name: str) -> dict[str, Any]:
    dump = json.loads(envoy.process.admin_get("/config_dump?resource=dynamic_active_clusters"))
    for entry in dump["configs"]:
        if entry["cluster"]["name"] == name:
            cluster: dict[str, Any] = entry["cluster"]
            return cluster
    raise KeyError(name)


def _upstreams_of(client: Client, path: str, n: int) -> Counter[str]:
    seen: Counter[str] = Counter()
    for _ in range(n):
        status, _, body = client.request(path)
        seen[_json(body)["upstream"] if status == 200 else f"status {status}"] += 1
    return seen


def test_flaky_upstream_is_retried(stack: Stack, listener_port: int, controllable: Factory) -> None:
    flaky = controllable("flaky")
    fast_backoff = {"base_interval": "5ms", "max_interval": "20ms"}
    routes = [
        _route(
            "retry",
            "flaky",
            retries={"retry_on": ["5xx", "reset"], "num_retries": 3, "backoff": fast_backoff},
        ),
        _route(
            "codes",
            "flaky",
            retries={
                "retry_on": ["retriable-status-codes"],
                "retriable_status_codes": [409],
                "backoff": fast_backoff,
            },
        ),
        _route(
            "per-try",
            "flaky",
            timeout="5s",
            retries={"per_try_timeout": "200ms", "backoff": fast_backoff},
        ),
        _route("inherit", "flaky-default"),
        _route("off", "flaky-default", retries={"num_retries": 0}),
        _route("plain", "flaky"),
    ]
    services = [
        _service("flaky", flaky),
        _service("flaky-default", flaky, retries={"num_retries": 1, "backoff": fast_backoff}),
    ]
    cp, envoy = stack(routes, extra_services=services)
    client = Client(listener_port)
    wait_until(lambda: client.request("/plain?key=warmup")[0] == 200, 15, "routes served")

    def get(path: str) -> tuple[int, dict[str, Any]]:
        status, _, body = client.request(path)
        return status, _json(body)

    # Two 503s, then success: the client sees only the success, the upstream saw 3 attempts.
    assert get("/retry?key=a&fail=2") == (
        200,
        {"upstream": "flaky", "path": "/retry", "attempt": 3},
    )
    assert flaky.attempts["a"] == 3
    # Connections closed without an answer are retried too ("reset").
    assert get("/retry?key=b&fail=2&mode=reset")[1]["attempt"] == 3
    # Retries run out: 1 try + 3 retries, then the upstream's own 503 reaches the client.
    status, doc = get("/retry?key=c&fail=10")
    assert (status, flaky.attempts["c"]) == (503, 4)
    # Only the listed status codes are retried on that route.
    assert get("/codes?key=d&fail=1&status=409") == (
        200,
        {"upstream": "flaky", "path": "/codes", "attempt": 2},
    )
    assert get("/codes?key=e&fail=1&status=503")[0] == 503
    assert flaky.attempts["e"] == 1
    # A try that hangs is cut at per_try_timeout and retried, well within the route timeout.
    started = time.monotonic()
    assert get("/per-try?key=f&fail=1&mode=slow&delay=3")[1]["attempt"] == 2
    assert time.monotonic() - started < 2
    # A service's retries are the default of its routes; num_retries 0 on a route turns it off.
    assert get("/inherit?key=g&fail=1")[1]["attempt"] == 2
    assert get("/off?key=h&fail=1")[0] == 503
    assert flaky.attempts["h"] == 1

    # Without retries the client sees every failure, including Envoy's own 503 for a reset.
    assert get("/plain?key=i&fail=1")[0] == 503
    status, headers, body = client.request("/plain?key=j&fail=1&mode=reset")
    assert status == 503
    assert _json(body)["error"].startswith("upstream_reset_before_response_started")
    assert (flaky.attempts["i"], flaky.attempts["j"]) == (1, 1)

    stats = envoy.stats("cluster.flaky.")
    assert stats["cluster.flaky.upstream_rq_retry"] >= 8
    # Both services are retried, so both carry the automatic retry budget, accepted by Envoy.
    for name in ("flaky", "flaky-default"):
        [thresholds] = _cluster_config(envoy, name)["circuit_breakers"]["thresholds"]
        assert thresholds["retry_budget"] == {
            "budget_percent": {"value": 20},
            "min_retry_concurrency": 3,
        }
    client.close()


def test_outlier_detection_ejects_the_failing_endpoint(
    stack: Stack, listener_port: int, controllable: Factory
) -> None:
    good, bad = controllable("good"), controllable("bad")
    bad.fail_status = 503
    good_gw, bad_gw = controllable("good-gw"), controllable("bad-gw")
    bad_gw.fail_status = 502
    outlier = {"interval": "1s", "base_ejection_time": "30s", "max_ejection_percent": 50}
    services = [
        _service("pool", good, bad, outlier_detection={**outlier, "consecutive_5xx": 3}),
        _service(
            "gw-pool",
            good_gw,
            bad_gw,
            outlier_detection={**outlier, "consecutive_5xx": None, "consecutive_gateway_errors": 2},
        ),
    ]
    good_dead, dead = controllable("good-dead"), controllable("dead")
    dead.stop()
    good_500, bad_500 = controllable("good-500"), controllable("bad-500")
    bad_500.fail_status = 500
    gateway_only = {**outlier, "consecutive_5xx": None, "consecutive_gateway_errors": 2}
    services += [
        _service("dead-pool", good_dead, dead, outlier_detection=gateway_only),
        _service("app-errors", good_500, bad_500, outlier_detection=gateway_only),
    ]
    routes = [
        _route("pool", "pool"),
        _route("gw", "gw-pool"),
        _route("dead", "dead-pool"),
        _route("app-errors", "app-errors"),
    ]
    cp, envoy = stack(routes, extra_services=services)
    client = Client(listener_port)
    wait_until(lambda: client.request("/pool")[0] == 200, 15, "routes served")

    # Round robin alternates until the failing endpoint has failed 3 times in a row ...
    _upstreams_of(client, "/pool", 10)
    assert bad.hits == 3
    # ... then it is ejected and every request goes to the healthy one.
    assert _upstreams_of(client, "/pool", 20) == {"good": 20}
    assert bad.hits == 3
    stats = envoy.stats("cluster.pool.outlier_detection.")
    assert stats["cluster.pool.outlier_detection.ejections_enforced_consecutive_5xx"] == 1

    # The gateway-error detector is enforced too (Envoy's own default would only count it):
    # a 502 and a refused connection count, a 500 does not.
    _upstreams_of(client, "/gw", 8)
    assert bad_gw.hits == 2
    assert _upstreams_of(client, "/gw", 10) == {"good-gw": 10}
    seen = _upstreams_of(client, "/dead", 8)
    assert seen["status 503"] == 2
    assert _upstreams_of(client, "/dead", 10) == {"good-dead": 10}
    assert set(_upstreams_of(client, "/app-errors", 20)) == {"good-500", "status 500"}
    client.close()


def _burst(port: int, path: str, n: int) -> list[tuple[int, bytes]]:
    """``n`` concurrent requests, each on its own connection."""
    results: list[tuple[int, bytes]] = []
    lock = threading.Lock()

    def one() -> None:
        client = Client(port)
        status, _, body = client.request(path)
        client.close()
        with lock:
            results.append((status, body))

    threads = [threading.Thread(target=one) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert len(results) == n
    return results


def test_circuit_breaker_rejects_a_burst_with_json_503(
    stack: Stack, listener_port: int, controllable: Factory
) -> None:
    queued, capped = controllable("queued"), controllable("capped")
    services = [
        # One connection, one request waiting for it: the rest of a burst overflows the queue.
        _service(
            "queued", queued, circuit_breakers={"max_connections": 1, "max_pending_requests": 1}
        ),
        # One request in flight at a time, whatever the connections.
        _service("capped", capped, circuit_breakers={"max_requests": 1}),
    ]
    cp, envoy = stack(
        [_route("queued", "queued"), _route("capped", "capped")], extra_services=services
    )
    warm = Client(listener_port)
    wait_until(lambda: warm.request("/queued")[0] == 200, 15, "routes served")
    assert warm.request("/capped")[0] == 200
    warm.close()

    for name, stat in (
        ("queued", "upstream_rq_pending_overflow"),
        ("capped", "upstream_rq_active_overflow"),
    ):
        results = _burst(listener_port, f"/{name}?delay=0.5", 8)
        statuses = Counter(status for status, _ in results)
        assert statuses[200] >= 1, name
        assert statuses[503] >= 4, name  # failed fast, not queued behind the slow ones
        assert statuses[200] + statuses[503] == 8, name
        for status, body in results:
            if status == 503:
                assert _json(body)["error"] == "upstream_reset_before_response_started{overflow}"
                assert _json(body)["message"] == (
                    "circuit breaker open: too many concurrent requests to this service"
                )
        counter = f"cluster.{name}.{stat}"
        assert envoy.stats(counter)[counter] >= 1
    # max_requests is exact; a connection limit still lets each Envoy worker thread open one.
    assert capped.max_in_flight == 1
    assert queued.max_in_flight <= 2


def test_health_check_takes_a_failing_endpoint_out_and_back(
    stack: Stack, listener_port: int, controllable: Factory
) -> None:
    a, b = controllable("a"), controllable("b")
    check = {
        "path": "/healthz",
        "interval": "100ms",
        "timeout": "200ms",
        "unhealthy_threshold": 2,
        "healthy_threshold": 2,
    }
    cp, envoy = stack(
        [_route("hc", "checked")], extra_services=[_service("checked", a, b, health_check=check)]
    )
    client = Client(listener_port)
    wait_until(lambda: _upstreams_of(client, "/hc", 4) == {"a": 2, "b": 2}, 15, "both serve")
    assert b.health_checks >= 1

    # The health path fails: after 2 failed checks (about 0.2 s) b gets no traffic, although
    # it still answers real requests (only active health checking can know).
    b.healthy = False
    wait_until(lambda: _upstreams_of(client, "/hc", 4) == {"a": 4}, 3, "b taken out")
    assert _upstreams_of(client, "/hc", 20) == {"a": 20}
    # It passes again: after 2 good checks it is back in rotation.
    b.healthy = True
    wait_until(lambda: _upstreams_of(client, "/hc", 4)["b"] >= 1, 3, "b back")

    # The process dies: checks fail to connect, so b is taken out; requests stop failing.
    b.stop()
    wait_until(lambda: _upstreams_of(client, "/hc", 4) == {"a": 4}, 3, "dead b taken out")
    assert _upstreams_of(client, "/hc", 20) == {"a": 20}
    b.start()
    wait_until(lambda: _upstreams_of(client, "/hc", 4)["b"] >= 1, 3, "restarted b back")
    client.close()


def test_lb_policies_are_accepted_and_balance(
    stack: Stack, listener_port: int, controllable: Factory
) -> None:
    one, two = controllable("one"), controllable("two")
    policies = ["least_request", "ring_hash", "maglev", "random"]
    services = [_service(p.replace("_", "-"), one, two, lb_policy=p) for p in policies]
    routes = [_route(p.replace("_", "-"), p.replace("_", "-")) for p in policies]
    # The hash-based policies pin a client by a header (session affinity, see routing.md).
    routes.insert(
        0,
        _route(
            "sticky",
            "ring-hash",
            session_affinity={"header": "x-user"},
        ),
    )
    cp, envoy = stack(routes, extra_services=services)
    client = Client(listener_port)
    wait_until(lambda: client.request("/random")[0] == 200, 15, "routes served")

    expected = {p.replace("_", "-"): p.upper() for p in policies}
    for name, enum in expected.items():
        cluster = _cluster_config(envoy, name)
        assert cluster.get("lb_policy", "ROUND_ROBIN") == enum
        assert set(_upstreams_of(client, f"/{name}", 40)) == {"one", "two"}

    # Ring hash with a hash policy: one user always reaches the same endpoint ...
    for user in ("u1", "u2", "u3"):
        seen = {
            _json(client.request("/sticky", headers={"x-user": user})[2])["upstream"]
            for _ in range(10)
        }
        assert len(seen) == 1
    # ... and different users spread over both.
    owners = {
        _json(client.request("/sticky", headers={"x-user": f"user-{i}"})[2])["upstream"]
        for i in range(30)
    }
    assert owners == {"one", "two"}
    client.close()


def test_connection_pool_limits_and_idle_timeout(
    stack: Stack, listener_port: int, controllable: Factory
) -> None:
    per_request, reused, idle = (
        controllable("per-request"),
        controllable("reused"),
        controllable("idle"),
    )
    services = [
        _service("per-request", per_request, connection_pool={"max_requests_per_connection": 1}),
        _service("reused", reused),
        _service("idle", idle, connection_pool={"idle_timeout": "300ms"}),
        # HTTP/2 and pool settings share one HttpProtocolOptions: Envoy must accept the merge.
        {
            "name": "h2-pooled",
            "protocol": "http2",
            "connection_pool": {"idle_timeout": "30s", "max_requests_per_connection": 1000},
            "endpoints": [per_request.endpoint],
        },
    ]
    routes = [_route(s["name"], s["name"]) for s in services]
    cp, envoy = stack(routes, extra_services=services)
    client = Client(listener_port)
    wait_until(lambda: client.request("/reused")[0] == 200, 15, "routes served")
    assert "common_http_protocol_options" in str(_cluster_config(envoy, "h2-pooled"))

    for _ in range(5):
        assert client.request("/per-request")[0] == 200
        assert client.request("/reused")[0] == 200
    assert per_request.connections == 5  # one upstream connection per request
    assert reused.connections == 1  # the default pool keeps reusing one

    assert client.request("/idle")[0] == 200
    wait_until(lambda: idle.open_connections == 0, 3, "idle upstream connection closed")
    time.sleep(0.5)
    assert reused.open_connections == 1  # Envoy's default idle timeout is an hour
    client.close()
