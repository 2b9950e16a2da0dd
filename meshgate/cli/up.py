"""``meshgate up``: the whole gateway on one machine, supervised, stopped cleanly.

Children (:mod:`meshgate.cli.services`): the demo upstreams the config asks for, the services
the config needs (the control plane, ``python -m xds_server``) and Envoy, all run by one
:class:`~meshgate.runtime.supervisor.Supervisor`: a child that dies is restarted with backoff
and the others keep running (Envoy serves its last config while the control plane is away);
only a child that keeps crashing makes ``meshgate up`` give up. Each child runs in its own
session (so the terminal's Ctrl-C reaches only us and we stop them in order) with a
parent-death signal (so none outlives us, even after ``kill -9``). Stop order: Envoy first
(no new requests), then the control plane, then the upstreams.

Children's output is relayed line by line (:mod:`meshgate.runtime.log_relay`): readable text
on a terminal, JSON lines otherwise.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import signal
import socket
import sys
import urllib.request
from pathlib import Path
from types import FrameType

from meshgate.cli.services import stack_services
from meshgate.cli.up_options import UpOptions, default_config_path
from meshgate.config import GatewayConfig, Route
from meshgate.loader import ConfigError, load_config, print_problems
from meshgate.proxy.envoy_process import EnvoyNotFoundError, find_envoy
from meshgate.runtime.log_relay import LineFormat, LogRelay, Sink
from meshgate.runtime.log_text import Kind, TextFormatter
from meshgate.runtime.logs import JsonFormatter
from meshgate.runtime.settings import yaml_limits
from meshgate.runtime.supervisor import (
    FormatFactory,
    StopRequested,
    SupervisionFailed,
    Supervisor,
)

__all__ = ["UpOptions", "default_config_path", "fetch_status", "run_up"]

log = logging.getLogger("meshgate.up")


def output_modes(log_format: str, stdout_tty: bool, stderr_tty: bool) -> tuple[bool, bool]:
    """Whether (stdout, stderr) get readable text rather than JSON lines. ``auto`` decides
    per output, so ``meshgate up > access.log`` on a terminal keeps a JSON access log in the
    file and readable lines on the screen."""
    if log_format == "text":
        return True, True
    if log_format == "json":
        return False, False
    return stdout_tty, stderr_tty


class _SinkHandler(logging.Handler):
    """Our own log records, as JSON or through the text formatter, into the stderr sink, so
    they never splice with the children's lines."""

    def __init__(self, sink: Sink, fmt: LineFormat | None) -> None:
        super().__init__()
        self.sink = sink
        self.fmt = fmt
        self.setFormatter(JsonFormatter("meshgate"))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record).encode()
        except Exception:
            self.handleError(record)
            return
        self.sink.write(self.fmt(line) if self.fmt is not None else line + b"\n")


def _factory(formatter: TextFormatter | None) -> FormatFactory | None:
    if formatter is None:
        return None

    def make(label: str, kind: str) -> LineFormat:
        k: Kind = "access" if kind == "access" else "log"
        return functools.partial(formatter.format, label, k)

    return make


def _listener_url(address: str, port: int) -> tuple[str, bool]:
    everywhere = address in ("0.0.0.0", "::")
    return f"http://{'127.0.0.1' if everywhere else address}:{port}/", everywhere


def banner(opts: UpOptions, config_path: str, config: GatewayConfig, text_access: bool) -> str:
    lines = ["", "meshgate is up", f"  config          {config_path} (watched: edits go live)"]
    for listener in config.listeners:
        url, everywhere = _listener_url(listener.address, listener.port)
        where = "  (listening on ALL interfaces)" if everywhere else ""
        lines.append(f"  listener {listener.name:<7}{url}{where}")
        for vh in listener.virtual_hosts:
            for r in vh.routes:
                lines.append(f"      {_describe_route(r)}")
    admin = f"http://127.0.0.1:{opts.envoy_admin_port}"
    lines += [
        f"  envoy admin     {admin}/ (loopback only)",
        f"  envoy stats     {admin}/stats/prometheus (Prometheus)",
        f"  control plane   http://127.0.0.1:{opts.control_admin_port}/status  "
        f"(/healthz /readyz /metrics), xDS on 127.0.0.1:{opts.xds_port}"
        + (" (mutual TLS)" if opts.xds_tls == "auto" else ""),
        f"  access logs     {'text' if text_access else 'JSON'} on stdout; "
        "children that die are restarted; Ctrl-C stops everything",
        "",
    ]
    return "\n".join(lines)


def banner_fields(opts: UpOptions, config_path: str, config: GatewayConfig) -> dict[str, object]:
    """The banner as fields of one JSON log record, for output that is not a terminal."""
    admin = f"http://127.0.0.1:{opts.envoy_admin_port}"
    return {
        "config": config_path,
        "listeners": {
            lst.name: _listener_url(lst.address, lst.port)[0] for lst in config.listeners
        },
        "envoy_admin": f"{admin}/",
        "envoy_prometheus": f"{admin}/stats/prometheus",
        "control_plane": f"http://127.0.0.1:{opts.control_admin_port}/status",
        "xds": f"127.0.0.1:{opts.xds_port}",
        "xds_tls": "mutual" if opts.xds_tls == "auto" else "off",
    }


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
        loaded = load_config(
            config_path,
            opts.max_config_bytes,
            yaml_limits(opts.max_config_nodes),
            opts.max_config_files,
        )
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
    sys.stdout.flush()
    sys.stderr.flush()
    return _supervise(opts, str(Path(config_path).resolve()), loaded.config)


def _supervise(opts: UpOptions, config_path: str, config: GatewayConfig) -> int:
    try:
        services = stack_services(opts, config_path, config)
    except OSError as exc:  # e.g. the --pki-dir of --xds-tls auto cannot be used
        print(f"error: {exc}", file=sys.stderr)
        return 1
    text_out, text_err = output_modes(opts.log_format, os.isatty(1), os.isatty(2))
    color = "NO_COLOR" not in os.environ
    fmt_out = TextFormatter(color=color and os.isatty(1)) if text_out else None
    fmt_err = TextFormatter(color=color and os.isatty(2)) if text_err else None
    relay = LogRelay(Sink(1), Sink(2))
    own = TextFormatter(color=color and os.isatty(2), fields=False) if text_err else None
    handler = _SinkHandler(
        relay.stderr, functools.partial(own.format, "meshgate", "log") if own else None
    )
    ours = logging.getLogger("meshgate")
    ours.addHandler(handler)
    ours.setLevel(logging.INFO)
    ours.propagate = False
    supervisor = Supervisor(services, relay, _factory(fmt_out), _factory(fmt_err))

    def on_signal(signum: int, frame: FrameType | None) -> None:
        supervisor.request_stop()

    # SIGHUP too: a closed terminal (or ssh session) used to kill us outright, leaving
    # Envoy's directory behind and the children to the parent-death signal
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, on_signal)
    code = 0
    try:
        supervisor.start()
        if text_err:
            relay.stderr.write(banner(opts, config_path, config, text_out).encode() + b"\n")
        else:
            log.info("meshgate is up", extra={"fields": banner_fields(opts, config_path, config)})
        supervisor.run()
    except StopRequested:
        pass
    except SupervisionFailed as exc:
        log.error(exc.message, extra={"fields": {"stderr_tail": exc.stderr_tail}})
        code = 1
    except OSError as exc:  # e.g. a child cannot be spawned at all
        log.error(f"cannot run the stack: {exc}")
        code = 1
    finally:
        log.info("stopping")
        supervisor.stop()
        relay.close()
        ours.removeHandler(handler)
    return code


#: Largest /status answer read (a fleet of thousands of Envoys is a few megabytes); a larger
#: or endless answer is not meshgate's, and must not grow ``meshgate status`` without bound.
MAX_STATUS_BYTES = 64 * 1024 * 1024


def fetch_status(url: str) -> dict[str, object]:
    with urllib.request.urlopen(url.rstrip("/") + "/status", timeout=5) as resp:
        body = resp.read(MAX_STATUS_BYTES + 1)
        if len(body) > MAX_STATUS_BYTES:
            raise ValueError(f"the answer is larger than {MAX_STATUS_BYTES >> 20} MB")
        data: dict[str, object] = json.loads(body)
        return data
