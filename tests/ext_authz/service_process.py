"""``python -m ext_authz`` as a child process on free loopback ports, for the process tests:
checks over real HTTP, /readyz and /metrics, SIGTERM, and its whole output afterwards."""

from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from meshgate.proxy.envoy_process import free_port
from tests.paths import ROOT
from tests.support.control_plane import wait_until


def child_env(state_dir: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env["XDG_STATE_HOME"] = str(state_dir)  # never the developer's own state directory
    return env


def keys_cli(store: Path, hash_key: Path, *args: str) -> str:
    """``python -m meshgate.cli keys ...`` in its own process; its stdout."""
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "meshgate.cli",
            "keys",
            "--store",
            str(store),
            "--hash-key-file",
            str(hash_key),
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=30,
        env=child_env(store.parent / "state"),
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


class AuthzProcess:
    def __init__(self, workdir: Path, store: str, hash_key: Path, *extra: str) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.port, self.admin_port = free_port(), free_port()
        self.stdout_path, self.stderr_path = workdir / "stdout", workdir / "stderr"
        argv = [
            sys.executable,
            "-m",
            "ext_authz",
            "--store",
            store,
            "--hash-key-file",
            str(hash_key),
            "--listen",
            f"127.0.0.1:{self.port}",
            "--admin-address",
            f"127.0.0.1:{self.admin_port}",
            *extra,
        ]
        with self.stdout_path.open("wb") as out, self.stderr_path.open("wb") as err:
            self.proc = subprocess.Popen(
                argv, stdout=out, stderr=err, env=child_env(workdir / "state"), cwd=workdir
            )

    def wait_ready(self, timeout: float = 20.0) -> None:
        def ready() -> bool:
            if self.proc.poll() is not None:
                raise RuntimeError(f"ext_authz exited {self.proc.returncode}:\n{self.output()}")
            return self.readyz()[0] == 200

        wait_until(ready, timeout, "ext_authz to be ready", fatal=(RuntimeError,))

    def _get(self, port: int, path: str, headers: dict[str, str]) -> tuple[int, bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        try:
            conn.request("GET", path, headers=headers)
            response = conn.getresponse()
            return response.status, response.read()
        finally:
            conn.close()

    def check(self, key: str) -> tuple[int, str]:
        """One ext_authz check of ``key``: the status and the reason code."""
        status, body = self._get(self.port, "/orders", {"x-api-key": key})
        return status, "ok" if status == 200 else json.loads(body)["reason"]

    def admin(
        self, method: str, path: str, body: object = None, token: str | None = None
    ) -> tuple[int, dict[str, str], object]:
        """One call to the admin HTTP side: status, headers (lower-case names), JSON body."""
        headers = {"content-type": "application/json"} if body is not None else {}
        if token is not None:
            headers["authorization"] = f"Bearer {token}"
        conn = http.client.HTTPConnection("127.0.0.1", self.admin_port, timeout=10)
        try:
            payload = None if body is None else json.dumps(body)
            conn.request(method, path, body=payload, headers=headers)
            response = conn.getresponse()
            raw = response.read()
            got = {k.lower(): v for k, v in response.getheaders()}
            return response.status, got, json.loads(raw) if raw else None
        finally:
            conn.close()

    def readyz(self) -> tuple[int, dict[str, str]]:
        status, body = self._get(self.admin_port, "/readyz", {})
        return status, json.loads(body)

    def metrics(self) -> str:
        return self._get(self.admin_port, "/metrics", {})[1].decode()

    def wait_for(self, key: str, want: tuple[int, str], timeout: float = 5.0) -> float:
        """Seconds until checking ``key`` answers ``want`` (polled every 10 ms)."""
        start = time.monotonic()
        wait_until(lambda: self.check(key) == want, timeout, f"{want}", interval=0.01)
        return time.monotonic() - start

    def terminate(self, timeout: float = 15.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def output(self) -> str:
        return self.stdout_path.read_text(errors="replace") + self.stderr_path.read_text(
            errors="replace"
        )
