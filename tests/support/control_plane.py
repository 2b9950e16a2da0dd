"""Test and benchmark support: the control plane as a child process, polling, config files.

Kept out of the production packages: ``meshgate up`` needs only the command line
(:class:`meshgate.cli.control_plane.ControlPlaneCommand`); the benchmarks import this too, so
they and the tests start, poll and stop the control plane the same way.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, Any, TypeVar

import yaml

from meshgate.cli.control_plane import ControlPlaneCommand, http_get
from meshgate.runtime.processes import spawn, stop_process

__all__ = [
    "ControlPlaneExited",
    "ControlPlaneProcess",
    "http_get",
    "wait_until",
    "write_config_file",
]

T = TypeVar("T")


def wait_until(
    predicate: Callable[[], T | None],
    timeout: float = 10.0,
    what: str = "a condition",
    interval: float = 0.02,
    fatal: tuple[type[Exception], ...] = (),
) -> T:
    """Poll ``predicate`` until it returns something truthy. An exception counts as "not yet"
    (the last one is named in the TimeoutError), except the ``fatal`` ones, which end the wait
    at once (e.g. the process being waited for has exited)."""
    deadline = time.monotonic() + timeout
    last_exc: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = predicate()
            if value:
                return value
        except fatal:
            raise
        except Exception as exc:  # retried until the deadline
            last_exc = exc
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout:g}s waiting for {what} ({last_exc})")


def write_config_file(path: Path, config: dict[str, Any]) -> None:
    """Replace the file atomically, as editors and ConfigMap updates do: the watcher never
    reads half a file."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(yaml.safe_dump(config, sort_keys=False))
    os.replace(tmp, path)


class ControlPlaneExited(RuntimeError):
    pass


class ControlPlaneProcess(ControlPlaneCommand):
    """One ``python -m xds_server`` child on loopback ports (meshgate up's own command line),
    with what tests and benchmarks need: readiness, status, metrics, a SIGKILL."""

    def __init__(
        self,
        config_path: str | Path,
        xds_port: int,
        admin_port: int,
        validator: str = "canary",
        envoy_path: str | None = None,
        extra_args: Sequence[str] = (),
        stdout: int | IO[bytes] | None = None,
        stderr: int | IO[bytes] | None = None,
    ) -> None:
        super().__init__(config_path, xds_port, admin_port, validator, envoy_path, extra_args)
        self._stdout, self._stderr = stdout, stderr
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        pid: int = self.proc.pid
        return pid

    def start(self) -> None:
        self.proc = spawn(self.argv(), stdout=self._stdout, stderr=self._stderr)

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def _check_alive(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            raise ControlPlaneExited(f"the control plane exited with code {self.proc.returncode}")

    def live(self) -> bool:
        """/healthz answers (the process runs; it may have no valid config yet)."""
        self._check_alive()
        with contextlib.suppress(OSError):
            return self.get("/healthz")[0] == 200
        return False

    def ready(self) -> bool:
        """/readyz is 200: a valid config is published."""
        self._check_alive()
        with contextlib.suppress(OSError):
            return self.get("/readyz")[0] == 200
        return False

    def get(self, path: str) -> tuple[int, str]:
        status, body = http_get(self.admin_url + path)
        return status, body.decode(errors="replace")

    def status(self) -> dict[str, Any]:
        code, body = self.get("/status")
        if code != 200:
            raise OSError(f"GET /status: HTTP {code}")
        data: dict[str, Any] = json.loads(body)
        return data

    def metrics(self) -> dict[str, float]:
        """Samples of the Prometheus exposition by full sample name (labels included)."""
        out: dict[str, float] = {}
        for line in self.get("/metrics")[1].splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                with contextlib.suppress(ValueError):
                    out[name] = float(value)
        return out

    def kill(self) -> None:
        """SIGKILL, no goodbye: how a crash looks to the Envoys."""
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait()

    def stop(self, grace: float = 5.0) -> int | None:
        return stop_process(self.proc, grace) if self.proc is not None else None
