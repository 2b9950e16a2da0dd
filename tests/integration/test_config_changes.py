"""Config edits through the real control plane to real Envoys: live, safe, and survivable."""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from meshgate.proxy.envoy_process import free_port

from .conftest import base_config
from .harness import Client, ControlPlane, Envoy, Upstreams, child_pids, wait_until, write_config

Stack = Callable[..., tuple[ControlPlane, Envoy]]


def _cmdline(pid: int) -> bytes:
    return Path(f"/proc/{pid}/cmdline").read_bytes()


def _routes(target: str) -> list[dict[str, Any]]:
    return [{"name": "api", "match": {"prefix": "/"}, "service": target}]


def _serving_alpha(stack: Stack, port: int) -> tuple[ControlPlane, Envoy, Client]:
    """Control plane + Envoy on a config routing everything to alpha, once it serves."""
    cp, envoy = stack(_routes("alpha"))
    client = Client(port)
    wait_until(lambda: client.upstream("/") == "alpha", 15, "first config")
    return cp, envoy, client


class Load:
    """Requests in a loop on keep-alive connections; every non-200 or error is a failure."""

    def __init__(self, port: int, threads: int = 2) -> None:
        self.port = port
        self.stop_flag = threading.Event()
        self.results: Counter[str] = Counter()
        self.failures: list[str] = []
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]
        for t in self.threads:
            t.start()

    def _run(self) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
        while not self.stop_flag.is_set():
            try:
                conn.request("GET", "/load")
                resp = conn.getresponse()
                body = resp.read()
                with self.lock:
                    if resp.status == 200:
                        self.results[body.split(b'"upstream": "')[1].split(b'"')[0].decode()] += 1
                    else:
                        self.failures.append(f"{resp.status} {body[:200]!r}")
            except (OSError, http.client.HTTPException) as exc:
                with self.lock:
                    self.failures.append(repr(exc))
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)

    def stop(self) -> None:
        self.stop_flag.set()
        for t in self.threads:
            t.join(10)


def test_edit_is_live_within_a_second_without_failed_requests(
    stack: Stack, config_file: Path, upstreams: Upstreams, listener_port: int
) -> None:
    cp, envoy, client = _serving_alpha(stack, listener_port)
    load = Load(listener_port)
    time.sleep(0.3)
    for target in ("beta", "gamma", "alpha"):
        t0 = time.monotonic()
        write_config(config_file, base_config(upstreams, listener_port, _routes(target)))
        wait_until(lambda t=target: client.upstream("/") == t, 1.0, f"edit to {target} live")
        assert time.monotonic() - t0 < 1.0
        time.sleep(0.2)
    load.stop()
    assert load.failures == []
    assert set(load.results) == {"alpha", "beta", "gamma"}
    assert sum(load.results.values()) > 100


def test_invalid_edits_keep_the_last_good_config_serving(
    stack: Stack, config_file: Path, upstreams: Upstreams, listener_port: int
) -> None:
    cp, envoy, client = _serving_alpha(stack, listener_port)
    good_version = cp.status()["config"]["version"]

    # 1. broken YAML
    config_file.write_text("listeners: [\n")
    errors = wait_until(lambda: cp.status()["config"]["errors"], 5, "YAML error reported")
    assert errors[0]["line"] == 2 and "invalid YAML" in errors[0]["message"]
    assert client.upstream("/") == "alpha"

    # 2. valid YAML, dangling reference: precise path
    bad = base_config(upstreams, listener_port, _routes("missing"))
    write_config(config_file, bad)
    errors = wait_until(
        lambda: [e for e in cp.status()["config"]["errors"] if "unknown service" in e["message"]],
        5,
        "schema error reported",
    )
    assert errors[0]["path"] == "listeners[0].virtual_hosts[0].routes[0].service"
    assert client.upstream("/") == "alpha"

    # 3. a regex RE2 refuses: caught by the loader itself (RE2 wheel), at its line
    too_big = base_config(
        upstreams,
        listener_port,
        [{"name": "big", "match": {"regex": "^/a{1001}$"}, "service": "beta"}, *_routes("beta")],
    )
    write_config(config_file, too_big)
    errors = wait_until(
        lambda: [e for e in cp.status()["config"]["errors"] if "repetition" in e["message"]],
        5,
        "RE2 error reported",
    )
    assert errors[0]["path"] == "listeners[0].virtual_hosts[0].routes[0].match.regex"
    assert errors[0]["line"] is not None

    # 4. passes our checks, but Envoy rejects it (a substitution command it does not know):
    #    the canary catches it, the fleet never sees it
    unknown_command = {"request_headers": {"set": {"x-bad": "%NOT_A_COMMAND%"}}}
    nacked = base_config(upstreams, listener_port, [{**_routes("beta")[0], **unknown_command}])
    write_config(config_file, nacked)
    errors = wait_until(
        lambda: [e for e in cp.status()["config"]["errors"] if "Envoy rejected" in e["message"]],
        10,
        "canary rejection reported",
    )
    assert "RDS 'public'" in errors[0]["message"] and "NOT_A_COMMAND" in errors[0]["message"]
    status = cp.status()
    assert status["config"]["version"] == good_version
    assert status["recent_nacks"] == []  # no fleet Envoy was sent the bad config
    assert client.upstream("/") == "alpha"

    # 5. fixing the file publishes it and clears the errors
    write_config(config_file, base_config(upstreams, listener_port, _routes("beta")))
    wait_until(lambda: client.upstream("/") == "beta", 5, "fixed config live")
    assert cp.status()["config"]["errors"] == []


def test_two_envoys_sotw_and_delta_converge(
    stack: Stack, config_file: Path, upstreams: Upstreams, listener_port: int, tmp_path: Path
) -> None:
    cp, envoy1 = stack(_routes("alpha"))
    # The second Envoy speaks delta xDS; both bind the listener port with SO_REUSEPORT, so
    # what each one serves is checked through its own admin /config_dump.
    envoy2 = Envoy(cp.xds_port, node_id="envoy-2", api_type="DELTA_GRPC")
    try:

        def converged() -> bool:
            nodes = {e["node_id"]: e for e in cp.status()["envoys"]}
            if set(nodes) != {"envoy-1", "envoy-2"}:
                return False
            return all(
                t["acked_version"] and t["acked_version"] == t["sent_version"]
                for n in nodes.values()
                for t in n["types"].values()
            ) and all(len(n["types"]) == 4 for n in nodes.values())

        wait_until(converged, 15, "both Envoys ACK")
        protocols = {e["node_id"]: e["protocol"] for e in cp.status()["envoys"]}
        assert protocols == {"envoy-1": "sotw", "envoy-2": "delta"}

        write_config(config_file, base_config(upstreams, listener_port, _routes("gamma")))
        client = Client(listener_port)
        wait_until(lambda: client.upstream("/") == "gamma", 5, "edit live on envoy-1")

        def envoy2_routes_to_gamma() -> bool:
            dump = envoy2.process.admin_get("/config_dump?resource=dynamic_route_configs")
            return '"cluster": "gamma"' in dump

        wait_until(envoy2_routes_to_gamma, 5, "edit live on envoy-2 (delta)")
        wait_until(converged, 5, "both Envoys ACK the edit")
    finally:
        envoy2.stop()


def test_control_plane_outage_loses_no_requests(
    stack: Stack, config_file: Path, upstreams: Upstreams, listener_port: int
) -> None:
    cp, envoy, client = _serving_alpha(stack, listener_port)
    load = Load(listener_port)
    time.sleep(0.3)
    cp.kill()  # SIGKILL: no goodbye on the stream
    time.sleep(1.5)
    served_during_outage = sum(load.results.values())
    cp.start()
    wait_until(lambda: cp.status()["envoys"], 15, "Envoy reconnects")
    write_config(config_file, base_config(upstreams, listener_port, _routes("beta")))
    wait_until(lambda: client.upstream("/") == "beta", 5, "edit after restart live")
    load.stop()
    assert load.failures == []
    assert served_during_outage > 50
    assert envoy.stats("control_plane.connected_state")["control_plane.connected_state"] == 1


def test_a_dead_canary_is_restarted_and_still_judges(
    stack: Stack, config_file: Path, upstreams: Upstreams, listener_port: int
) -> None:
    cp, envoy, client = _serving_alpha(stack, listener_port)
    assert cp.proc is not None
    # the control plane's children: the canary Envoy and the compile workers' fork server
    children = child_pids(cp.proc.pid)
    [canary] = [p for p in children if _cmdline(p).split(b"\0")[0].endswith(b"/envoy")]
    os.kill(canary, signal.SIGKILL)
    write_config(config_file, base_config(upstreams, listener_port, _routes("beta")))
    wait_until(lambda: client.upstream("/") == "beta", 15, "edit validated by a new canary")
    assert "restarting it" in cp.logs()
    # and the new canary still rejects what Envoy rejects
    bad = [{**_routes("beta")[0], "request_headers": {"set": {"x-bad": "%NOT_A_COMMAND%"}}}]
    write_config(config_file, base_config(upstreams, listener_port, bad))
    errors = wait_until(lambda: cp.status()["config"]["errors"], 10, "rejection")
    assert "NOT_A_COMMAND" in errors[0]["message"]
    assert client.upstream("/") == "beta"


def test_renaming_a_listener_on_the_same_port_goes_live(
    stack: Stack, config_file: Path, upstreams: Upstreams, listener_port: int
) -> None:
    cp, envoy, client = _serving_alpha(stack, listener_port)
    renamed = base_config(upstreams, listener_port, _routes("beta"))
    renamed["listeners"][0]["name"] = "public-renamed"
    write_config(config_file, renamed)
    # make-before-break must not keep the old listener beside the new one on the same address
    wait_until(lambda: Client(listener_port).upstream("/") == "beta", 10, "renamed listener live")
    status = cp.status()
    assert status["config"]["errors"] == []
    assert status["recent_nacks"] == []
    dump = json.loads(envoy.process.admin_get("/config_dump?resource=dynamic_listeners"))
    active = {c["name"] for c in dump["configs"] if "active_state" in c}
    assert active == {"public-renamed"}  # the old one is only draining


def test_a_second_edit_still_containing_a_rejected_part_gets_envoys_reason(
    stack: Stack, config_file: Path, upstreams: Upstreams, listener_port: int
) -> None:
    cp, envoy, client = _serving_alpha(stack, listener_port)
    # passes our checks; Envoy refuses the unknown substitution command
    bad_route = {
        **_routes("beta")[0],
        "name": "bad",
        "request_headers": {"set": {"x-bad": "%NOT_A_COMMAND%"}},
    }

    def rejected() -> list[dict[str, Any]]:
        return [e for e in cp.status()["config"]["errors"] if "Envoy rejected" in e["message"]]

    write_config(config_file, base_config(upstreams, listener_port, [bad_route, *_routes("beta")]))
    wait_until(rejected, 10, "first rejection")
    first_digest = cp.status()["config"]["rejected_digest"]
    # the same bad route table, with a change elsewhere (a new service): the canary never gets
    # the rejected route table again, so the reason must come from memory, not a timeout
    again = base_config(upstreams, listener_port, [bad_route, *_routes("beta")])
    again["services"].append({"name": "extra", "endpoints": [{"address": "127.0.0.1", "port": 1}]})
    write_config(config_file, again)
    wait_until(
        lambda: cp.status()["config"]["rejected_digest"] != first_digest, 15, "second rejection"
    )
    second = rejected()  # Envoy's reason, not the canary's 10 s timeout
    assert "NOT_A_COMMAND" in second[0]["message"] and "did not ACK" not in second[0]["message"]
    assert client.upstream("/") == "alpha"


def test_an_update_an_envoy_rejected_for_its_host_is_retried(
    tmp_path: Path, upstreams: Upstreams, listener_port: int
) -> None:
    """A port held by another process on the Envoy's host: Envoy NACKs the listener; once the
    port is free, the retry (after --nack-retry) brings the listener up without any edit."""
    second_port = free_port()
    config = base_config(upstreams, listener_port, _routes("alpha"))
    config["listeners"].append({**config["listeners"][0], "name": "second", "port": second_port})
    path = tmp_path / "gateway.yaml"
    write_config(path, config)
    holder = socket.socket()
    holder.bind(("127.0.0.1", second_port))
    holder.listen()
    cp = ControlPlane(path, extra_args=("--nack-retry", "1"))
    envoy = Envoy(cp.xds_port)
    try:
        wait_until(lambda: Client(listener_port).upstream("/") == "alpha", 15, "first listener")

        def lds_nacked() -> bool:
            [node] = cp.status()["envoys"]
            return "cannot bind" in (node["types"]["LDS"]["nack_error"] or "")

        wait_until(lds_nacked, 10, "LDS NACKed for the held port")
        holder.close()
        wait_until(lambda: Client(second_port).upstream("/") == "alpha", 15, "retried listener")
        [node] = cp.status()["envoys"]
        lds = node["types"]["LDS"]
        # the version once refused is now accepted, with no config change in between
        assert lds["acked_version"] == lds["sent_version"] and lds["nack_error"] is None
    finally:
        holder.close()
        envoy.stop()
        cp.stop()
