"""Small protobuf builders shared by the compiler modules (packing, durations, structs)."""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from datetime import timedelta

from envoy.config.core.v3 import address_pb2, config_source_pb2
from envoy.config.core.v3 import substitution_format_string_pb2 as sfs_pb2
from google.protobuf import any_pb2, duration_pb2, struct_pb2, wrappers_pb2
from google.protobuf.message import Message

#: Every dynamic resource comes over the one ADS stream.
ADS = config_source_pb2.ConfigSource(
    ads=config_source_pb2.AggregatedConfigSource(),
    resource_api_version=config_source_pb2.V3,
)


def pack(message: Message) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message, deterministic=True)
    return packed


def duration(value: timedelta) -> duration_pb2.Duration:
    d = duration_pb2.Duration()
    d.FromTimedelta(value)
    return d


def struct(fields: Mapping[str, str]) -> struct_pb2.Struct:
    s = struct_pb2.Struct()
    s.update(dict(fields))
    return s


def json_format_string(fields: Mapping[str, str]) -> sfs_pb2.SubstitutionFormatString:
    return sfs_pb2.SubstitutionFormatString(
        json_format=struct(fields), content_type="application/json"
    )


def cidr_range(cidr: str) -> address_pb2.CidrRange:
    """``10.0.0.0/8`` or ``2001:db8::/32`` (validated by the model) as Envoy's ``CidrRange``."""
    net = ipaddress.ip_network(cidr)
    return address_pb2.CidrRange(
        address_prefix=str(net.network_address),
        prefix_len=wrappers_pb2.UInt32Value(value=net.prefixlen),
    )
