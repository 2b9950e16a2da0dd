"""The children of ``meshgate up``, and which of them a config needs.

Every child is a :class:`~meshgate.runtime.supervisor.Child`, so all of them get the same
lifecycle: started in order and ready before the next, restarted with backoff when they die,
stopped in reverse order. A coming per-request service (ext_authz, rate limit, ext_proc) is
one more class here and one more line in :func:`needed_services`.
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
from pathlib import Path

from meshgate.cli.control_plane import ControlPlaneCommand, http_get
from meshgate.cli.up_options import UpOptions
from meshgate.config import DemoUpstream, GatewayConfig
from meshgate.proxy.bootstrap import BootstrapParams, XdsTls
from meshgate.proxy.envoy_process import WORKDIR_FAMILY, EnvoyProcess
from meshgate.runtime.pki import default_pki_dir, ensure_local_pki
from meshgate.runtime.supervisor import Child
from meshgate.runtime.workdirs import sweep_abandoned

ENVOY_NODE_ID = "meshgate-local"


def _answers(url: str) -> bool:
    with contextlib.suppress(OSError):
        return http_get(url, 1.0)[0] == 200
    return False


class DemoUpstreamService(Child):
    """One demo echo upstream (``meshgate.cli.demo_upstream``); ready when it accepts."""

    def __init__(self, demo: DemoUpstream) -> None:
        self.demo = demo
        self.name = f"demo upstream {demo.name}"
        self.label = demo.name
        self.ready_timeout = 15.0

    def argv(self) -> list[str]:
        d = self.demo
        return [
            sys.executable,
            "-m",
            "meshgate.cli.demo_upstream",
            "--name",
            d.name,
            "--host",
            d.address,
            "--port",
            str(d.port),
        ]

    def ready(self) -> bool:
        host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(self.demo.address, self.demo.address)
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as s:
            s.settimeout(0.5)
            return s.connect_ex((host, self.demo.port)) == 0


class ControlPlaneService(Child):
    """``python -m xds_server`` on loopback; ready when it has published a config."""

    name = "control plane"
    label = "control-plane"
    ready_timeout = 60.0

    def __init__(self, opts: UpOptions, config_path: str, tls_args: list[str]) -> None:
        self.process = ControlPlaneCommand(
            config_path,
            opts.xds_port,
            opts.control_admin_port,
            opts.validator,
            opts.envoy_path,
            extra_args=[
                *tls_args,
                "--max-config-bytes",
                str(opts.max_config_bytes),
                "--max-config-nodes",
                str(opts.max_config_nodes),
                "--max-config-files",
                str(opts.max_config_files),
            ],
        )

    def argv(self) -> list[str]:
        return self.process.argv()

    def ready(self) -> bool:
        return _answers(f"{self.process.admin_url}/readyz")

    def live(self) -> bool:
        """/healthz: its event loop answers (readiness may go for a good reason: a rejected
        config keeps the last good one published, but /readyz also reports a drain)."""
        return _answers(f"{self.process.admin_url}/healthz")


class EnvoyService(Child):
    """The gateway's Envoy; its stdout is the access log, its own lines are JSON on stderr.

    One bootstrap directory serves every restart: a restarted Envoy connects to the control
    plane and gets its config again over xDS."""

    name = "Envoy"
    label = "envoy"
    access_log = True
    ready_timeout = 30.0

    def __init__(self, opts: UpOptions, xds_tls: XdsTls | None = None) -> None:
        self.envoy = EnvoyProcess(
            BootstrapParams(
                node_id=ENVOY_NODE_ID,
                xds_port=opts.xds_port,
                admin_port=opts.envoy_admin_port,
                api_type="DELTA_GRPC" if opts.api_type == "DELTA_GRPC" else "GRPC",
                xds_tls=xds_tls,
            ),
            envoy_path=opts.envoy_path,
            log_level="warning",
            json_logs=True,
        )

    def argv(self) -> list[str]:
        return self.envoy.argv()

    def env(self) -> dict[str, str] | None:
        return self.envoy.env()

    def ready(self) -> bool:
        return _answers(f"{self.envoy.admin_url}/ready")

    def live(self) -> bool:
        """Any answer of its admin: /ready is 503 while Envoy drains or is overloaded,
        which is no reason to kill it."""
        with contextlib.suppress(OSError):
            http_get(f"{self.envoy.admin_url}/server_info", 1.0)
            return True
        return False

    def ask_to_stop(self, proc: subprocess.Popen[bytes]) -> None:
        """Through the admin: on SIGTERM Envoy logs warnings that read like trouble."""
        if not self.envoy.quit():
            super().ask_to_stop(proc)

    def close(self) -> None:
        """Remove our bootstrap directory, and those left by Envoys whose owner was killed
        during the run (the canary of a control plane that crashed): no Envoy is created
        after the last crash to sweep them."""
        self.envoy.close()
        sweep_abandoned(WORKDIR_FAMILY)


def xds_tls_wiring(opts: UpOptions) -> tuple[list[str], XdsTls | None]:
    """For ``--xds-tls auto``: the control plane's TLS flags and Envoy's side, from a local CA
    made (or reused) in the PKI directory; nothing for ``off``."""
    if opts.xds_tls != "auto":
        return [], None
    pki = ensure_local_pki(Path(opts.pki_dir) if opts.pki_dir else default_pki_dir())
    args = [
        "--xds-tls-cert",
        str(pki.server_cert),
        "--xds-tls-key",
        str(pki.server_key),
        "--xds-tls-client-ca",
        str(pki.ca_cert),
    ]
    return args, XdsTls(str(pki.client_cert), str(pki.client_key), str(pki.ca_cert), "localhost")


def needed_services(
    opts: UpOptions, config_path: str, config: GatewayConfig, tls_args: list[str]
) -> list[Child]:
    """The services Envoy calls that this config needs; today always the control plane."""
    return [ControlPlaneService(opts, config_path, tls_args)]


def stack_services(opts: UpOptions, config_path: str, config: GatewayConfig) -> list[Child]:
    """Every child in start order: upstreams, then the services, then Envoy."""
    tls_args, envoy_tls = xds_tls_wiring(opts)
    return [
        *(DemoUpstreamService(d) for d in config.demo_upstreams),
        *needed_services(opts, config_path, config, tls_args),
        EnvoyService(opts, envoy_tls),
    ]
