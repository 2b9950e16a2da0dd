"""``meshgate status`` against real Envoy: what it runs, what it refused, and the all-clear.

The refusal is one only a fleet Envoy can make: a listener port held by another process on its
host. The canary never binds ports, so it accepts the config and the control plane publishes
it; the fleet Envoy NACKs the listener and keeps running the previous one.
"""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

from meshgate.proxy.envoy_process import free_port

from .conftest import base_config
from .harness import Client, ControlPlane, Envoy, Upstreams, wait_until, write_config


def meshgate_status(cp: ControlPlane) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "meshgate.cli", "status", "--url", cp.admin_url],
        capture_output=True,
        text=True,
        timeout=10,
        check=False,
    )


def _config(upstreams: Upstreams, port: int, second_port: int | None) -> dict[str, Any]:
    config = base_config(
        upstreams, port, [{"name": "api", "match": {"prefix": "/"}, "service": "alpha"}]
    )
    if second_port is not None:
        config["listeners"].append(
            {**config["listeners"][0], "name": "second", "port": second_port}
        )
    return config


def test_a_fleet_refusal_is_shown_as_such_and_clears_when_the_config_goes_back(
    tmp_path: Path, upstreams: Upstreams, listener_port: int
) -> None:
    path = tmp_path / "gateway.yaml"
    write_config(path, _config(upstreams, listener_port, None))
    second_port = free_port()
    holder = socket.socket()
    holder.bind(("127.0.0.1", second_port))
    holder.listen()
    cp = ControlPlane(path, extra_args=("--nack-retry", "1"))
    envoy = Envoy(cp.xds_port)
    try:
        wait_until(lambda: cp.status()["fleet"]["in_sync"] == 1, 15, "Envoy in sync")
        running = cp.status()["config"]["version"]
        assert Client(listener_port).upstream("/") == "alpha"
        assert meshgate_status(cp).returncode == 0

        # (c) the canary accepts it, the control plane publishes it, the Envoy refuses it
        write_config(path, _config(upstreams, listener_port, second_port))
        wait_until(lambda: cp.status()["fleet"]["refused"] == 1, 15, "LDS refused")
        status = cp.status()
        published = status["config"]["version"]
        assert published != running and status["config"]["errors"] == []
        [node] = status["envoys"]
        assert (node["state"], node["snapshot"], node["running"]) == (
            "refused",
            published,
            running,
        )
        assert node["types"]["LDS"]["state"] == "refused"
        assert "cannot bind" in node["types"]["LDS"]["nack_error"]
        metrics = cp.metrics()
        assert metrics["meshgate_config_valid"] == 0
        assert metrics['meshgate_fleet_envoys{state="refused"}'] == 1
        result = meshgate_status(cp)
        assert result.returncode == 2
        assert f"published   snapshot {published}" in result.stdout
        assert "REFUSED     by 1 of 1 Envoys (LDS): Error adding/updating listener(s) second: " in (
            result.stdout
        )
        assert f"they keep running {running}" in result.stdout
        assert all(line.strip() for line in result.stdout.splitlines()), result.stdout
        assert Client(listener_port).upstream("/") == "alpha"  # the old listener serves

        # (d) the retries (every second here) are refused the same way: one line, counted
        wait_until(lambda: cp.status()["recent_nacks"][-1]["count"] >= 2, 15, "a retry refused")
        nacks = cp.status()["recent_nacks"]
        assert len(nacks) == 1 and not nacks[0]["error"].endswith("\n")

        # (b) back to the config the Envoy still runs: in sync again, no NACK left pending
        write_config(path, _config(upstreams, listener_port, None))
        wait_until(lambda: cp.status()["fleet"]["in_sync"] == 1, 15, "in sync after revert")
        status = cp.status()
        assert status["config"]["version"] == running
        [node] = status["envoys"]
        assert node["state"] == "in_sync" and node["running"] == running
        assert all(t["state"] == "in_sync" for t in node["types"].values())
        assert cp.metrics()["meshgate_config_valid"] == 1
        result = meshgate_status(cp)
        assert result.returncode == 0, result.stdout
        assert "REFUSED" not in result.stdout
        assert Client(listener_port).upstream("/") == "alpha"
    finally:
        holder.close()
        envoy.stop()
        cp.stop()
