"""Response compression: one Envoy compressor filter per algorithm (gzip, brotli, zstd).

A listener with ``compression`` has the compressors on for every route, and a route may opt out
(``compression: false``, a per-route ``disabled``). A listener without it but with routes that
ask for compression gets the compressors *disabled*, with the default settings, switched on by
those routes only.

``CommonDirectionConfig.content_type`` is deprecated in Envoy 1.40 (it logs a warning) in
favour of ``content_type_matcher``, which the published API package (xds-protos) does not have
yet; ``tests/integration/test_deprecated_fields.py`` fails once it does.
"""

from __future__ import annotations

from envoy.config.core.v3 import extension_pb2
from envoy.config.route.v3 import route_components_pb2 as rc_pb2
from envoy.extensions.compression.brotli.compressor.v3 import brotli_pb2
from envoy.extensions.compression.gzip.compressor.v3 import gzip_pb2
from envoy.extensions.compression.zstd.compressor.v3 import zstd_pb2
from envoy.extensions.filters.http.compressor.v3 import compressor_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from google.protobuf import wrappers_pb2
from google.protobuf.message import Message

from meshgate.config import Listener, Route
from meshgate.config.protection import Algorithm
from meshgate.config.protection import Compression as CompressionSettings
from xds_server.compiler.context import ListenerContext, VirtualHostContext
from xds_server.compiler.feature import Feature
from xds_server.compiler.filters import COMPRESSOR, disable, enable, http_filter
from xds_server.compiler.protos import pack

#: Envoy's compressor library per algorithm: (library name, its config).
LIBRARIES: dict[Algorithm, tuple[str, type[Message]]] = {
    "gzip": ("gzip", gzip_pb2.Gzip),
    "brotli": ("brotli", brotli_pb2.Brotli),
    "zstd": ("zstd", zstd_pb2.Zstd),
}


def compressor_name(algorithm: Algorithm) -> str:
    return f"{COMPRESSOR}{algorithm}"


def settings(listener: Listener) -> CompressionSettings | None:
    """The listener's compression settings; defaults when only a route asks for compression."""
    if listener.compression is not None:
        return listener.compression
    if any(route.compression for vh in listener.virtual_hosts for route in vh.routes):
        return CompressionSettings()
    return None


def compressor(algorithm: Algorithm, config: CompressionSettings) -> compressor_pb2.Compressor:
    library, library_config = LIBRARIES[algorithm]
    return compressor_pb2.Compressor(
        # On equal q-values Envoy would follow the client's order; the operator's first
        # algorithm is the one meant to win.
        choose_first=algorithm == config.algorithms[0],
        compressor_library=extension_pb2.TypedExtensionConfig(
            name=library, typed_config=pack(library_config())
        ),
        response_direction_config=compressor_pb2.Compressor.ResponseDirectionConfig(
            common_config=compressor_pb2.Compressor.CommonDirectionConfig(
                min_content_length=wrappers_pb2.UInt32Value(value=config.min_size),
                content_type=config.content_types,
            )
        ),
    )


class Compression(Feature):
    name = "compression"
    http_filter_names = tuple(compressor_name(a) for a in LIBRARIES)

    def http_filters(self, ctx: ListenerContext) -> list[hcm_pb2.HttpFilter]:
        config = ctx.memoized("compression.settings", lambda: settings(ctx.listener))
        if config is None:
            return []
        off_by_default = ctx.listener.compression is None
        return [
            http_filter(compressor_name(a), compressor(a, config), disabled=off_by_default)
            for a in config.algorithms
        ]

    def patch_route(self, ctx: VirtualHostContext, route: Route, out: rc_pb2.Route) -> None:
        if route.compression is None:
            return
        config = ctx.memoized("compression.settings", lambda: settings(ctx.listener))
        on_by_default = ctx.listener.compression is not None
        if config is not None and route.compression != on_by_default:
            for algorithm in config.algorithms:
                out.typed_per_filter_config[compressor_name(algorithm)].CopyFrom(
                    enable() if route.compression else disable()
                )
