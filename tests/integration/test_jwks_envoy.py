"""Keys that survive the identity provider, through real Envoy.

A JWKS server the test controls (:class:`tests.support.jwks_server.JwksServer`) publishes the
issuer's keys; the control plane fetches them and gives them to Envoy; tokens signed by the
test go through Envoy to a demo upstream. The provider is stopped, restarted, rotates keys and
withdraws them; the control plane is killed and restarted with it down.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.jwks_server import JwksServer
from tests.support.tokens import SigningKey, in_, jwks_of

from .conftest import base_config
from .harness import Client, ControlPlane, Envoy, Upstreams, wait_until, write_config

ISS = "https://login.corp.example"
K1, K2 = SigningKey.ec("k1"), SigningKey.ec("k2")


def token(key: SigningKey) -> str:
    return key.sign({"iss": ISS, "aud": "api", "sub": "alice", "exp": in_(3600), "iat": in_(-5)})


def gateway(
    upstreams: Upstreams, port: int, url: str, refresh: str = "1s", max_stale: str = "1h"
) -> dict[str, Any]:
    cfg = base_config(
        upstreams,
        port,
        [
            {
                "match": {"path": "/healthz"},
                "direct_response": {"status": 200, "body": "ok"},
                "public": True,
            },
            {"match": {"prefix": "/"}, "service": "alpha"},
        ],
    )
    cfg["listeners"][0]["virtual_hosts"][0]["policy"] = "staff"
    cfg["issuers"] = [
        {
            "name": "corp",
            "issuer": ISS,
            "audiences": "api",
            "algorithms": ["ES256"],
            "jwks": {"url": url, "refresh": refresh, "max_stale": max_stale, "timeout": "1s"},
        }
    ]
    cfg["policies"] = [{"name": "staff", "issuers": ["corp"]}]
    return cfg


class Gateway:
    """One control plane (with a private state directory) and one Envoy, restartable."""

    def __init__(self, tmp: Path, config: dict[str, Any], port: int) -> None:
        self.path = tmp / "gateway.yaml"
        write_config(self.path, config)
        self.state = tmp / "state"
        self.cp = ControlPlane(self.path, extra_args=("--state-dir", str(self.state)))
        self.envoy: Envoy | None = Envoy(self.cp.xds_port)
        self.client = Client(port)
        wait_until(lambda: self.client.request("/healthz")[0] == 200, 15, "Envoy serving")

    def status_of(self, key: SigningKey) -> int:
        code, _, body = self.client.request("/", headers={"authorization": f"Bearer {token(key)}"})
        if code == 401:
            assert json.loads(body)["error"] == "unauthorized"
        return code

    def eventually(self, key: SigningKey, code: int, timeout: float = 15, what: str = "") -> None:
        wait_until(lambda: self.status_of(key) == code, timeout, what or f"{key.kid} -> {code}")

    def issuer(self) -> dict[str, Any]:
        [issuer] = self.cp.status()["jwks"]["issuers"]
        return dict(issuer)

    def new_envoy(self) -> None:
        """A fresh Envoy: everything it knows comes from the control plane now."""
        if self.envoy is not None:
            self.envoy.stop()
        self.client.close()
        self.envoy = Envoy(self.cp.xds_port, node_id="envoy-2")
        wait_until(lambda: self.client.request("/healthz")[0] == 200, 15, "Envoy serving")

    def stop(self) -> None:
        self.client.close()
        if self.envoy is not None:
            self.envoy.stop()
        self.cp.stop()


@pytest.fixture
def gateways(tmp_path: Path) -> Iterator[Callable[..., Gateway]]:
    made: list[Gateway] = []

    def make(config: dict[str, Any], port: int) -> Gateway:
        gw = Gateway(tmp_path, config, port)
        made.append(gw)
        return gw

    yield make
    for gw in made:
        gw.stop()


def test_idp_down_valid_tokens_still_pass_also_after_a_control_plane_restart(
    upstreams: Upstreams, listener_port: int, gateways: Callable[..., Gateway]
) -> None:
    with JwksServer(jwks_of(K1)) as idp:
        gw = gateways(gateway(upstreams, listener_port, idp.url), listener_port)
        gw.eventually(K1, 200, what="the fetched key in force")
        assert gw.status_of(K2) == 401  # a key the provider never published
    # the provider is down now
    wait_until(lambda: gw.issuer()["state"] == "stale", 10, "stale")
    assert gw.status_of(K1) == 200
    # a restarted control plane serves the keys from disk to an Envoy that knows nothing
    gw.cp.kill()
    gw.cp.start()
    gw.new_envoy()
    assert gw.status_of(K1) == 200
    assert gw.status_of(K2) == 401
    assert gw.issuer()["keys"] == 1


def test_rotation_new_key_passes_after_the_refresh_and_a_withdrawn_key_is_refused(
    upstreams: Upstreams, listener_port: int, gateways: Callable[..., Gateway]
) -> None:
    with JwksServer(jwks_of(K1)) as idp:
        gw = gateways(gateway(upstreams, listener_port, idp.url), listener_port)
        gw.eventually(K1, 200)
        assert gw.status_of(K2) == 401
        assert gw.envoy is not None
        listeners = gw.envoy.stats("listener_manager.listener_")
        idp.document = jwks_of(K1, K2)  # the provider publishes its next key
        gw.eventually(K2, 200, timeout=10, what="the new key in force within the refresh")
        assert gw.status_of(K1) == 200
        idp.document = jwks_of(K2)  # and withdraws the old one
        gw.eventually(K1, 401, timeout=10, what="the withdrawn key refused")
        assert gw.status_of(K2) == 200
        # keys travel over ECDS: no listener was updated (and so none drained) on the way
        after = gw.envoy.stats("listener_manager.listener_")
        for stat in ("listener_modified", "listener_added", "listener_removed"):
            assert after[f"listener_manager.{stat}"] == listeners[f"listener_manager.{stat}"]


def test_unreachable_at_first_start_is_401_with_the_reason_until_the_idp_answers(
    upstreams: Upstreams, listener_port: int, gateways: Callable[..., Gateway]
) -> None:
    idp = JwksServer(jwks_of(K1))
    # the port is held (bound, not listening: connections are refused) so that no other
    # process of the test takes it before the provider starts there
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    idp.port = holder.getsockname()[1]
    gw = gateways(gateway(upstreams, listener_port, idp.url), listener_port)
    assert gw.status_of(K1) == 401
    issuer = wait_until(lambda: (i := gw.issuer())["last_error"] and i, 10, "a failed fetch")
    assert issuer["state"] == "never_fetched" and issuer["keys"] == 0
    assert issuer["last_error"].startswith("cannot connect")
    assert gw.status_of(K1) == 401  # never allowed while there are no keys
    holder.close()
    with idp:
        gw.eventually(K1, 200, timeout=20, what="the key in force once the IdP answers")


def test_keys_past_max_stale_are_dropped_and_tokens_refused(
    upstreams: Upstreams, listener_port: int, gateways: Callable[..., Gateway]
) -> None:
    with JwksServer(jwks_of(K1)) as idp:
        cfg = gateway(upstreams, listener_port, idp.url, refresh="1s", max_stale="3s")
        gw = gateways(cfg, listener_port)
        gw.eventually(K1, 200)
    assert gw.status_of(K1) == 200  # stale, still in force
    gw.eventually(K1, 401, timeout=15, what="the keys dropped after max_stale")
    assert gw.issuer()["state"] == "expired"


def test_while_the_config_is_rejected_new_keys_still_reach_envoy_and_expired_ones_go(
    upstreams: Upstreams, listener_port: int, gateways: Callable[..., Gateway]
) -> None:
    with JwksServer(jwks_of(K1)) as idp:
        cfg = gateway(upstreams, listener_port, idp.url, refresh="1s", max_stale="5s")
        gw = gateways(cfg, listener_port)
        gw.eventually(K1, 200)
        assert gw.envoy is not None
        listeners = gw.envoy.stats("listener_manager.listener_")
        # a broken edit: rejected, the last good config keeps serving
        broken = {**cfg, "policies": [{"name": "staff", "issuers": ["nobody"]}]}
        write_config(gw.path, broken)
        wait_until(lambda: gw.cp.status()["config"]["errors"], 10, "the edit rejected")
        # the provider rotates: the new key is in force within the refresh all the same
        idp.document = jwks_of(K1, K2)
        gw.eventually(K2, 200, timeout=10, what="the new key in force, config rejected")
        idp.document = jwks_of(K2)
        gw.eventually(K1, 401, timeout=10, what="the withdrawn key refused, config rejected")
        assert gw.status_of(K2) == 200
    # the provider goes down: past max_stale the keys are dropped, also while rejected
    gw.eventually(K2, 401, timeout=20, what="the keys dropped after max_stale")
    status = gw.cp.status()
    assert status["config"]["errors"] and status["jwks"]["pending"] is False
    assert gw.issuer()["state"] == "expired"
    # all of it over ECDS: no listener was updated (or drained)
    after = gw.envoy.stats("listener_manager.listener_")
    for stat in ("listener_modified", "listener_added", "listener_removed"):
        assert after[f"listener_manager.{stat}"] == listeners[f"listener_manager.{stat}"]
