"""Who may talk xDS: the canary only over its private socket, Envoys only with a certificate.

Real control plane (``python -m xds_server``), real canary and fleet Envoys, real HTTP.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import stat
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml

from meshgate.cli.main import unhealthy
from meshgate.proxy.bootstrap import XdsTls
from meshgate.proxy.envoy_process import free_port
from meshgate.runtime.pki import LocalPki, ensure_local_pki
from tests.xds_client import SotwClient
from xds_server.snapshot.snapshot import CLUSTER, LISTENER, ROUTE

from .conftest import base_config
from .harness import ROOT, Client, ControlPlane, Envoy, Upstreams, wait_until, write_config

ROGUE = "ROGUE: I refuse everything"


async def _nack_everything(client: SotwClient, seen: list[str]) -> None:
    client.request(CLUSTER, [])
    client.request(LISTENER, [])
    client.request(ROUTE, ["public"])
    while True:
        resp = await client.recv(timeout=60)
        seen.append(resp.type_url)
        client.nack(resp, ROGUE)


async def test_an_impostor_claiming_the_canary_node_id_cannot_veto(
    stack: Callable[..., tuple[ControlPlane, Envoy]],
    config_file: Path,
    upstreams: Upstreams,
    listener_port: int,
) -> None:
    routes = [{"match": {"prefix": "/a"}, "service": "alpha"}]
    cp, envoy = await asyncio.to_thread(stack, routes)
    client = Client(listener_port)
    # /status no longer shows the canary's node id; the attacker guesses it (it is
    # meshgate-canary-<pid of the control plane>), which must not matter either
    status_text = (await asyncio.to_thread(cp.get, "/status"))[1]
    assert "meshgate-canary" not in status_text
    assert len(json.loads(status_text)["canary"]) == 1
    claimed = f"meshgate-canary-{cp.pid}"

    impostor = SotwClient(f"127.0.0.1:{cp.xds_port}", claimed)
    seen: list[str] = []
    nacker = asyncio.create_task(_nack_everything(impostor, seen))
    try:
        # it is served the fleet's snapshot (what the real Envoy has), and NACKs it
        await asyncio.to_thread(
            wait_until,
            lambda: any(n["node_id"] == claimed for n in cp.status()["recent_nacks"]),
            10,
            "the impostor's NACK",
        )
        assert CLUSTER in seen

        # a valid change is still published and reaches the real fleet Envoy
        before = cp.status()["config"]["version"]
        routes.append({"match": {"prefix": "/b"}, "service": "beta"})
        write_config(config_file, base_config(upstreams, listener_port, routes))
        await asyncio.to_thread(
            wait_until, lambda: client.upstream("/b") == "beta", 15, "the new route on Envoy"
        )
        status = cp.status()
        assert status["config"]["errors"] == [] and status["config"]["version"] != before

        # the impostor's NACKs are what they are: a fleet node refusing config, shown as such
        # (and `meshgate status` exits 2 for it), not the canary's verdict. (It is not sent the
        # change: make-before-break waits for its CDS ACK, which never comes.)
        status = cp.status()
        theirs = [n for n in status["recent_nacks"] if n["node_id"] == claimed]
        assert {n["group"] for n in theirs} == {"default"}
        assert {n["error"] for n in theirs} == {ROGUE}
        fleet = {e["node_id"]: e for e in status["envoys"]}
        assert set(fleet) == {"envoy-1", claimed}
        assert fleet[claimed]["peer"].startswith("ipv4:127.0.0.1:")
        assert len(status["canary"]) == 1
        assert unhealthy(status)
        assert "a fleet client uses the canary's node-id prefix" in cp.logs()
    finally:
        nacker.cancel()
        await asyncio.gather(nacker, return_exceptions=True)
        await impostor.close()
        client.close()


# -- mutual TLS -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pkis(tmp_path_factory: pytest.TempPathFactory) -> tuple[LocalPki, LocalPki]:
    """Ours, and another CA's (whose client certificate must not get in)."""
    return (
        ensure_local_pki(tmp_path_factory.mktemp("ours") / "pki"),
        ensure_local_pki(tmp_path_factory.mktemp("theirs") / "pki"),
    )


def _tls_args(pki: LocalPki) -> tuple[str, ...]:
    return (
        "--xds-tls-cert",
        str(pki.server_cert),
        "--xds-tls-key",
        str(pki.server_key),
        "--xds-tls-client-ca",
        str(pki.ca_cert),
    )


def _key_lines(pki: LocalPki) -> list[str]:
    out = []
    for key in (pki.server_key, pki.client_key, pki.ca_key):
        out += [ln for ln in key.read_text().splitlines() if ln and not ln.startswith("-----")]
    return out


async def _ads_attempt(port: int, credentials: grpc.ChannelCredentials | None) -> BaseException:
    client = SotwClient(f"localhost:{port}", "intruder", credentials=credentials)
    try:
        client.request(CLUSTER, [])
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await client.recv(timeout=10)
        return refused.value
    finally:
        await client.close()


async def test_mutual_tls_lets_in_envoys_with_our_certificate_only(
    tmp_path: Path, upstreams: Upstreams, listener_port: int, pkis: tuple[LocalPki, LocalPki]
) -> None:
    ours, theirs = pkis
    config = tmp_path / "gateway.yaml"
    write_config(
        config,
        base_config(upstreams, listener_port, [{"match": {"prefix": "/"}, "service": "alpha"}]),
    )
    cp = await asyncio.to_thread(ControlPlane, config, extra_args=_tls_args(ours))
    envoy = None
    client = Client(listener_port)
    try:
        tls = XdsTls(str(ours.client_cert), str(ours.client_key), str(ours.ca_cert))
        envoy = await asyncio.to_thread(Envoy, cp.xds_port, xds_tls=tls)
        await asyncio.to_thread(
            wait_until, lambda: client.upstream("/") == "alpha", 15, "traffic through Envoy"
        )
        assert cp.status()["xds_tls"] == "mutual"

        ca = ours.ca_cert.read_bytes()
        attempts: dict[str, grpc.ChannelCredentials | None] = {
            "plaintext": None,
            "TLS without a client certificate": grpc.ssl_channel_credentials(ca),
            "a client certificate of another CA": grpc.ssl_channel_credentials(
                ca, theirs.client_key.read_bytes(), theirs.client_cert.read_bytes()
            ),
        }
        for what, creds in attempts.items():
            err = await _ads_attempt(cp.xds_port, creds)
            assert isinstance(err, grpc.aio.AioRpcError)
            assert err.code() == grpc.StatusCode.UNAVAILABLE, (what, err)
            print(f"\n{what}: {err.code().name}: {err.details()}")
        assert [e["node_id"] for e in cp.status()["envoys"]] == ["envoy-1"]
        handshakes = [ln for ln in cp.logs().splitlines() if "andshake" in ln]
        print("control plane logged:\n" + "\n".join(handshakes))

        # no private key, ours or Envoy's, in logs, status, metrics or Envoy's config dump
        exposed = cp.logs() + cp.get("/status")[1] + cp.get("/metrics")[1]
        exposed += envoy.process.admin_get("/config_dump?include_eds")
        assert not [ln for ln in _key_lines(ours) if ln in exposed]
    finally:
        client.close()
        if envoy is not None:
            envoy.stop()
        cp.stop()


def test_up_with_xds_tls_auto_makes_a_private_ca_and_serves(tmp_path: Path) -> None:
    config = yaml.safe_load((ROOT / "examples" / "quickstart.yaml").read_text())
    port = free_port()
    config["listeners"][0]["port"] = port
    for svc, demo in zip(config["services"], config["demo_upstreams"], strict=True):
        demo["port"] = svc["endpoints"][0]["port"] = free_port()
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump(config))
    admin = free_port()
    pki_dir = tmp_path / "state" / "pki"
    log = (tmp_path / "up.log").open("wb")
    argv = [sys.executable, "-m", "meshgate.cli", "up", "--config", str(path)]
    argv += ["--xds-port", str(free_port()), "--admin-port", str(admin)]
    argv += ["--envoy-admin-port", str(free_port()), "--xds-tls", "auto", "--pki-dir", str(pki_dir)]
    proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
    client = Client(port)
    try:
        wait_until(lambda: client.request("/")[0] != 503 or None, 60, "the quickstart serving")

        def status() -> dict[str, Any]:
            return yaml.safe_load(ControlPlaneStatus(admin).text())

        wait_until(lambda: status()["envoys"], 10, "Envoy connected over mutual TLS")
        assert status()["xds_tls"] == "mutual"
        assert stat.S_IMODE(os.stat(pki_dir).st_mode) == 0o700
        keys = sorted(p.name for p in pki_dir.iterdir() if p.name.endswith("-key.pem"))
        assert keys == ["ca-key.pem", "envoy-client-key.pem", "xds-server-key.pem"]
        assert {stat.S_IMODE(os.stat(pki_dir / k).st_mode) for k in keys} == {0o600}
        exposed = (tmp_path / "up.log").read_text()
        assert not [ln for ln in _key_lines(LocalPki(pki_dir)) if ln in exposed]
    finally:
        client.close()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
        log.close()


class ControlPlaneStatus:
    def __init__(self, port: int) -> None:
        self.url = f"http://127.0.0.1:{port}/status"

    def text(self) -> str:
        import urllib.request

        with urllib.request.urlopen(self.url, timeout=2) as resp:
            body: bytes = resp.read()
            return body.decode()
