"""The control plane's HTTP side: health, readiness, metrics, status."""

from __future__ import annotations

import json
import signal
from pathlib import Path

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
        errors = cp.status()["config"]["errors"]
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


def test_sigterm_closes_streams_and_exits_cleanly(
    tmp_path: Path, upstreams: Upstreams, listener_port: int
) -> None:
    config = tmp_path / "gateway.yaml"
    routes = [{"match": {"prefix": "/"}, "service": "alpha"}]
    write_config(config, base_config(upstreams, listener_port, routes))
    cp = ControlPlane(config)
    envoy = Envoy(cp.xds_port)
    try:
        wait_until(lambda: cp.status()["envoys"], 10, "Envoy connected")
        assert cp.proc is not None
        cp.proc.send_signal(signal.SIGTERM)
        assert cp.proc.wait(timeout=10) == 0
        logs = cp.logs()
        assert "control plane stopped" in logs and "Traceback" not in logs
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
