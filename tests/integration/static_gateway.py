"""Real Envoy serving a compiled config from a static bootstrap.

For tests of compiled features that need a feature set the control plane does not run yet
(the policy tests need a JWT filter, see ``tests/support/minimal_jwt.py``): the config is
compiled in the test process, checked like a snapshot, inlined into a static bootstrap (the
validator's ``static_bootstrap``) and served by the real Envoy binary to real upstreams.
"""

from __future__ import annotations

import json
import tempfile
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from meshgate.config import GatewayConfig
from meshgate.proxy.envoy_process import find_envoy, free_port, spawn, stop_process
from xds_server.compiler import compile_resources
from xds_server.compiler.feature import Feature
from xds_server.publish.validation import static_bootstrap
from xds_server.snapshot.snapshot import Snapshot


class StaticGateway:
    """One Envoy on a static bootstrap of ``config`` compiled with ``features``."""

    def __init__(self, config: GatewayConfig, features: Sequence[Feature]) -> None:
        snapshot = Snapshot.build(compile_resources(config, features=features)).check()
        bootstrap: dict[str, Any] = static_bootstrap(snapshot)
        for listener in bootstrap["static_resources"]["listeners"]:
            listener.pop("bindToPort", None)  # the validator's bootstrap binds nothing
        self.admin_port = free_port()
        bootstrap["admin"] = {
            "address": {"socket_address": {"address": "127.0.0.1", "port_value": self.admin_port}}
        }
        self._dir = tempfile.TemporaryDirectory(prefix="static-envoy-")
        path = Path(self._dir.name) / "bootstrap.json"
        path.write_text(json.dumps(bootstrap))
        self.stdout = open(Path(self._dir.name) / "stdout", "wb")
        self.proc = spawn(
            [
                find_envoy(None),
                "-c",
                str(path),
                "--log-level",
                "warning",
                "--use-dynamic-base-id",
                "--file-flush-interval-msec",
                "100",
            ],
            stdout=self.stdout,
            stderr=self.stdout,
        )
        self._wait_ready()

    def _wait_ready(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"envoy exited: {self.output()[-3000:]}")
            try:
                with urllib.request.urlopen(self.admin("/ready"), timeout=1) as resp:
                    if resp.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.05)
        raise TimeoutError(f"envoy not ready: {self.output()[-3000:]}")

    def admin(self, path: str) -> str:
        return f"http://127.0.0.1:{self.admin_port}{path}"

    def output(self) -> str:
        self.stdout.flush()
        return (Path(self._dir.name) / "stdout").read_text(errors="replace")

    def access_log(self) -> list[dict[str, Any]]:
        return [json.loads(ln) for ln in self.output().splitlines() if ln.startswith("{")]

    def stats(self, prefix: str) -> dict[str, int]:
        with urllib.request.urlopen(self.admin(f"/stats?filter={prefix}"), timeout=2) as resp:
            text = resp.read().decode()
        out: dict[str, int] = {}
        for line in text.splitlines():
            name, _, value = line.partition(": ")
            if value.strip().isdigit():
                out[name] = int(value)
        return out

    def stop(self) -> None:
        stop_process(self.proc, 3)
        self.stdout.close()
        self._dir.cleanup()
