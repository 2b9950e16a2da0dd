"""Who the client is, and which client addresses may come in.

Every IP-based feature (IP rules here, later rate limits, intrusion detection and the access
log) reads one client address per listener, derived by Envoy from the socket peer and the
proxies the operator says are trusted. A client that sends its own ``x-forwarded-for`` can
never choose that address: only hops added by trusted proxies are believed.
"""

from __future__ import annotations

import ipaddress
from typing import Annotated, Any

from pydantic import BeforeValidator, Field, field_validator, model_validator

from meshgate.redact import show

from .values import Model

#: Request headers with this prefix are the gateway's own: every client-sent one is removed
#: before any filter runs (the compiler's ``client_headers`` feature), so upstreams can trust
#: them. The compiler's ``identity_names.IDENTITY_HEADER_PREFIX`` is this one.
GATEWAY_HEADER_PREFIX = "x-meshgate-"


def _check_cidr(value: Any) -> Any:
    """``10.0.0.0/8``, ``2001:db8::/32`` or a single address (a /32 or /128).

    Host bits set (``10.1.2.3/8``) are refused rather than masked: the operator meant either the
    network or the one address, and guessing wrong opens or closes the wrong door.
    """
    if isinstance(value, str):
        try:
            net = ipaddress.ip_network(value, strict=True)
        except ValueError:
            try:
                loose = ipaddress.ip_network(value, strict=False)
            except ValueError:
                raise ValueError(
                    f"invalid CIDR {show(value)}: write an IPv4 or IPv6 network such as "
                    "10.0.0.0/8 or 2001:db8::/32, or a single address"
                ) from None
            one = value.split("/", 1)[0]
            raise ValueError(
                f"invalid CIDR {show(value)}: host bits are set; write the network "
                f"{loose.with_prefixlen}, or {one}/{loose.max_prefixlen} for the one address"
            ) from None
        return net.with_prefixlen
    return value


Cidr = Annotated[str, BeforeValidator(_check_cidr)]


class ClientAddress(Model):
    """How the client address is found: the peer, or the address a trusted proxy saw.

    ``trusted_hops: N``: N proxies the operator runs stand in front of Envoy, each appending the
    address it was connected from to ``x-forwarded-for``; the N right-most entries are theirs,
    and the client is the N-th entry from the right (Envoy's ``xff_num_trusted_hops``). Entries
    further left were written by the client and are never believed. ``trusted_cidrs``: proxies
    are trusted by their address instead: ``x-forwarded-for`` is read only when the socket peer
    is in one of the CIDRs, and then from the right, skipping every entry in one of the CIDRs;
    the first entry outside them is the client. Default: no proxy is trusted; the client is the
    socket peer and ``x-forwarded-for`` is ignored.
    """

    trusted_hops: Annotated[int, Field(ge=0, le=16)] = 0
    trusted_cidrs: list[Cidr] = Field(default_factory=list)

    @field_validator("trusted_cidrs")
    @classmethod
    def _not_everyone(cls, cidrs: list[str]) -> list[str]:
        # A /0 makes every peer a trusted proxy: any client would choose its own address.
        for cidr in cidrs:
            if cidr.endswith("/0"):
                raise ValueError(
                    f"{show(cidr)} trusts every address as a proxy, so any client could choose "
                    "its own address with x-forwarded-for; list only your proxies' networks"
                )
        return cidrs

    @model_validator(mode="after")
    def _one_way(self) -> ClientAddress:
        if self.trusted_hops and self.trusted_cidrs:
            raise ValueError("use 'trusted_hops' or 'trusted_cidrs', not both")
        return self


class IpRules(Model):
    """Allow and deny lists of client addresses (CIDRs, IPv4 and IPv6).

    A client in ``deny`` is refused (403); with ``allow`` given, a client in none of its CIDRs
    is refused too. Deny wins. Rules of a listener, a virtual host and a route all apply to a
    request (each level can only narrow who comes in, never widen it). The client is the
    listener's ``client_address``, never a raw ``x-forwarded-for``.
    """

    allow: list[Cidr] = Field(default_factory=list)
    deny: list[Cidr] = Field(default_factory=list)

    @model_validator(mode="after")
    def _something(self) -> IpRules:
        if not self.allow and not self.deny:
            raise ValueError("'ip_rules' needs 'allow' or 'deny' (or both)")
        return self
