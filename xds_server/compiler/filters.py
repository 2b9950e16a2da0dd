"""The one HTTP filter order table, and the listener's filter chain built from it.

Envoy runs a listener's HTTP filters in chain order on requests and in reverse on responses,
so where a filter sits decides what it sees: whether a CORS preflight is answered before
anything else runs, whether a cache hit gets the security headers, whether a body limit holds
before a filter buffers. That decision is made here, once, for every feature: a feature only
says *which* filters a listener needs (``Feature.http_filters``), and :func:`http_filter_chain`
places them by :data:`HTTP_FILTER_ORDER`. A filter without a row cannot be emitted.

The identity filters (issue "identity at the edge") sit after CORS, so a preflight needs no
credentials, and after the response-header filter, so their 401s and 403s get the security
headers: IP rules, then sign-in, token verification, token checks, deny rules, grants. The body
buffer comes after them, so an unauthenticated request is never buffered. ext_proc will go
after authorization, so unauthenticated requests never reach a Python hop; the router is last.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from envoy.config.route.v3 import route_components_pb2 as rc_pb2
from envoy.extensions.filters.http.router.v3 import router_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from google.protobuf import any_pb2
from google.protobuf.message import Message

from xds_server.compiler.identity_names import (
    ALLOW_RBAC_FILTER,
    CLIENT_HEADERS_FILTER,
    DENY_RBAC_FILTER,
    IP_RBAC_FILTER,
    JWT_FILTER,
    OAUTH2_FILTER,
    TOKEN_RBAC_FILTER,
)
from xds_server.compiler.protos import pack

if TYPE_CHECKING:
    from xds_server.compiler.context import ListenerContext

CORS = "envoy.filters.http.cors"
BUFFER = "envoy.filters.http.buffer"
#: One compressor filter per algorithm: ``envoy.filters.http.compressor.gzip`` and so on.
COMPRESSOR = "envoy.filters.http.compressor."
RESPONSE_HEADERS = "envoy.filters.http.header_mutation"
CACHE = "envoy.filters.http.cache"
ROUTER = "envoy.filters.http.router"


@dataclass(frozen=True)
class Slot:
    """One row of the order table: a filter name (or, ending in '.', a family of names that
    keep the order their feature emits them in) and why it sits where it does."""

    name: str
    why: str

    @property
    def family(self) -> bool:
        return self.name.endswith(".")

    def holds(self, filter_name: str) -> bool:
        """``filter_name`` belongs here (a family row also holds its own name, which is how
        a feature whose filter names depend on the config declares them)."""
        if self.family:
            return filter_name.startswith(self.name)
        return filter_name == self.name


#: The HTTP filter order, first to last. Adding a filter is adding a row here.
HTTP_FILTER_ORDER: tuple[Slot, ...] = (
    Slot(
        CLIENT_HEADERS_FILTER,
        "first: removes every client-sent x-meshgate-* header, so no later filter and no "
        "upstream can mistake a forged identity header for one meshgate set",
    ),
    Slot(
        CORS,
        "answers a preflight before anything else runs (so it needs no credentials), and "
        "adds CORS headers to every response, local replies included",
    ),
    Slot(
        COMPRESSOR,
        "compresses what the filters after it (and the upstream) send; one filter "
        "per algorithm, in the operator's order (the first wins a tie)",
    ),
    Slot(
        RESPONSE_HEADERS,
        "sets security headers and x-cache on every response: cache hits and local "
        "replies included, the 401s and 403s of the filters after it too",
    ),
    Slot(IP_RBAC_FILTER, "refuses denied client addresses before any credential is looked at"),
    Slot(
        OAUTH2_FILTER,
        "browser sign-in, one filter per login (the filter has no per-route settings): sends "
        "a browser without a session to the identity provider, and puts the tokens of one "
        "that has a session where jwt_authn reads them",
    ),
    Slot(JWT_FILTER, "verifies tokens and writes who the caller is into metadata and headers"),
    Slot(TOKEN_RBAC_FILTER, "refuses (401) verified tokens whose header breaks the rules"),
    Slot(DENY_RBAC_FILTER, "a policy's deny rules win over every grant, so they run first"),
    Slot(ALLOW_RBAC_FILTER, "a policy's grants; what they do not allow is denied"),
    Slot(
        BUFFER,
        "the body limit holds before any later filter reads the body; after authorization, "
        "so an unauthenticated request is never buffered",
    ),
    Slot(
        CACHE,
        "last before the router: a hit is served through every filter before it (so "
        "it is compressed and gets its headers), a miss is stored as the upstream sent it",
    ),
    Slot(ROUTER, "always last: it sends the request upstream"),
)


class FilterOrderError(ValueError):
    """A feature emits or declares an HTTP filter the order table has no row for."""


def position(filter_name: str) -> int:
    """The row of ``filter_name`` in :data:`HTTP_FILTER_ORDER`."""
    for index, slot in enumerate(HTTP_FILTER_ORDER):
        if slot.holds(filter_name):
            return index
    raise FilterOrderError(
        f"HTTP filter {filter_name!r} has no row in HTTP_FILTER_ORDER "
        "(xds_server/compiler/filters.py); add one where it belongs"
    )


def declares(declared: tuple[str, ...], filter_name: str) -> bool:
    """``filter_name`` is in ``declared``, or in a family declared by its prefix (a name ending
    in '.', such as ``envoy.filters.http.oauth2.`` for every login's filter)."""
    return any(
        filter_name == name or (name.endswith(".") and filter_name.startswith(name))
        for name in declared
    )


def check_declared(declared: Iterable[tuple[str, tuple[str, ...]]]) -> None:
    """Every filter a feature declares has a row; no two features share a row; none is the
    router (the spine adds it)."""
    owner: dict[int, str] = {}
    for feature, names in declared:
        for name in names:
            try:
                row = position(name)
            except FilterOrderError as exc:
                raise FilterOrderError(f"feature {feature!r}: {exc}") from None
            if HTTP_FILTER_ORDER[row].name == ROUTER:
                raise FilterOrderError(f"feature {feature!r} declares the router filter")
            if owner.setdefault(row, feature) != feature:
                raise FilterOrderError(
                    f"features {owner[row]!r} and {feature!r} both declare filters of row "
                    f"{HTTP_FILTER_ORDER[row].name!r}"
                )


def http_filter_chain(ctx: ListenerContext) -> list[hcm_pb2.HttpFilter]:
    """The listener's HTTP filters: every feature's, placed by the order table (a family keeps
    its feature's order), then the router."""
    placed: list[tuple[int, int, hcm_pb2.HttpFilter]] = []
    for feature in ctx.features.http_filters:
        for flt in feature.http_filters(ctx):
            if not declares(feature.http_filter_names, flt.name):
                raise FilterOrderError(
                    f"feature {feature.name!r} emits HTTP filter {flt.name!r}, which it does "
                    "not declare in http_filter_names"
                )
            placed.append((position(flt.name), len(placed), flt))
    placed.sort(key=lambda item: (item[0], item[1]))
    chain = [flt for _, _, flt in placed]
    names = [f.name for f in chain]
    if len(set(names)) != len(names):
        raise FilterOrderError(f"listener {ctx.listener.name!r}: an HTTP filter twice in {names}")
    chain.append(hcm_pb2.HttpFilter(name=ROUTER, typed_config=pack(router_pb2.Router())))
    return chain


# --- per-filter helpers features share ---------------------------------------------------------


def http_filter(name: str, config: Message, disabled: bool = False) -> hcm_pb2.HttpFilter:
    """A chain entry; ``disabled`` ones run only on routes that switch them on."""
    return hcm_pb2.HttpFilter(name=name, typed_config=pack(config), disabled=disabled)


def enable() -> any_pb2.Any:
    """Per-route config that switches a filter disabled in the chain on (an empty config)."""
    return pack(rc_pb2.FilterConfig(config=any_pb2.Any()))


def disable() -> any_pb2.Any:
    """Per-route config that switches a filter off for one route."""
    return pack(rc_pb2.FilterConfig(disabled=True))
