"""Who the client is: the listener's ``client_address`` in its HTTP connection manager.

Envoy decides one client address per request, before any filter runs, and every IP-based
feature reads that one address: the ``ip_rules`` RBAC filter (``remote_ip``, never
``direct_remote_ip``), the access log (``%DOWNSTREAM_REMOTE_ADDRESS%``), later rate limits and
intrusion detection. Deciding it here, once, is what keeps a client from choosing its address
with its own ``x-forwarded-for``:

* no trusted proxy (the default): the socket peer; ``use_remote_address: true`` (the spine's
  edge default) and no hop trusted, so ``x-forwarded-for`` is never read, only appended to;
* ``trusted_hops: N``: ``xff_num_trusted_hops: N``: the N-th ``x-forwarded-for`` entry from the
  right, the one the outermost of N trusted proxies wrote; anything further left is the
  client's own and ignored;
* ``trusted_cidrs``: Envoy's ``xff`` original IP detection extension with ``xff_trusted_cidrs``:
  ``x-forwarded-for`` is read only when the peer is in one of the CIDRs, from the right,
  skipping entries in the CIDRs (Envoy 1.40 walks them). Envoy refuses an original IP detection
  extension together with ``use_remote_address``, so it is switched off on these listeners,
  and ``skip_xff_append: false`` keeps appending the peer to ``x-forwarded-for`` as the other
  modes do, so the upstream sees the whole chain. The trusted CIDRs come with the
  IPv4-mapped form of each IPv4 one (a dual-stack proxy writes its address so).
"""

from __future__ import annotations

from envoy.config.core.v3 import extension_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from envoy.extensions.http.original_ip_detection.xff.v3 import xff_pb2
from google.protobuf import wrappers_pb2

from meshgate.config.client import ClientAddress as ClientAddressSettings
from xds_server.compiler.context import ListenerContext
from xds_server.compiler.feature import Feature
from xds_server.compiler.protos import cidr_ranges, pack

#: Envoy's name of the x-forwarded-for original IP detection extension.
XFF_DETECTION = "envoy.http.original_ip_detection.xff"


def xff_detection(settings: ClientAddressSettings) -> extension_pb2.TypedExtensionConfig:
    """The original IP detection extension that trusts proxies by their address."""
    return extension_pb2.TypedExtensionConfig(
        name=XFF_DETECTION,
        typed_config=pack(
            xff_pb2.XffConfig(
                xff_trusted_cidrs=xff_pb2.XffTrustedCidrs(
                    cidrs=cidr_ranges(settings.trusted_cidrs)
                ),
                skip_xff_append=wrappers_pb2.BoolValue(value=False),
            )
        ),
    )


class ClientAddress(Feature):
    name = "client_address"

    def patch_hcm(self, ctx: ListenerContext, hcm: hcm_pb2.HttpConnectionManager) -> None:
        settings = ctx.listener.client_address
        if settings.trusted_cidrs:
            hcm.ClearField("use_remote_address")
            hcm.original_ip_detection_extensions.append(xff_detection(settings))
        elif settings.trusted_hops:
            hcm.xff_num_trusted_hops = settings.trusted_hops
