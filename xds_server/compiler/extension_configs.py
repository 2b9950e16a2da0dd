"""HTTP filter configs delivered over ECDS: changed without touching the listener.

A filter in a listener's chain is normally configured inline (``HttpFilter.typed_config``): a
change of that config is a listener change, and Envoy replaces the listener by draining its
connections. A filter whose config changes on its own schedule (jwt_authn's keys after a JWKS
refresh) is better configured over ECDS: the chain holds an ``HttpFilter`` with
``config_discovery`` (``discovered_http_filter``), and the config is its own resource
(``extension_config_resource``), a ``TypedExtensionConfig`` named like the filter. A new
config then changes only the ECDS version: Envoy swaps it in place, the listener stays.

Rules:

* the resource name *is* the filter's name (Envoy asks for the filter's name over ECDS), so
  one filter name has one config across all listeners; per-route differences go into
  ``typed_per_filter_config`` as usual;
* the config's type must stay one of the filter's ``type_urls``: Envoy refuses a config of
  another type (and the validate-mode validator checks it too);
* the filter's name still needs its row in ``filters.py``, like any filter.
"""

from __future__ import annotations

from envoy.config.core.v3 import config_source_pb2, extension_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from google.protobuf.message import Message

from xds_server.compiler.protos import ADS, pack
from xds_server.snapshot.snapshot import Resource

__all__ = ["discovered_http_filter", "extension_config_resource", "type_url_of"]


def type_url_of(config: type[Message] | Message) -> str:
    """``type.googleapis.com/<full name>`` of a config message or class."""
    return f"type.googleapis.com/{config.DESCRIPTOR.full_name}"


def discovered_http_filter(
    name: str, config_type: type[Message], disabled: bool = False
) -> hcm_pb2.HttpFilter:
    """A chain entry whose config comes over ECDS as the resource ``name``, of type
    ``config_type``. Envoy warms the listener until the config arrives (no default config:
    a filter never runs without its real config)."""
    source = config_source_pb2.ExtensionConfigSource(
        config_source=ADS, type_urls=[type_url_of(config_type)]
    )
    return hcm_pb2.HttpFilter(name=name, config_discovery=source, disabled=disabled)


def extension_config_resource(name: str, config: Message) -> Resource:
    """The ECDS resource ``name`` carrying ``config``."""
    return Resource.of(
        name, extension_pb2.TypedExtensionConfig(name=name, typed_config=pack(config))
    )
