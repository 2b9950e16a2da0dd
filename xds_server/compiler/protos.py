"""Small protobuf builders shared by the compiler modules (packing, durations, structs)."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
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
    address = str(net.network_address)
    if isinstance(net, ipaddress.IPv6Network) and net.network_address.ipv4_mapped is not None:
        address = f"::ffff:{net.network_address.ipv4_mapped}"  # readable in a config dump
    return address_pb2.CidrRange(
        address_prefix=address,
        prefix_len=wrappers_pb2.UInt32Value(value=net.prefixlen),
    )


def ipv4_mapped(cidr: str) -> str | None:
    """The IPv4-mapped IPv6 form (RFC 4291 §2.5.5.2) of an IPv4 CIDR: ``10.0.0.0/8`` ->
    ``::ffff:10.0.0.0/104``; None for an IPv6 one."""
    net = ipaddress.ip_network(cidr)
    if not isinstance(net, ipaddress.IPv4Network):
        return None
    return f"::ffff:{net.network_address}/{96 + net.prefixlen}"


def cidr_ranges(cidrs: Iterable[str]) -> list[address_pb2.CidrRange]:
    """``cidrs`` as Envoy ``CidrRange``s, each IPv4 one followed by its IPv4-mapped IPv6 form.

    Envoy compares addresses by family: ``::ffff:10.0.0.1`` is not in ``10.0.0.0/8`` for it.
    An IPv4 client appears in that form on a dual-stack listener (``::``), and in the
    ``x-forwarded-for`` of a proxy that listens dual-stack (nginx, HAProxy on ``[::]``); without
    the mapped form such a client would pass every IPv4 deny list, and a dual-stack proxy would
    not be recognised as trusted.
    """
    out = []
    for cidr in cidrs:
        out.append(cidr_range(cidr))
        mapped = ipv4_mapped(cidr)
        if mapped is not None:
            out.append(cidr_range(mapped))
    return out
