"""`meshgate up`: the whole stack from one command, and a clean stop with no orphans."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from meshgate.proxy.envoy_process import free_port

from .harness import child_pids, wait_until
from .up_stack import alive, quickstart_on_free_ports, up_argv


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP])
def test_up_serves_and_stops_cleanly(tmp_path: Path, sig: signal.Signals) -> None:
    config, port = quickstart_on_free_ports(tmp_path)
    admin = free_port()
    proc = subprocess.Popen(
        up_argv(config, admin),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:

        def answered() -> dict[str, object]:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/hello", timeout=1) as r:
                return dict(json.loads(r.read()))

        body = wait_until(answered, 60, "quickstart answers through Envoy")
        assert body["upstream"] == "echo-a"
        status = subprocess.run(
            [sys.executable, "-m", "meshgate.cli", "status", "--url", f"http://127.0.0.1:{admin}"],
            capture_output=True,
            text=True,
            timeout=10,
        )
        assert status.returncode == 0, status.stderr
        assert "meshgate-local" in status.stdout and "RDS  in sync" in status.stdout
        children = child_pids(proc.pid)
        assert len(children) == 4  # two demo upstreams, the control plane, Envoy
        grandchildren = [g for c in children for g in child_pids(c)]  # the canary Envoy
        assert grandchildren
    finally:
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err.decode()[-3000:]
    text = err.decode()
    assert "meshgate is up" in text and "Traceback" not in text
    assert "127.0.0.1:9901" not in text  # the admin port we chose is shown, not the default
    wait_until(lambda: not any(alive(p) for p in children + grandchildren), 10, "no orphans")
    # the access log went to stdout as JSON
    lines = [json.loads(ln) for ln in out.decode().splitlines() if ln.startswith("{")]
    assert any(e["path"] == "/api/hello" and e["upstream_cluster"] == "echo-a" for e in lines)


def test_up_refuses_an_invalid_config(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("listeners:\n  - name: x\n    port: 99999\n    virtual_hosts: []\n")
    result = subprocess.run(
        [sys.executable, "-m", "meshgate.cli", "up", "--config", str(bad)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 1
    assert f"error: {bad}:3:5: listeners[0].port:" in result.stderr
    assert "Traceback" not in result.stderr


def test_up_refuses_ports_in_use_before_starting_anything(tmp_path: Path) -> None:
    config, port = quickstart_on_free_ports(tmp_path)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", port))
        taken.listen()
        result = subprocess.run(
            up_argv(config),
            capture_output=True,
            text=True,
            timeout=30,
        )
    assert result.returncode == 1
    assert f"error: port {port} on 127.0.0.1 for listener 'public' is not free" in result.stderr
    assert "meshgate is up" not in result.stderr and "Traceback" not in result.stderr
