"""The control plane's HTTP side: health, readiness, metrics, status."""

from __future__ import annotations

import json
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
