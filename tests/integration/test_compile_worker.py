"""A large config compiles in a worker process: the control plane keeps answering meanwhile,
the newest file wins, memory comes back, and SIGTERM does not wait for the compile.

The large config is 50,000 routes over the three test upstreams (so Envoy has few clusters
to warm and the test stays short). Nothing here asserts how fast a compile is (bench/ measures
that); the bounds are on the control plane answering at all while one runs.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from envoy.config.cluster.v3 import cluster_pb2
from envoy.service.discovery.v3 import discovery_pb2

from tests.support.control_plane import http_get
from xds_server.snapshot.snapshot import CLUSTER
from xds_server.worker.job import digest_of

from ..xds_client import SotwClient
from .conftest import base_config
from .harness import Client, ControlPlane, Envoy, Upstreams, child_pids, wait_until, write_config

Stack = Callable[..., tuple[ControlPlane, Envoy]]
LARGE = 50_000


def large_config(upstreams: Upstreams, port: int, catch_all: str) -> str:
    """``LARGE`` routes (half prefix, a third exact, the rest regex), then ``/`` to
    ``catch_all``; written as JSON, which YAML reads as it is and tests write quickly."""
    names = sorted(upstreams.ports)
    routes: list[dict[str, Any]] = []
    for i in range(LARGE):
        kind = i % 6
        if kind < 3:
            match: dict[str, Any] = {"prefix": f"/r{i}/"}
        elif kind < 5:
            match = {"path": f"/r{i}/exact"}
        else:
            match = {"regex": f"^/r{i}/items/[0-9]+$"}
        routes.append({"name": f"r-{i}", "match": match, "service": names[i % len(names)]})
    routes.append({"name": "catch-all", "match": {"prefix": "/"}, "service": catch_all})
    return json.dumps(base_config(upstreams, port, routes))


def write_text(path: Path, text: str) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    tmp.replace(path)


def rss_kib(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) of the control-plane process itself (its children not included)."""
    fields = dict(
        line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
    )
    return int(fields["VmRSS"].split()[0]), int(fields["VmHWM"].split()[0])


class Poller:
    """GET /healthz and /status in a loop; the slowest answer and whether a compile was seen
    running tell whether the control plane stayed responsive."""

    def __init__(self, cp: ControlPlane) -> None:
        self.cp = cp
        self.max_latency = 0.0
        self.polls = 0
        self.polls_while_compiling = 0
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            for path in ("/healthz", "/status"):
                started = time.perf_counter()
                try:
                    code, body = http_get(self.cp.admin_url + path, timeout=10)
                except OSError as exc:
                    self.failures.append(f"{path}: {exc!r}")
                    continue
                self.max_latency = max(self.max_latency, time.perf_counter() - started)
                self.polls += 1
                if code != 200:
                    self.failures.append(f"{path}: HTTP {code}")
                elif path == "/status" and json.loads(body)["compile"]["running"]:
                    self.polls_while_compiling += 1
            time.sleep(0.02)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(15)


def compiling(cp: ControlPlane) -> bool:
    return bool(cp.status()["compile"]["running"])


async def ads_clusters(xds_port: int) -> list[str]:
    """Open a new ADS stream and return the clusters it is served (within 2 s)."""
    client = SotwClient(f"127.0.0.1:{xds_port}", "probe-during-compile")
    try:
        client.request(CLUSTER)
        resp: discovery_pb2.DiscoveryResponse = await client.recv(timeout=2.0)
        names = []
        for packed in resp.resources:
            cluster = cluster_pb2.Cluster()
            packed.Unpack(cluster)
            names.append(cluster.name)
        return sorted(names)
    finally:
        await client.close()


def test_a_large_config_compiles_while_the_control_plane_keeps_answering(
    stack: Stack, config_file: Path, upstreams: Upstreams, listener_port: int
) -> None:
    cp, envoy = stack([{"match": {"prefix": "/"}, "service": "alpha"}])
    client = Client(listener_port)
    wait_until(lambda: client.upstream("/") == "alpha", 15, "first config")
    time.sleep(1.5)  # the next warm worker has started; the process has settled
    baseline, _ = rss_kib(cp.pid)

    poller = Poller(cp)
    try:
        write_text(config_file, large_config(upstreams, listener_port, "beta"))
        wait_until(lambda: compiling(cp), 10, "the large config compiling")
        # a new xDS stream is served at once, from the snapshot in force, mid-compile
        served = asyncio.run(ads_clusters(cp.xds_port))
        assert served == sorted(upstreams.ports)
        assert compiling(cp)  # still compiling: the answer did not wait for it
        wait_until(lambda: client.upstream("/") == "beta", 120, "the large config in Envoy")
    finally:
        poller.stop()
    assert poller.failures == []
    assert poller.polls_while_compiling >= 3
    assert poller.max_latency < 1.0, f"slowest /healthz or /status: {poller.max_latency:.2f}s"
    assert client.upstream("/r1/x") == "beta"  # route 1 of the large config: beta
    large_rss, _ = rss_kib(cp.pid)

    # back to a small file: the control plane's memory is back near where it started
    write_config(
        config_file,
        base_config(upstreams, listener_port, [{"match": {"prefix": "/"}, "service": "gamma"}]),
    )
    wait_until(lambda: client.upstream("/") == "gamma", 30, "the small config again")
    time.sleep(1.0)
    rss, peak = rss_kib(cp.pid)
    assert rss < baseline + 50 * 1024, (
        f"RSS {rss // 1024} MiB after returning to a small config; started at "
        f"{baseline // 1024} MiB, {large_rss // 1024} MiB with the large one (peak {peak // 1024})"
    )


def test_a_newer_file_written_mid_compile_wins(
    stack: Stack, config_file: Path, upstreams: Upstreams, listener_port: int
) -> None:
    cp, envoy = stack([{"match": {"prefix": "/"}, "service": "alpha"}])
    client = Client(listener_port)
    wait_until(lambda: client.upstream("/") == "alpha", 15, "first config")

    write_text(config_file, large_config(upstreams, listener_port, "beta"))
    wait_until(lambda: compiling(cp), 10, "the large config compiling")
    small = base_config(upstreams, listener_port, [{"match": {"prefix": "/"}, "service": "gamma"}])
    write_config(config_file, small)
    wait_until(lambda: client.upstream("/") == "gamma", 30, "the newer, small config")
    assert cp.status()["config"]["config_digest"] == digest_of(config_file.read_text())
    # the abandoned large config never shows up later: published were the first and the
    # small config only (its worker killed, or, had it not yet read the file, it read the
    # small one)
    time.sleep(2.0)
    assert client.upstream("/") == "gamma"
    assert client.upstream("/r1/x") == "gamma"
    assert cp.status()["config"]["config_digest"] == digest_of(config_file.read_text())
    assert cp.metrics()['meshgate_config_reloads_total{result="published"}'] == 2


def test_sigterm_during_a_compile_stops_the_control_plane_at_once(
    tmp_path: Path, upstreams: Upstreams, listener_port: int
) -> None:
    path = tmp_path / "gateway.yaml"
    write_config(
        path,
        base_config(upstreams, listener_port, [{"match": {"prefix": "/"}, "service": "alpha"}]),
    )
    cp = ControlPlane(path, validator="none")
    try:
        write_text(path, large_config(upstreams, listener_port, "beta"))
        wait_until(lambda: compiling(cp), 10, "the large config compiling")
        worker = cp.status()["compile"]["running"]["pid"]
        # forked by the control plane's fork server (one of its children)
        assert worker in [g for c in child_pids(cp.pid) for g in child_pids(c)]
    finally:
        code = cp.stop(grace=5.0)  # SIGTERM, then SIGKILL after 5 s
    assert code == 0, f"exit code {code}: not a clean stop within the grace period"
    assert not Path(f"/proc/{worker}").exists()  # reaped: the worker went with it


def test_a_control_plane_killed_mid_compile_leaves_no_worker_behind(
    tmp_path: Path, upstreams: Upstreams, listener_port: int
) -> None:
    path = tmp_path / "gateway.yaml"
    small = base_config(upstreams, listener_port, [{"match": {"prefix": "/"}, "service": "alpha"}])
    write_config(path, small)
    cp = ControlPlane(path, validator="none")
    try:
        write_text(path, large_config(upstreams, listener_port, "beta"))
        wait_until(lambda: compiling(cp), 10, "the large config compiling")
        worker = cp.status()["compile"]["running"]["pid"]
        helpers = child_pids(cp.pid)  # the fork server and multiprocessing's resource tracker
    finally:
        cp.kill()
    wait_until(
        lambda: not any(Path(f"/proc/{p}").exists() for p in [worker, *helpers]),
        10,
        "the worker, the fork server and the resource tracker gone with the control plane",
    )
