"""The control plane's HTTP side: health, readiness, metrics, status."""

from __future__ import annotations

import json
import signal
import stat
import tempfile
from pathlib import Path

import grpc
import pytest
import yaml
from grpc_health.v1 import health_pb2, health_pb2_grpc

from .conftest import base_config
from .harness import ControlPlane, Envoy, Upstreams, wait_until, write_config


def _metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    raise KeyError(name)


def test_not_ready_until_a_valid_config_then_metrics_follow(
    tmp_path: Path, upstreams: Upstreams, listener_port: int
) -> None:
    config = tmp_path / "gateway.yaml"
    config.write_text("listeners: []\n")
    cp = ControlPlane(config, wait=False)
    envoy = None
    try:
        assert cp.get("/healthz")[0] == 200
        code, body = cp.get("/readyz")
        assert code == 503 and json.loads(body)["reason"] == "no valid config published yet"
        # the first file is read and compiled by a worker process: its verdict follows
        errors = wait_until(lambda: cp.status()["config"]["errors"], 10, "the first verdict")
        assert errors[0]["path"] == "listeners" and errors[0]["line"] == 1
        assert _metric(cp.get("/metrics")[1], "meshgate_config_valid") == 0

        # an Envoy that connects before any valid config waits, and is not sent an empty one
        envoy = Envoy(cp.xds_port)
        wait_until(lambda: cp.status()["envoys"], 10, "Envoy connected")
        assert all(not t["sent_version"] for t in cp.status()["envoys"][0]["types"].values())

        write_config(
            config,
            base_config(upstreams, listener_port, [{"match": {"prefix": "/"}, "service": "alpha"}]),
        )
        wait_until(lambda: cp.get("/readyz")[0] == 200, 10, "ready after a valid config")
        wait_until(
            lambda: _metric(cp.get("/metrics")[1], 'meshgate_xds_acks_total{type="RDS"}') >= 1,
            10,
            "RDS ACK counted",
        )
        metrics = cp.get("/metrics")[1]
        assert _metric(metrics, "meshgate_config_valid") == 1
        assert _metric(metrics, 'meshgate_config_reloads_total{result="published"}') == 1
        assert _metric(metrics, 'meshgate_config_reloads_total{result="rejected"}') == 1
        assert _metric(metrics, 'meshgate_xds_streams{protocol="sotw"}') == 2  # fleet + canary
        assert _metric(metrics, "meshgate_config_validate_seconds_count") == 1
    finally:
        if envoy is not None:
            envoy.stop()
        cp.stop()


def _grpc_health(port: int) -> int:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        return int(stub.Check(health_pb2.HealthCheckRequest(), timeout=5).status)


def canary_socket(cp: ControlPlane) -> Path:
    """The Unix socket the canary Envoy reaches the control plane on (from its bootstrap)."""
    pattern = f"meshgate-envoy-meshgate-canary-{cp.pid}-*/bootstrap.yaml"
    [bootstrap] = Path(tempfile.gettempdir()).glob(pattern)
    cluster = yaml.safe_load(bootstrap.read_text())["static_resources"]["clusters"][0]
    endpoint = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]
    return Path(endpoint["address"]["pipe"]["path"])


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP])
def test_sigterm_closes_streams_and_exits_cleanly(
    tmp_path: Path, upstreams: Upstreams, listener_port: int, sig: signal.Signals
) -> None:
    """SIGHUP (the terminal or ssh session of a directly run control plane closed) too: it
    used to kill the process outright, leaving the canary's private directory behind."""
    config = tmp_path / "gateway.yaml"
    routes = [{"match": {"prefix": "/"}, "service": "alpha"}]
    write_config(config, base_config(upstreams, listener_port, routes))
    cp = ControlPlane(config)
    envoy = Envoy(cp.xds_port)
    try:
        wait_until(lambda: cp.status()["envoys"], 10, "Envoy connected")
        # the standard gRPC health service answers on the xDS port; it follows readiness (the
        # first config, compiled by a worker after start) within the shell's 0.2 s sampling
        wait_until(
            lambda: _grpc_health(cp.xds_port) == health_pb2.HealthCheckResponse.SERVING,
            5,
            "gRPC health SERVING",
        )
        sock = canary_socket(cp)
        assert stat.S_IMODE(sock.parent.stat().st_mode) == 0o700
        assert stat.S_IMODE(sock.stat().st_mode) == 0o600
        assert cp.proc is not None
        cp.proc.send_signal(sig)
        assert cp.proc.wait(timeout=10) == 0
        logs = cp.logs()
        assert "control plane stopped" in logs and "Traceback" not in logs
        assert '"forced": false' in logs
        assert not sock.parent.exists()  # the canary's private directory is removed
        # Envoy noticed the stream end and keeps serving what it has
        wait_until(
            lambda: (
                envoy.stats("control_plane.connected_state")["control_plane.connected_state"] == 0
            ),
            10,
            "Envoy sees the control plane gone",
        )
    finally:
        envoy.stop()
        cp.stop()
