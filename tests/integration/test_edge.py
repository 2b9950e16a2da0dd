"""Identity at the edge through real Envoy: who the client is, IP rules, the x-meshgate-* strip,
and an access log that names the client and never holds a query string.

One control plane and one Envoy serve every test of the module. Its listeners differ only in
whom they trust: ``peer`` and ``peer6`` (IPv4 and IPv6 loopback) trust no proxy, ``hops``
trusts one proxy in front (the test plays that proxy: the right-most ``x-forwarded-for`` entry
is what it says the client is), ``cidrs`` trusts proxies by address (loopback and 10/8), and
``untrusted`` trusts a network the test is not in. Every client here is really 127.0.0.1 or
::1; the addresses in ``x-forwarded-for`` are the ones a client would like to be.
"""

from __future__ import annotations

import http.client
import itertools
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from meshgate.proxy.envoy_process import free_port

from .harness import ControlPlane, Envoy, Upstreams, wait_until, write_config

ADMIN_HOST = "admin.example.com"
TOKEN = "tok-5ecret-never-logged"
_ids = itertools.count()


def _echo_route(**extra: Any) -> dict[str, Any]:
    return {"match": {"prefix": "/"}, "service": "echo", **extra}


def gateway_config(ports: dict[str, int], upstream: int) -> dict[str, Any]:
    def listener(name: str, address: str = "127.0.0.1", **extra: Any) -> dict[str, Any]:
        return {"name": name, "address": address, "port": ports[name], **extra}

    peer = listener(
        "peer",
        virtual_hosts=[
            {
                "name": "default",
                "routes": [
                    {
                        "name": "local-denied",
                        "match": {"prefix": "/local-denied/"},
                        "service": "echo",
                        "ip_rules": {"deny": ["127.0.0.0/8"]},
                    },
                    {
                        "name": "elsewhere-only",
                        "match": {"prefix": "/elsewhere-only/"},
                        "service": "echo",
                        "ip_rules": {"allow": ["10.0.0.0/8", "198.51.100.0/24"]},
                    },
                    {
                        "name": "local-only",
                        "match": {"prefix": "/local-only/"},
                        "service": "echo",
                        "ip_rules": {"allow": ["127.0.0.1"]},
                    },
                    {
                        "name": "old",
                        "match": {"prefix": "/old/"},
                        "service": "echo",
                        "rewrite": {"prefix": "/new/"},
                    },
                    _echo_route(name="rest"),
                ],
            }
        ],
    )
    peer6 = listener(
        "peer6",
        address="::1",
        virtual_hosts=[
            {
                "name": "default",
                "ip_rules": {"allow": ["::1", "127.0.0.1"]},
                "routes": [
                    {
                        "name": "v6-denied",
                        "match": {"prefix": "/v6-denied/"},
                        "service": "echo",
                        "ip_rules": {"deny": ["::1"]},
                    },
                    {
                        "name": "v4-only",
                        "match": {"prefix": "/v4-only/"},
                        "service": "echo",
                        "ip_rules": {"allow": ["127.0.0.0/8"]},
                    },
                    _echo_route(name="rest"),
                ],
            }
        ],
    )
    hops = listener(
        "hops",
        client_address={"trusted_hops": 1},
        ip_rules={"deny": ["203.0.113.0/24", "10.66.0.0/16", "2001:db8:bad::/48"]},
        virtual_hosts=[
            {
                "name": "admin",
                "domains": [ADMIN_HOST],
                "ip_rules": {"allow": ["10.0.0.0/8", "2001:db8::/32"]},
                "routes": [
                    {
                        "name": "ops",
                        "match": {"prefix": "/ops/"},
                        "service": "echo",
                        "ip_rules": {"allow": ["10.1.0.0/16"], "deny": ["10.1.2.3"]},
                    },
                    _echo_route(name="admin-rest"),
                ],
            },
            {
                "name": "default",
                "routes": [
                    {
                        "name": "v6",
                        "match": {"prefix": "/v6/"},
                        "service": "echo",
                        "ip_rules": {"allow": ["2001:db8::/32"]},
                    },
                    _echo_route(name="rest"),
                ],
            },
        ],
    )
    cidrs = listener(
        "cidrs",
        client_address={"trusted_cidrs": ["127.0.0.0/8", "10.0.0.0/8"]},
        ip_rules={"deny": ["203.0.113.0/24"]},
        virtual_hosts=[{"name": "default", "routes": [_echo_route(name="rest")]}],
    )
    untrusted = listener(
        "untrusted",
        client_address={"trusted_cidrs": ["10.0.0.0/8"]},
        ip_rules={"deny": ["127.0.0.0/8"]},
        virtual_hosts=[{"name": "default", "routes": [_echo_route(name="rest")]}],
    )
    return {
        "listeners": [peer, peer6, hops, cidrs, untrusted],
        "services": [{"name": "echo", "endpoints": [{"address": "127.0.0.1", "port": upstream}]}],
    }


@dataclass(frozen=True)
class Reply:
    status: int
    headers: dict[str, str]
    body: dict[str, Any]
    request_id: str


@dataclass
class Gateway:
    ports: dict[str, int]
    envoy: Envoy

    def request(
        self,
        listener: str,
        path: str,
        xff: str | None = None,
        host: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> Reply:
        """One request on a fresh connection, with a request id of its own (for the log)."""
        address = "::1" if listener == "peer6" else "127.0.0.1"
        request_id = f"edge-{next(_ids)}"
        sent = {"x-request-id": request_id, **(headers or {})}
        if xff is not None:
            sent["x-forwarded-for"] = xff
        if host is not None:
            sent["host"] = host
        conn = http.client.HTTPConnection(address, self.ports[listener], timeout=5)
        try:
            conn.request("GET", path, headers=sent)
            resp = conn.getresponse()
            raw = resp.read()
            reply_headers = {k.lower(): v for k, v in resp.getheaders()}
        finally:
            conn.close()
        body = json.loads(raw) if raw else {}
        return Reply(resp.status, reply_headers, body, request_id)

    def log_line(self, reply: Reply) -> dict[str, Any]:
        [line] = wait_until(
            lambda: [e for e in self.envoy.access_log() if e["request_id"] == reply.request_id],
            5,
            f"access log line of {reply.request_id}",
        )
        return line


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    upstreams = Upstreams(["echo"])
    names = ["peer", "peer6", "hops", "cidrs", "untrusted"]
    ports = {name: free_port() for name in names}
    path = tmp_path_factory.mktemp("edge") / "gateway.yaml"
    write_config(path, gateway_config(ports, upstreams.ports["echo"]))
    cp = ControlPlane(path)
    envoy = Envoy(cp.xds_port)
    gateway = Gateway(ports, envoy)
    try:
        wait_until(
            lambda: all(
                gateway.request(name, "/ready", xff="198.51.100.1").status in (200, 403)
                for name in names
            ),
            15,
            "every listener",
        )
        yield gateway
    finally:
        envoy.stop()
        cp.stop()
        upstreams.stop()


def _denied(reply: Reply) -> bool:
    """A 403 from the IP rules, with the JSON body that says so (never the upstream's)."""
    if reply.status != 403:
        return False
    assert reply.headers["content-type"] == "application/json"
    assert reply.body["error"] == "ip_denied"
    assert reply.body["request_id"] == reply.headers["x-request-id"] == reply.request_id
    assert "upstream" not in reply.body
    return True


def _served(reply: Reply) -> bool:
    return reply.status == 200 and reply.body["upstream"] == "echo"


# --- who the client is ------------------------------------------------------------------------

SPOOFS = [None, "10.1.1.1", "198.51.100.1, 10.1.1.1", "not-an-ip", "10.1.1.1,198.51.100.7"]


@pytest.mark.parametrize("xff", SPOOFS)
def test_without_a_trusted_proxy_the_client_is_the_peer(gw: Gateway, xff: str | None) -> None:
    # trusted_hops 0: whatever the client writes in x-forwarded-for, it is 127.0.0.1
    assert _denied(gw.request("peer", "/local-denied/x", xff=xff))
    assert _denied(gw.request("peer", "/elsewhere-only/x", xff=xff))
    served = gw.request("peer", "/local-only/x", xff=xff)
    assert _served(served)
    line = gw.log_line(served)
    assert (line["client"], line["peer"]) == ("127.0.0.1", "127.0.0.1")


@pytest.mark.parametrize(
    ("xff", "client"),
    [
        # the proxy in front appends the address it saw; entries left of it are the client's
        ("198.51.100.1", "198.51.100.1"),
        ("203.0.113.9, 198.51.100.1", "198.51.100.1"),
        ("10.1.5.5, 203.0.113.9, 198.51.100.1", "198.51.100.1"),
        ("198.51.100.1, 203.0.113.9", "203.0.113.9"),
        ("2001:db8::5", "2001:db8::5"),
        (None, "127.0.0.1"),  # no x-forwarded-for: the peer
    ],
)
def test_one_trusted_hop_believes_the_proxy_only(gw: Gateway, xff: str | None, client: str) -> None:
    reply = gw.request("hops", "/whoami", xff=xff)
    assert _denied(reply) if client.startswith("203.0.113.") else _served(reply)
    line = gw.log_line(reply)
    assert (line["client"], line["peer"]) == (client, "127.0.0.1")


@pytest.mark.parametrize(
    ("xff", "client"),
    [
        ("198.51.100.1", "198.51.100.1"),
        # trusted hops (10/8, loopback) are skipped from the right; the first other is the client
        ("198.51.100.1, 10.1.1.1", "198.51.100.1"),
        ("6.6.6.6, 203.0.113.9, 10.1.1.1, 127.0.0.5", "203.0.113.9"),
        ("203.0.113.9, 198.51.100.1, 10.1.1.1", "198.51.100.1"),
        (None, "127.0.0.1"),
    ],
)
def test_trusted_cidrs_skip_trusted_hops(gw: Gateway, xff: str | None, client: str) -> None:
    reply = gw.request("cidrs", "/whoami", xff=xff)
    assert _denied(reply) if client.startswith("203.0.113.") else _served(reply)
    line = gw.log_line(reply)
    assert (line["client"], line["peer"]) == (client, "127.0.0.1")


@pytest.mark.parametrize("xff", SPOOFS)
def test_a_peer_outside_the_trusted_cidrs_cannot_use_xff(gw: Gateway, xff: str | None) -> None:
    # 127.0.0.0/8 is denied on this listener; no x-forwarded-for gets the client past that
    reply = gw.request("untrusted", "/x", xff=xff)
    assert _denied(reply)
    assert gw.log_line(reply)["client"] == "127.0.0.1"


# --- IP rules ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "path", "client", "allowed"),
    [
        (ADMIN_HOST, "/ops/x", "10.1.5.5", True),  # in every allow list
        (ADMIN_HOST, "/ops/x", "10.1.2.3", False),  # the route's deny wins over its allow
        (ADMIN_HOST, "/ops/x", "10.9.9.9", False),  # outside the route's allow list
        (ADMIN_HOST, "/ops/x", "2001:db8::1", False),  # in the vhost's list, not the route's
        (ADMIN_HOST, "/panel", "10.9.9.9", True),  # the vhost's allow list only
        (ADMIN_HOST, "/panel", "2001:db8::1", True),
        (ADMIN_HOST, "/panel", "198.51.100.1", False),  # outside the vhost's allow list
        (ADMIN_HOST, "/panel", "10.66.1.1", False),  # the listener's deny beats the vhost's allow
        (ADMIN_HOST, "/panel", "2001:db8:bad::1", False),
        (None, "/v6/x", "2001:db8:7::1", True),
        (None, "/v6/x", "2001:db9::1", False),
        (None, "/v6/x", "10.1.5.5", False),
        (None, "/public", "198.51.100.1", True),  # only the listener's rules apply here
        (None, "/public", "10.66.0.1", False),
    ],
)
def test_rules_of_every_level_apply(
    gw: Gateway, host: str | None, path: str, client: str, allowed: bool
) -> None:
    reply = gw.request("hops", path, xff=client, host=host)
    assert _served(reply) if allowed else _denied(reply)


def test_a_spoofed_entry_cannot_pass_a_deny(gw: Gateway) -> None:
    # a denied client behind the proxy puts an allowed address first: the proxy's entry counts
    assert _denied(gw.request("hops", "/panel", xff="10.1.5.5, 10.66.1.1", host=ADMIN_HOST))
    assert _denied(gw.request("hops", "/x", xff="198.51.100.1, 203.0.113.50"))
    assert _denied(gw.request("cidrs", "/x", xff="198.51.100.1, 203.0.113.50, 10.0.0.1"))


@pytest.mark.parametrize(
    ("path", "allowed"),
    [("/anything", True), ("/v6-denied/x", False), ("/v4-only/x", False)],
)
def test_ipv6_clients(gw: Gateway, path: str, allowed: bool) -> None:
    reply = gw.request("peer6", path, xff="127.0.0.1")
    assert _served(reply) if allowed else _denied(reply)
    assert (gw.log_line(reply)["client"], gw.log_line(reply)["peer"]) == ("::1", "::1")


def test_denials_are_counted_by_the_ip_filter(gw: Gateway) -> None:
    before = gw.envoy.stats("http.hops.rbac")
    assert _denied(gw.request("hops", "/x", xff="203.0.113.1"))
    after = wait_until(
        lambda: (
            s
            if (s := gw.envoy.stats("http.hops.rbac")).get("http.hops.rbac.ip_rules.denied", 0)
            > before.get("http.hops.rbac.ip_rules.denied", 0)
            else None
        ),
        5,
    )
    assert after["http.hops.rbac.ip_rules.denied"] >= 1


# --- client-sent x-meshgate-* headers ---------------------------------------------------------

FORGED = {
    "X-Meshgate-Subject": "admin",
    "x-meshgate-roles": "root",
    "X-MESHGATE-TENANT": "other",
    "x-meshgate-issuer": "mine",
    "X-MeshGate-Anything-Else": "1",
    "x-meshgate-variant": "forged",
}


@pytest.mark.parametrize(
    ("listener", "path", "host", "xff"),
    [
        ("peer", "/anything", None, None),
        ("peer", "/local-only/x", None, None),  # a route with IP rules of its own
        ("peer6", "/anything", None, None),
        ("hops", "/ops/x", ADMIN_HOST, "10.1.5.5"),
        ("cidrs", "/anything", None, "198.51.100.1"),
    ],
)
def test_client_sent_meshgate_headers_never_reach_the_upstream(
    gw: Gateway, listener: str, path: str, host: str | None, xff: str | None
) -> None:
    headers = {**FORGED, "x-meshgatekeeper": "kept", "x-other": "kept"}
    reply = gw.request(listener, path, xff=xff, host=host, headers=headers)
    assert _served(reply)
    seen = reply.body["headers"]
    assert not [name for name in seen if name.lower().startswith("x-meshgate-")]
    # only the prefix is stripped, nothing else the client sent
    assert (seen["x-meshgatekeeper"], seen["x-other"]) == ("kept", "kept")


# --- the access log ---------------------------------------------------------------------------


def test_the_access_log_never_holds_the_query(gw: Gateway) -> None:
    query = f"?access_token={TOKEN}&page=2"
    served = gw.request("peer", f"/reports/q{query}")
    denied = gw.request("peer", f"/local-denied/q{query}")
    rewritten = gw.request("peer", f"/old/q{query}")
    assert _served(served) and _denied(denied) and _served(rewritten)
    assert rewritten.body["path"] == "/new/q"
    assert [gw.log_line(r)["path"] for r in (served, denied, rewritten)] == [
        "/reports/q",
        "/local-denied/q",
        "/old/q",  # the path the client sent, before the rewrite
    ]
    assert TOKEN not in Path(gw.envoy.stdout.name).read_text()
