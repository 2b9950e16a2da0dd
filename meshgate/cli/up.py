"""``meshgate up``: the whole gateway on one machine, in the right order, stopped cleanly.

Children: the demo upstreams the config asks for, the control plane (``python -m xds_server``)
and Envoy. Each runs in its own session (so the terminal's Ctrl-C reaches only us and we stop
them in order) with a parent-death signal (so none outlives us, even after ``kill -9``).
Stop order: Envoy first (no new requests), then the control plane, then the upstreams.
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from types import FrameType

from meshgate.cli.control_plane import (
    ControlPlaneExited,
    ControlPlaneProcess,
    http_get,
    wait_until,
)
from meshgate.config import GatewayConfig, Route
from meshgate.loader import ConfigError, load_config, print_problems
from meshgate.proxy.bootstrap import BootstrapParams
from meshgate.proxy.envoy_process import (
    EnvoyNotFoundError,
    EnvoyProcess,
    find_envoy,
    spawn,
    stop_process,
)


@dataclass
class UpOptions:
    config: str | None = None
    envoy_path: str | None = None
    xds_port: int = 18000
    control_admin_port: int = 18001
    envoy_admin_port: int = 9901
    validator: str = "canary"
    api_type: str = "GRPC"


def default_config_path() -> str:
    return str(resources.files("meshgate.defaults").joinpath("quickstart.yaml"))


class ChildDied(RuntimeError):
    pass


class Stack:
    def __init__(self, opts: UpOptions, config_path: str, config: GatewayConfig) -> None:
        self.opts = opts
        self.config_path = config_path
        self.config = config
        self.children: list[tuple[str, subprocess.Popen[bytes]]] = []
        self.envoy: EnvoyProcess | None = None
        self.stopping = False

    def _spawn(self, name: str, argv: list[str]) -> None:
        self.children.append((name, spawn(argv)))

    def start(self) -> None:
        py = sys.executable
        for demo in self.config.demo_upstreams:
            self._spawn(
                f"demo upstream {demo.name}",
                [
                    py,
                    "-m",
                    "meshgate.cli.demo_upstream",
                    "--name",
                    demo.name,
                    "--host",
                    demo.address,
                    "--port",
                    str(demo.port),
                ],
            )
        o = self.opts
        plane = ControlPlaneProcess(
            self.config_path, o.xds_port, o.control_admin_port, o.validator, o.envoy_path
        )
        plane.start()
        assert plane.proc is not None
        self.children.append(("control plane", plane.proc))
        self._wait(plane.ready, "control plane", 60)
        self.envoy = EnvoyProcess(
            BootstrapParams(
                node_id="meshgate-local",
                xds_port=o.xds_port,
                admin_port=o.envoy_admin_port,
                api_type="DELTA_GRPC" if o.api_type == "DELTA_GRPC" else "GRPC",
            ),
            envoy_path=o.envoy_path,
            log_level="warning",
        )
        self.envoy.start()
        envoy_ready = f"{self.envoy.admin_url}/ready"
        self._wait(lambda: http_get(envoy_ready, 1.0)[0] == 200, "Envoy", 30)

    def _wait(self, ready: Callable[[], bool], what: str, timeout: float) -> None:
        """Until ``ready``; a Ctrl-C or a child dying ends the wait at once."""

        def check() -> bool:
            if self.stopping:
                raise KeyboardInterrupt
            dead = self.dead_child()
            if dead:
                raise ChildDied(f"{dead} exited while starting")
            return ready()

        try:
            wait_until(check, timeout, what, 0.1, fatal=(ChildDied, ControlPlaneExited))
        except TimeoutError:
            raise RuntimeError(f"{what} was not ready within {timeout:g}s") from None

    def dead_child(self) -> str | None:
        for name, proc in self.children:
            if proc.poll() is not None:
                return f"{name} (exit code {proc.returncode})"
        if self.envoy is not None and self.envoy.proc is not None and not self.envoy.running():
            return f"Envoy (exit code {self.envoy.proc.returncode})"
        return None

    def stop(self) -> None:
        if self.envoy is not None:
            self.envoy.stop(grace=5)
        for _, proc in reversed(self.children):
            stop_process(proc, grace=5)

    def banner(self) -> str:
        o = self.opts
        lines = [
            "",
            "meshgate is up",
            f"  config          {self.config_path} (watched: edits go live)",
        ]
        for listener in self.config.listeners:
            everywhere = listener.address in ("0.0.0.0", "::")
            host = "127.0.0.1" if everywhere else listener.address
            where = "  (listening on ALL interfaces)" if everywhere else ""
            lines.append(f"  listener {listener.name:<7}http://{host}:{listener.port}/{where}")
            for vh in listener.virtual_hosts:
                for r in vh.routes:
                    lines.append(f"      {_describe_route(r)}")
        lines += [
            f"  envoy admin     http://127.0.0.1:{o.envoy_admin_port}/ (loopback only)",
            f"  control plane   http://127.0.0.1:{o.control_admin_port}/status  "
            f"(/healthz /readyz /metrics), xDS on 127.0.0.1:{o.xds_port}",
            "  access logs     JSON on stdout; Ctrl-C stops everything",
            "",
        ]
        return "\n".join(lines)


def _describe_route(route: Route) -> str:
    m = route.match
    what = m.prefix or m.path or f"~{m.regex}"
    if route.split is not None:
        target = "split " + " / ".join(f"{v.label} {v.weight}" for v in route.split.variants)
    elif route.direct_response is not None:
        target = f"direct {route.direct_response.status}"
    else:
        target = route.service or "?"
    cond = [*m.methods, *(f"header {h.name}" for h in m.headers)]
    return f"{what:<28} -> {target}" + (f"  (only {', '.join(cond)})" if cond else "")


def wanted_ports(opts: UpOptions, config: GatewayConfig) -> list[tuple[str, int, str]]:
    """Every socket ``meshgate up`` will bind: (address, port, who)."""
    out = [
        ("127.0.0.1", opts.xds_port, "the control plane's xDS port (--xds-port)"),
        ("127.0.0.1", opts.control_admin_port, "the control plane's HTTP port (--admin-port)"),
        ("127.0.0.1", opts.envoy_admin_port, "Envoy's admin (--envoy-admin-port)"),
    ]
    out += [(lst.address, lst.port, f"listener {lst.name!r}") for lst in config.listeners]
    out += [(d.address, d.port, f"demo upstream {d.name!r}") for d in config.demo_upstreams]
    return out


def ports_in_use(wanted: list[tuple[str, int, str]]) -> list[str]:
    """Which of the sockets cannot be bound now, as messages; checked before starting
    anything, so a second ``meshgate up`` fails with one clear line instead of a half-started
    stack whose health checks are answered by the first one."""
    busy = []
    for address, port, who in wanted:
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind((address, port))
            except OSError as exc:
                busy.append(f"port {port} on {address} for {who} is not free: {exc.strerror}")
    return busy


def run_up(opts: UpOptions) -> int:
    config_path = opts.config or default_config_path()
    try:
        loaded = load_config(config_path)
        find_envoy(opts.envoy_path)
    except ConfigError as exc:
        print_problems(exc)
        return 1
    except EnvoyNotFoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    busy = ports_in_use(wanted_ports(opts, loaded.config))
    if busy:
        for line in busy:
            print(f"error: {line}", file=sys.stderr)
        print("error: is another meshgate running? choose other ports or stop it", file=sys.stderr)
        return 1
    stack = Stack(opts, str(Path(config_path).resolve()), loaded.config)

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stack.stopping = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    code = 0
    try:
        stack.start()
        print(stack.banner(), file=sys.stderr, flush=True)
        while not stack.stopping:
            dead = stack.dead_child()
            if dead:
                print(f"error: {dead} stopped unexpectedly; shutting down", file=sys.stderr)
                code = 1
                break
            time.sleep(0.2)
    except KeyboardInterrupt:
        pass
    except (RuntimeError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        code = 1
    finally:
        print("meshgate: stopping", file=sys.stderr, flush=True)
        stack.stop()
    return code


def fetch_status(url: str) -> dict[str, object]:
    with urllib.request.urlopen(url.rstrip("/") + "/status", timeout=5) as resp:
        data: dict[str, object] = json.loads(resp.read())
        return data
