"""The control plane (``python -m xds_server``) as ``meshgate up`` starts it: its command line.

``meshgate up`` runs it under the supervisor (:mod:`meshgate.cli.services`); the tests and the
benchmarks start the very same command line through ``tests/support/control_plane.py``, so
all three run the control plane one way.
"""

from __future__ import annotations

import http.client
import sys
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path


def http_get(url: str, timeout: float = 2.0) -> tuple[int, bytes]:
    """(status, body); HTTP errors are answers too. Connection errors raise OSError, and so
    does an answer cut short (a server killed mid-reply), so callers need catch one type."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return int(resp.status), resp.read()
    except urllib.error.HTTPError as exc:
        try:
            return int(exc.code), exc.read()
        except http.client.HTTPException as cut:
            raise ConnectionError(f"{url}: answer cut short ({cut!r})") from cut
    except http.client.HTTPException as exc:
        raise ConnectionError(f"{url}: answer cut short ({exc!r})") from exc


@dataclass
class ControlPlaneCommand:
    """``python -m xds_server`` on loopback ports, as a command line."""

    config_path: str | Path
    xds_port: int
    admin_port: int
    validator: str = "canary"
    envoy_path: str | None = None
    extra_args: Sequence[str] = field(default_factory=tuple)

    @property
    def admin_url(self) -> str:
        return f"http://127.0.0.1:{self.admin_port}"

    def argv(self) -> list[str]:
        argv = [
            sys.executable,
            "-m",
            "xds_server",
            "--config",
            str(self.config_path),
            "--xds-address",
            f"127.0.0.1:{self.xds_port}",
            "--admin-address",
            f"127.0.0.1:{self.admin_port}",
            "--validator",
            self.validator,
        ]
        if self.envoy_path:
            argv += ["--envoy", self.envoy_path]
        return argv + list(self.extra_args)
