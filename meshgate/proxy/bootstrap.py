"""Render the Envoy bootstrap (``envoy/bootstrap.yaml``) for a node.

The template is the single source of truth, shipped inside the package as
``meshgate/defaults/bootstrap.yaml`` (a link to ``envoy/bootstrap.yaml`` in the source tree).
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from string import Template
from typing import Literal


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


def bootstrap_template() -> str:
    return resources.files("meshgate.defaults").joinpath("bootstrap.yaml").read_text("utf-8")


def render_bootstrap(params: BootstrapParams) -> str:
    """The bootstrap YAML for one Envoy; pure apart from reading the packaged template."""
    return Template(bootstrap_template()).substitute(
        node_id=params.node_id,
        node_cluster=params.node_cluster,
        xds_host=params.xds_host,
        xds_port=params.xds_port,
        admin_port=params.admin_port,
        api_type=params.api_type,
        max_connections=params.max_connections,
        max_heap_bytes=params.max_heap_bytes,
    )
