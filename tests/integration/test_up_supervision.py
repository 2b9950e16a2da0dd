"""`meshgate up` supervises its children: a crash of one is repaired without failing a
request, a child that keeps crashing ends the run with a clear message, nothing is left
behind, and its output is whole lines, readable on a terminal."""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from meshgate.proxy.bootstrap import BootstrapParams
from meshgate.proxy.envoy_process import WORKDIR_FAMILY, EnvoyProcess, free_port, spawn
from meshgate.runtime.workdirs import OwnedDir
from tests.support.control_plane import http_get

from .harness import child_pids, wait_until
from .up_stack import (
    Traffic,
    UpProcess,
    alive,
    edit_config,
    quickstart_on_free_ports,
    up_argv,
)

CONTROL_PLANE, ENVOY = "xds_server", "_bin/envoy"

Launch = Callable[..., UpProcess]


@pytest.fixture
def launch(tmp_path: Path) -> Iterator[Launch]:
    """Start `meshgate up` (see UpProcess); whatever a test leaves running is stopped."""
    started: list[UpProcess] = []

    def start(config: Path, **kw: Any) -> UpProcess:
        up = UpProcess(tmp_path, config, **kw)
        started.append(up)
        return up

    yield start
    for up in started:
        if up.proc.poll() is None:
            up.stop(timeout=60)


def get(port: int, path: str) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=3)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def envoy_in_sync(up: UpProcess) -> bool:
    """The control plane sees Envoy connected with every type ACKed."""
    code, body = http_get(f"http://127.0.0.1:{up.admin_port}/status", 2)
    if code != 200:
        return False
    for e in json.loads(body).get("envoys", []):
        if e["node_id"] == "meshgate-local":
            types = e.get("types", {}).values()
            return bool(types) and all(
                t.get("acked_version") == t.get("sent_version") for t in types
            )
    return False


def plane_answers(up: UpProcess) -> bool:
    try:
        return http_get(f"http://127.0.0.1:{up.admin_port}/healthz", 1)[0] == 200
    except OSError:
        return False


def test_control_plane_sigkill_fails_no_request_and_edits_go_live_again(
    tmp_path: Path, launch: Launch
) -> None:
    config, port = quickstart_on_free_ports(tmp_path)
    up = launch(config)
    traffic = Traffic(port)
    try:
        up.wait_serving(port)
        envoy = up.child(ENVOY)
        traffic.start()
        wait_until(lambda: traffic.sent >= 300, 30, "traffic flowing")
        old = up.child(CONTROL_PLANE)
        assert old is not None
        os.kill(old, signal.SIGKILL)
        killed_at = traffic.sent
        new = wait_until(lambda: (p := up.child(CONTROL_PLANE)) != old and p, 30, "restart")
        wait_until(lambda: envoy_in_sync(up), 60, "Envoy reconnected to the new control plane")
        time.sleep(3)  # keep sending well past the restart

        def add_route(c: dict[str, Any]) -> None:
            routes = c["listeners"][0]["virtual_hosts"][0]["routes"]
            routes.insert(
                0,
                {
                    "name": "edited",
                    "match": {"path": "/edited"},
                    "direct_response": {"status": 200, "body": "edited after the restart\n"},
                },
            )

        edit_config(config, add_route)
        wait_until(
            lambda: get(port, "/edited") == (200, b"edited after the restart\n"),
            30,
            "the edit goes live through the restarted control plane",
        )
        traffic.stop()
        assert up.child(ENVOY) == envoy  # the same Envoy served throughout
    finally:
        try:
            traffic.stop()
        finally:
            code = up.stop()
    print(
        f"\ncontrol-plane SIGKILL under meshgate up: {traffic.sent} requests sent "
        f"({traffic.sent - killed_at} after the kill), {traffic.failed} failed"
    )
    assert traffic.failed == 0, traffic.failures
    assert traffic.sent - killed_at > 300
    assert new != old and envoy is not None
    assert "Envoy exited" not in up.stderr()
    assert "control plane exited (signal 9); restarting in 0.5 s (restart 1)" in up.stderr()
    assert code == 0


def test_envoy_sigkill_is_restarted_and_serves_again(tmp_path: Path, launch: Launch) -> None:
    config, port = quickstart_on_free_ports(tmp_path)
    up = launch(config)
    try:
        up.wait_serving(port)
        plane = up.child(CONTROL_PLANE)
        old = up.child(ENVOY)
        assert old is not None
        os.kill(old, signal.SIGKILL)
        new = wait_until(lambda: (p := up.child(ENVOY)) != old and p, 30, "Envoy restarted")
        up.wait_serving(port, 30)  # its config came back over xDS
        assert get(port, "/healthz") == (200, b"ok\n")
        assert up.child(CONTROL_PLANE) == plane  # nothing else was touched
        assert new != old
        assert "Envoy exited (signal 9); restarting in 0.5 s (restart 1)" in up.stderr()
    finally:
        assert up.stop() == 0


def test_a_hung_control_plane_is_killed_and_restarted_while_envoy_serves(
    tmp_path: Path, launch: Launch
) -> None:
    """SIGSTOP: the process exists but answers nothing. Its liveness checks (/healthz, 2 s
    apart) fail five times in a row, the supervisor kills it and the restart policy brings it
    back; Envoy serves throughout and edits go live again."""
    config, port = quickstart_on_free_ports(tmp_path)
    up = launch(config)
    try:
        up.wait_serving(port)
        old, envoy = up.child(CONTROL_PLANE), up.child(ENVOY)
        assert old is not None
        os.kill(old, signal.SIGSTOP)
        new = wait_until(
            lambda: (p := up.child(CONTROL_PLANE)) != old and p, 60, "control plane restarted"
        )
        assert get(port, "/healthz") == (200, b"ok\n")  # Envoy kept serving
        assert up.child(ENVOY) == envoy
        err = up.stderr()
        assert "control plane did not answer 5 liveness checks in a row (2 s apart)" in err
        assert "control plane exited (signal 9); restarting in 0.5 s (restart 1)" in err
        assert new != old and not alive(old)
    finally:
        assert up.stop() == 0


def test_a_child_that_keeps_crashing_ends_the_run_with_a_clear_message(
    tmp_path: Path, launch: Launch
) -> None:
    config, port = quickstart_on_free_ports(tmp_path)
    up = launch(config, env={**os.environ, "TMPDIR": str(tmp_path)})
    up.wait_serving(port)
    children = child_pids(up.proc.pid)
    killed: list[int] = []
    deadline = time.monotonic() + 120
    while up.proc.poll() is None and time.monotonic() < deadline:
        # each time it is back and has said something (so that it has last words), kill it
        pid = up.child(CONTROL_PLANE)
        if pid is not None and pid not in killed and plane_answers(up):
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)
        time.sleep(0.02)
    assert up.proc.wait(30) == 1
    err = up.stderr()
    assert (
        "control plane crashed 5 times within 60 s "
        "(signal 9, signal 9, signal 9, signal 9, signal 9); giving up"
    ) in err
    tail = next(json.loads(ln) for ln in err.splitlines() if "giving up" in ln)["stderr_tail"]
    assert any("control plane listening" in line for line in tail)
    assert all(json.loads(line)["service"] == "xds_server" for line in tail)
    assert len(killed) == 5
    wait_until(lambda: not any(alive(p) for p in children + killed), 10, "nothing left running")
    assert not list(tmp_path.glob(f"{WORKDIR_FAMILY}*")), "an Envoy work directory was left"


@pytest.mark.parametrize("cpu", [0.05, 0.1, 0.2])
def test_sigint_while_up_is_still_importing_exits_quietly(tmp_path: Path, cpu: float) -> None:
    config, _ = quickstart_on_free_ports(tmp_path)
    proc = subprocess.Popen(
        up_argv(config), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    clk = os.sysconf("SC_CLK_TCK")
    # the process's own running time, not wall time (see tests/meshgate/cli/test_entry.py)
    while True:
        fields = Path(f"/proc/{proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        if (int(fields[11]) + int(fields[12])) / clk >= cpu:
            break
        assert proc.poll() is None
        time.sleep(0.001)
    children = child_pids(proc.pid)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err
    if proc.returncode == 130:  # interrupted while importing: at most one line
        assert len(err.splitlines()) <= 1, err
    else:  # the launcher had taken over: a clean stop
        assert proc.returncode == 0, err
    wait_until(lambda: not any(alive(p) for p in children), 10, "no orphans")


def envoy_child(pid: int) -> int | None:
    for child in child_pids(pid):
        try:
            argv0 = Path(f"/proc/{child}/cmdline").read_bytes().split(b"\0")[0]
        except OSError:
            continue
        if Path(argv0.decode(errors="replace")).name == "envoy":
            return child
    return None


def test_sigkill_of_up_or_of_a_control_plane_leaves_no_envoy_directory(
    tmp_path: Path, launch: Launch, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    config, port = quickstart_on_free_ports(tmp_path)
    up = launch(config, env=env)
    up.wait_serving(port)
    children = child_pids(up.proc.pid)
    up.proc.kill()
    up.proc.wait()
    wait_until(lambda: not any(alive(p) for p in children), 20, "children gone")
    # SIGKILL ran no cleanup: the Envoy's directory is still there, its lock free
    left = [p.name for p in tmp_path.glob(f"{WORKDIR_FAMILY}*")]
    assert [re.sub(r"-[^-]+$", "", n) for n in left] == [f"{WORKDIR_FAMILY}meshgate-local"]
    plane = spawn(
        [
            sys.executable,
            "-m",
            "xds_server",
            "--config",
            str(config),
            "--xds-address",
            f"127.0.0.1:{free_port()}",
            "--admin-address",
            f"127.0.0.1:{free_port()}",
        ],
        stderr=subprocess.DEVNULL,
        env=env,
    )
    # the control plane's children: the canary Envoy, and the compile worker's fork server
    canary = wait_until(lambda: envoy_child(plane.pid), 30, "the canary Envoy started")
    # the canary's Envoy swept the directory of the dead `meshgate up`
    left = [p.name for p in tmp_path.glob(f"{WORKDIR_FAMILY}*")]
    assert [re.sub(r"-[^-]+$", "", n) for n in left] == [
        f"{WORKDIR_FAMILY}meshgate-canary-{plane.pid}"
    ]
    plane.kill()
    plane.wait()
    wait_until(lambda: not alive(canary), 20, "the canary Envoy gone")
    assert [p.name for p in tmp_path.glob(f"{WORKDIR_FAMILY}*")] == left  # left behind
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    envoy = EnvoyProcess(BootstrapParams(node_id="next", xds_port=1, admin_port=2))
    try:
        assert [p.name for p in tmp_path.glob(f"{WORKDIR_FAMILY}*")] == [envoy.workdir.name]
    finally:
        envoy.stop()
    # the killed control plane's private canary-socket directory is left too, and swept by
    # the next control plane's (same OwnedDir family)
    assert len(list(tmp_path.glob("meshgate-xds-*"))) == 1
    private = OwnedDir("meshgate-xds-", root=tmp_path)
    try:
        assert list(tmp_path.glob("meshgate-xds-*")) == [private.path]
    finally:
        private.remove()


def test_text_logs_on_a_terminal_and_a_calm_clean_stop(tmp_path: Path, launch: Launch) -> None:
    config, port = quickstart_on_free_ports(tmp_path)
    up = launch(config, extra=["--log-format", "text"])
    try:
        up.wait_serving(port)
        assert get(port, "/api/hello")[0] == 200
        time.sleep(1.0)  # Envoy flushes its access log every 0.5 s
    finally:
        assert up.stop(signal.SIGINT) == 0
    out, err = up.stdout(), up.stderr()
    clock = r"\d\d:\d\d:\d\d"
    assert re.search(rf"^{clock} access +GET /api/hello 200 \d+ms echo-a$", out, re.M), out
    assert re.search(rf"^{clock} control-plane +INFO +snapshot published version=\w+", err, re.M)
    assert f"envoy stats     http://127.0.0.1:{up.envoy_admin_port}/stats/prometheus" in err
    assert re.search(rf"^{clock} meshgate +INFO +stopping$", err, re.M)
    assert not re.search(r"\b(WARN|ERROR|CRIT)\b|Traceback|warning|error", err), err


def test_json_logs_when_not_a_terminal(tmp_path: Path, launch: Launch) -> None:
    config, port = quickstart_on_free_ports(tmp_path)
    up = launch(config)
    try:
        up.wait_serving(port)
        time.sleep(1.0)
    finally:
        assert up.stop() == 0
    records = [json.loads(line) for line in up.stderr().splitlines()]  # every line is JSON
    banner = next(r for r in records if r["message"] == "meshgate is up")
    assert banner["envoy_prometheus"] == (
        f"http://127.0.0.1:{up.envoy_admin_port}/stats/prometheus"
    )
    assert {r["service"] for r in records} >= {"meshgate", "xds_server"}
    assert [r for r in records if r["level"] not in ("info", "debug")] == []
    access = [json.loads(line) for line in up.stdout().splitlines()]
    assert any(a["path"] == "/api/hello" and a["status"] == 200 for a in access)
