"""Typed settings every meshgate service shares, and the flags that set them.

Each service's settings are a ``kw_only`` dataclass deriving from :class:`ServiceSettings`, so
a service adds its own required fields (``config``) after the common ones with defaults, and
mypy sees every field. ``add_common_arguments`` / ``common_from_args`` keep the common flags
spelled the same way in every service.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

from meshgate.config_files import DEFAULT_MAX_CONFIG_FILES
from meshgate.files import DEFAULT_MAX_CONFIG_BYTES
from meshgate.yaml_bounds import DEFAULT_LIMITS, YamlLimits


def default_state_dir() -> Path:
    """``$XDG_STATE_HOME/meshgate``, by default ``~/.local/state/meshgate``: where every
    service keeps what must survive a restart (JWKS cache, the API key database)."""
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "meshgate"


LogFormat = Literal["json", "text"]


@dataclass(kw_only=True)
class ServiceSettings:
    #: HTTP HOST:PORT for /healthz /readyz /metrics (and a service's extras).
    admin_address: str = "127.0.0.1:0"
    log_level: str = "INFO"
    log_format: LogFormat = "json"
    #: Seconds between reporting NOT_SERVING and refusing new calls, so that load balancers
    #: watching health stop sending before the door closes (0: close at once).
    drain_delay: float = 0.0
    #: Seconds in-flight calls get to finish once new calls are refused; then they are cancelled.
    drain_grace: float = 5.0


def add_config_limit_arguments(parser: argparse.ArgumentParser) -> None:
    """``--max-config-bytes``, ``--max-config-nodes`` and ``--max-config-files``, the same on
    every command that reads a gateway config (``validate``, ``up``, the control plane), so a
    config that ``validate`` accepts with some limits is one the gateway accepts with the same."""
    parser.add_argument(
        "--max-config-bytes",
        type=int,
        default=DEFAULT_MAX_CONFIG_BYTES,
        metavar="N",
        help="largest config read (all its files together); a larger one is refused",
    )
    parser.add_argument(
        "--max-config-nodes",
        type=int,
        default=DEFAULT_LIMITS.max_nodes,
        metavar="N",
        help="most YAML nodes (keys, values, collections; about 11 per route) a config may "
        "have (all its files together); a larger one is refused before it is built",
    )
    parser.add_argument(
        "--max-config-files",
        type=int,
        default=DEFAULT_MAX_CONFIG_FILES,
        metavar="N",
        help="most files a config may be made of (a directory's files and their includes)",
    )


def yaml_limits(max_nodes: int) -> YamlLimits:
    """The default YAML limits with ``--max-config-nodes`` applied."""
    return replace(DEFAULT_LIMITS, max_nodes=max_nodes)


def add_common_arguments(
    parser: argparse.ArgumentParser, *, admin_address: str, what: str = "/healthz /readyz /metrics"
) -> None:
    parser.add_argument(
        "--admin-address", default=admin_address, metavar="HOST:PORT", help=f"HTTP for {what}"
    )
    parser.add_argument(
        "--log-level", default="INFO", metavar="LEVEL", help="DEBUG, INFO, WARNING or ERROR"
    )
    parser.add_argument(
        "--log-format",
        choices=["json", "text"],
        default="json",
        help="json: one object per line, for collectors; text: for a terminal",
    )
    parser.add_argument(
        "--drain-delay",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="on SIGTERM, seconds to report NOT_SERVING before refusing new calls",
    )
    parser.add_argument(
        "--drain-grace",
        type=float,
        default=5.0,
        metavar="SECONDS",
        help="on SIGTERM, seconds in-flight calls get to finish (a second signal: at once)",
    )


def common_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """The common fields of a parsed command line, as keyword arguments for a settings class."""
    return {
        "admin_address": args.admin_address,
        "log_level": args.log_level,
        "log_format": args.log_format,
        "drain_delay": args.drain_delay,
        "drain_grace": args.drain_grace,
    }


def split_address(address: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[v6]:PORT`` too) -> (host, port); a precise error otherwise."""
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"expected HOST:PORT, got {address!r}")
    return host.strip("[]"), int(port)


def is_loopback(host: str) -> bool:
    """Only what provably stays on this machine counts: 127.0.0.0/8, ::1 and ``localhost``.
    Any other name may resolve anywhere, and 0.0.0.0 / :: mean every interface."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
