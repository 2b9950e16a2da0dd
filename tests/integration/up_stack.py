"""``meshgate up`` as a subprocess on free ports, for the tests of the command as a whole."""

from __future__ import annotations

import http.client
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from meshgate.proxy.envoy_process import free_port

from .harness import child_pids, wait_until

ROOT = Path(__file__).resolve().parents[2]


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def quickstart_on_free_ports(tmp_path: Path) -> tuple[Path, int]:
    """The quickstart config with its listener and demo upstreams on free ports."""
    config = yaml.safe_load((ROOT / "examples" / "quickstart.yaml").read_text())
    port = free_port()
    config["listeners"][0]["port"] = port
    for svc, demo in zip(config["services"], config["demo_upstreams"], strict=True):
        demo["port"] = svc["endpoints"][0]["port"] = free_port()
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump(config))
    return path, port


def up_argv(
    config: Path,
    admin_port: int | None = None,
    envoy_admin_port: int | None = None,
    extra: Sequence[str] = (),
) -> list[str]:
    """`meshgate up` on the given config with every other port free."""
    return [
        sys.executable,
        "-m",
        "meshgate.cli",
        "up",
        "--config",
        str(config),
        "--xds-port",
        str(free_port()),
        "--admin-port",
        str(admin_port or free_port()),
        "--envoy-admin-port",
        str(envoy_admin_port or free_port()),
        *extra,
    ]


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


class UpProcess:
    """``meshgate up`` with its output in files (a pipe nobody reads would stall it)."""

    def __init__(
        self,
        tmp_path: Path,
        config: Path,
        extra: Sequence[str] = (),
        env: dict[str, str] | None = None,
    ) -> None:
        self.admin_port = free_port()
        self.envoy_admin_port = free_port()
        self._out_path, self._err_path = tmp_path / "up.out", tmp_path / "up.err"
        with self._out_path.open("wb") as out, self._err_path.open("wb") as err:
            self.proc = subprocess.Popen(
                up_argv(config, self.admin_port, self.envoy_admin_port, extra),
                stdout=out,
                stderr=err,
                env=env,
            )

    def stdout(self) -> str:
        return self._out_path.read_text(errors="replace")

    def stderr(self) -> str:
        return self._err_path.read_text(errors="replace")

    def child(self, marker: str) -> int | None:
        """The running child whose command line contains ``marker``: ``xds_server`` (the
        control plane), ``_bin/envoy`` (Envoy), ``demo_upstream``."""
        for pid in child_pids(self.proc.pid):
            if marker in cmdline(pid) and alive(pid):
                return pid
        return None

    def wait_serving(self, port: int, timeout: float = 60) -> None:
        """Until Envoy answers on ``port`` and ``meshgate up`` has said it is up (it has seen
        every child ready: from then on a dead child is restarted)."""

        def answered() -> bool:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            try:
                conn.request("GET", "/api/hello")
                return conn.getresponse().status == 200
            finally:
                conn.close()

        wait_until(answered, timeout, f"Envoy answers on {port}" + self._why())
        wait_until(lambda: "meshgate is up" in self.stderr(), timeout, "the banner" + self._why())

    def _why(self) -> str:
        return "" if self.proc.poll() is None else f" (meshgate up exited: {self.stderr()[-2000:]})"

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.proc.wait(timeout)


class Traffic(threading.Thread):
    """Requests through Envoy, back to back, until stopped: on one keep-alive connection and,
    every fifth request, on a new connection. Counts what was sent and what failed (an
    exception or any status but 200); nothing is retried."""

    def __init__(self, port: int, path: str = "/api/hello", limit: float = 180) -> None:
        super().__init__(daemon=True)
        self.port, self.path, self.limit = port, path, limit
        self.sent = self.failed = 0
        self.failures: list[str] = []
        self._halt = threading.Event()

    def _one(self, conn: http.client.HTTPConnection, headers: dict[str, str]) -> None:
        self.sent += 1
        try:
            conn.request("GET", self.path, headers=headers)
            resp = conn.getresponse()
            resp.read()
            if resp.status != 200:
                raise RuntimeError(f"HTTP {resp.status}")
        except Exception as exc:
            self.failed += 1
            if len(self.failures) < 10:
                self.failures.append(f"{time.strftime('%H:%M:%S')} {exc!r}")
            conn.close()

    def run(self) -> None:
        deadline = time.monotonic() + self.limit
        keep = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
        n = 0
        while not self._halt.is_set() and time.monotonic() < deadline:
            self._one(keep, {})
            n += 1
            if n % 5 == 0:
                fresh = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
                self._one(fresh, {"connection": "close"})
                fresh.close()
            time.sleep(0.002)  # leave the two cores to Envoy and the restarting child
        keep.close()

    def stop(self) -> None:
        self._halt.set()
        self.join(30)


def edit_config(path: Path, change: Any) -> None:
    """Apply ``change`` to the parsed config and write it back atomically."""
    config = yaml.safe_load(path.read_text())
    change(config)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(yaml.safe_dump(config, sort_keys=False))
    os.replace(tmp, path)
