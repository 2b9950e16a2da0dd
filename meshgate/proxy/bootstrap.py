"""Render the Envoy bootstrap (``envoy/bootstrap.yaml``) for a node.

The template is the single source of truth, shipped inside the package as
``meshgate/defaults/bootstrap.yaml`` (a link to ``envoy/bootstrap.yaml`` in the source tree).
Two optional parts of the ``meshgate_xds`` cluster are added here rather than written into the
template, because ``string.Template`` cannot leave a block out: mutual TLS towards the control
plane (:class:`XdsTls`, docs/operations.md shows the resulting YAML for hand-written
bootstraps), and a Unix-socket (``pipe``) address instead of HOST:PORT, which only the canary
uses.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from string import Template
from typing import Any, Literal

import yaml

XDS_CLUSTER = "meshgate_xds"


@dataclass(frozen=True)
class XdsTls:
    """Envoy's side of mutual TLS on xDS: its client certificate and key, the CA that signed
    the control plane's certificate, and the name that certificate must carry (sent as SNI
    and matched against its DNS subject alternative names)."""

    cert: str
    key: str
    ca: str
    server_name: str = "localhost"


@dataclass(frozen=True)
class BootstrapParams:
    node_id: str
    xds_port: int
    admin_port: int
    node_cluster: str = "meshgate"
    xds_host: str = "127.0.0.1"
    api_type: Literal["GRPC", "DELTA_GRPC"] = "GRPC"
    max_connections: int = 50_000
    #: Heap budget of the overload manager: above 95 % Envoy shrinks its heap, above 98 % it
    #: refuses new requests (503) rather than grow until the kernel kills it.
    max_heap_bytes: int = 1 << 30
    #: Mutual TLS towards the control plane; None for plaintext (loopback only).
    xds_tls: XdsTls | None = None
    #: A Unix socket path to reach the control plane at instead of xds_host:xds_port.
    xds_pipe: str | None = None


def bootstrap_template() -> str:
    return resources.files("meshgate.defaults").joinpath("bootstrap.yaml").read_text("utf-8")


def xds_tls_transport_socket(tls: XdsTls) -> dict[str, Any]:
    """The ``transport_socket`` of the ``meshgate_xds`` cluster for mutual TLS."""
    return {
        "name": "envoy.transport_sockets.tls",
        "typed_config": {
            "@type": "type.googleapis.com/"
            "envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
            "sni": tls.server_name,
            "common_tls_context": {
                "alpn_protocols": ["h2"],
                "tls_certificates": [
                    {
                        "certificate_chain": {"filename": tls.cert},
                        "private_key": {"filename": tls.key},
                    }
                ],
                "validation_context": {
                    "trusted_ca": {"filename": tls.ca},
                    "match_typed_subject_alt_names": [
                        {"san_type": "DNS", "matcher": {"exact": tls.server_name}}
                    ],
                },
            },
        },
    }


def render_bootstrap(params: BootstrapParams) -> str:
    """The bootstrap YAML for one Envoy; pure apart from reading the packaged template."""
    text = Template(bootstrap_template()).substitute(
        node_id=params.node_id,
        node_cluster=params.node_cluster,
        xds_host=params.xds_host,
        xds_port=params.xds_port,
        admin_port=params.admin_port,
        api_type=params.api_type,
        max_connections=params.max_connections,
        max_heap_bytes=params.max_heap_bytes,
    )
    if params.xds_tls is None and params.xds_pipe is None:
        return text
    doc = yaml.safe_load(text)
    cluster = next(c for c in doc["static_resources"]["clusters"] if c["name"] == XDS_CLUSTER)
    if params.xds_tls is not None:
        cluster["transport_socket"] = xds_tls_transport_socket(params.xds_tls)
    if params.xds_pipe is not None:
        endpoint = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]
        endpoint["address"] = {"pipe": {"path": params.xds_pipe}}
    return yaml.safe_dump(doc, sort_keys=False)
