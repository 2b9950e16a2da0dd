"""A small ADS client of our own for tests, plus builders for the Envoy resources they serve.

The client drives a stream step by step the way Envoy does (first request with the node, ACK
with the response's version and nonce, NACK with ``error_detail`` and the last accepted
version), but also lets a test do what Envoy would not, such as reusing a stale nonce.
Responses are read by a background task into a queue, so waiting with a timeout never cancels
a read in the middle of the gRPC call.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import grpc
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import address_pb2, base_pb2, config_source_pb2
from envoy.config.endpoint.v3 import endpoint_components_pb2, endpoint_pb2
from envoy.config.listener.v3 import listener_components_pb2, listener_pb2
from envoy.config.route.v3 import route_components_pb2, route_pb2
from envoy.extensions.filters.http.router.v3 import router_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2
from envoy.type.matcher.v3 import regex_pb2
from google.protobuf import any_pb2, duration_pb2
from google.rpc import status_pb2

from xds_server.server.ads import AdsServicer, add_to_server
from xds_server.server.status import StatusRegistry
from xds_server.snapshot.cache import SnapshotCache
from xds_server.snapshot.snapshot import Resource, Snapshot

Req = TypeVar("Req")
Resp = TypeVar("Resp")

# -- server -------------------------------------------------------------------------------


@dataclass
class AdsServer:
    server: grpc.aio.Server
    servicer: AdsServicer
    cache: SnapshotCache
    registry: StatusRegistry
    port: int

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"


@contextlib.asynccontextmanager
async def serve_ads(cache: SnapshotCache | None = None) -> AsyncIterator[AdsServer]:
    """A real grpc.aio server with our servicer on a free loopback port."""
    cache = cache or SnapshotCache()
    registry = StatusRegistry()
    server = grpc.aio.server()
    servicer = AdsServicer(cache, registry)
    add_to_server(server, servicer)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield AdsServer(server, servicer, cache, registry, port)
    finally:
        servicer.close()
        await server.stop(1)


async def until(cond: Callable[[], bool], timeout: float = 2.0) -> None:
    """Wait until ``cond()`` holds (status updates follow requests asynchronously)."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.01)


# -- clients ------------------------------------------------------------------------------


class _Client(Generic[Req, Resp]):
    def __init__(
        self,
        address: str,
        node_id: str,
        cluster: str = "test",
        credentials: grpc.ChannelCredentials | None = None,
    ) -> None:
        self.node = base_pb2.Node(id=node_id, cluster=cluster)
        self.channel = (
            grpc.aio.secure_channel(address, credentials)
            if credentials is not None
            else grpc.aio.insecure_channel(address)
        )
        self.stub = ads_pb2_grpc.AggregatedDiscoveryServiceStub(self.channel)
        self._out: asyncio.Queue[Req | None] = asyncio.Queue()
        self._in: asyncio.Queue[Resp | BaseException] = asyncio.Queue()
        self._first = True
        self.received: list[Resp] = []
        #: Latest response received per type URL.
        self.last: dict[str, Resp] = {}
        self.call = self._open()
        self._reader = asyncio.create_task(self._read())

    def _open(self) -> grpc.aio.StreamStreamCall[Any, Any]:
        raise NotImplementedError

    async def _requests(self) -> AsyncIterator[Req]:
        while (req := await self._out.get()) is not None:
            yield req

    async def _read(self) -> None:
        try:
            async for resp in self.call:
                self._in.put_nowait(resp)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # handed to the test through recv()
            self._in.put_nowait(exc)
        else:
            self._in.put_nowait(EOFError("stream ended by the server"))

    def _put(self, req: Req) -> Req:
        self._out.put_nowait(req)
        return req

    def _node_once(self) -> base_pb2.Node | None:
        """Like Envoy, send the node on the first request of the stream only."""
        if self._first:
            self._first = False
            return self.node
        return None

    async def recv(self, timeout: float = 2.0) -> Resp:
        item = await asyncio.wait_for(self._in.get(), timeout)
        if isinstance(item, BaseException):
            raise item
        self.received.append(item)
        self.last[self._type_of(item)] = item
        return item

    @staticmethod
    def _type_of(resp: Any) -> str:
        return str(resp.type_url)

    async def expect_silence(self, timeout: float = 0.3) -> None:
        """Assert the server sends nothing for ``timeout`` seconds."""
        try:
            item = await asyncio.wait_for(self._in.get(), timeout)
        except TimeoutError:
            return
        raise AssertionError(f"unexpected response: {item}")

    async def close(self) -> None:
        self._out.put_nowait(None)
        self.call.cancel()
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader
        await self.channel.close()


class SotwClient(_Client[discovery_pb2.DiscoveryRequest, discovery_pb2.DiscoveryResponse]):
    """StreamAggregatedResources, remembering per type the names and last accepted version."""

    def __init__(
        self,
        address: str,
        node_id: str,
        cluster: str = "test",
        credentials: grpc.ChannelCredentials | None = None,
    ) -> None:
        super().__init__(address, node_id, cluster, credentials)
        self.names: dict[str, list[str]] = {}
        self.accepted: dict[str, str] = {}

    def _open(self) -> grpc.aio.StreamStreamCall[Any, Any]:
        return self.stub.StreamAggregatedResources(self._requests())

    def request(
        self,
        type_url: str,
        names: Iterable[str] | None = None,
        *,
        version: str | None = None,
        nonce: str = "",
        error: str | None = None,
    ) -> discovery_pb2.DiscoveryRequest:
        if names is not None:
            self.names[type_url] = sorted(names)
        req = discovery_pb2.DiscoveryRequest(
            version_info=self.accepted.get(type_url, "") if version is None else version,
            node=self._node_once(),
            resource_names=self.names.get(type_url, []),
            type_url=type_url,
            response_nonce=nonce,
        )
        if error is not None:
            req.error_detail.CopyFrom(status_pb2.Status(code=3, message=error))
        return self._put(req)

    def ack(
        self, resp: discovery_pb2.DiscoveryResponse, names: Iterable[str] | None = None
    ) -> discovery_pb2.DiscoveryRequest:
        self.accepted[resp.type_url] = resp.version_info
        return self.request(resp.type_url, names, nonce=resp.nonce)

    def nack(
        self, resp: discovery_pb2.DiscoveryResponse, error: str
    ) -> discovery_pb2.DiscoveryRequest:
        return self.request(resp.type_url, nonce=resp.nonce, error=error)


class DeltaClient(
    _Client[discovery_pb2.DeltaDiscoveryRequest, discovery_pb2.DeltaDiscoveryResponse]
):
    """DeltaAggregatedResources, tracking the resource versions it holds per type."""

    def __init__(self, address: str, node_id: str, cluster: str = "test") -> None:
        super().__init__(address, node_id, cluster)
        self.held: dict[str, dict[str, str]] = {}

    def _open(self) -> grpc.aio.StreamStreamCall[Any, Any]:
        return self.stub.DeltaAggregatedResources(self._requests())

    def request(
        self,
        type_url: str,
        subscribe: Iterable[str] = (),
        unsubscribe: Iterable[str] = (),
        *,
        initial: Mapping[str, str] | None = None,
        nonce: str = "",
        error: str | None = None,
    ) -> discovery_pb2.DeltaDiscoveryRequest:
        req = discovery_pb2.DeltaDiscoveryRequest(
            node=self._node_once(),
            type_url=type_url,
            resource_names_subscribe=list(subscribe),
            resource_names_unsubscribe=list(unsubscribe),
            initial_resource_versions=dict(initial or {}),
            response_nonce=nonce,
        )
        if error is not None:
            req.error_detail.CopyFrom(status_pb2.Status(code=3, message=error))
        return self._put(req)

    def ack(self, resp: discovery_pb2.DeltaDiscoveryResponse) -> None:
        held = self.held.setdefault(resp.type_url, {})
        held.update((r.name, r.version) for r in resp.resources)
        for name in resp.removed_resources:
            held.pop(name, None)
        self.request(resp.type_url, nonce=resp.nonce)

    def nack(self, resp: discovery_pb2.DeltaDiscoveryResponse, error: str) -> None:
        self.request(resp.type_url, nonce=resp.nonce, error=error)


# -- resources ----------------------------------------------------------------------------

_ADS = config_source_pb2.ConfigSource(
    ads=config_source_pb2.AggregatedConfigSource(),
    resource_api_version=config_source_pb2.ApiVersion.V3,
)


def _any(msg: Any) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(msg)
    return packed


def cluster(name: str) -> Resource:
    """An EDS cluster whose endpoints come over ADS."""
    return Resource.of(
        name,
        cluster_pb2.Cluster(
            name=name,
            type=cluster_pb2.Cluster.EDS,
            eds_cluster_config=cluster_pb2.Cluster.EdsClusterConfig(eds_config=_ADS),
            connect_timeout=duration_pb2.Duration(seconds=1),
        ),
    )


def endpoints(name: str, port: int) -> Resource:
    socket = address_pb2.SocketAddress(address="127.0.0.1", port_value=port)
    lb = endpoint_components_pb2.LbEndpoint(
        endpoint=endpoint_components_pb2.Endpoint(
            address=address_pb2.Address(socket_address=socket)
        )
    )
    cla = endpoint_pb2.ClusterLoadAssignment(
        cluster_name=name,
        endpoints=[endpoint_components_pb2.LocalityLbEndpoints(lb_endpoints=[lb])],
    )
    return Resource.of(name, cla)


def listener(name: str, route_name: str, port: int = 0) -> Resource:
    """A listener whose HttpConnectionManager asks for ``route_name`` over RDS via ADS."""
    hcm = hcm_pb2.HttpConnectionManager(
        stat_prefix=name,
        rds=hcm_pb2.Rds(route_config_name=route_name, config_source=_ADS),
        http_filters=[
            hcm_pb2.HttpFilter(
                name="envoy.filters.http.router", typed_config=_any(router_pb2.Router())
            )
        ],
    )
    socket = address_pb2.SocketAddress(address="127.0.0.1", port_value=port)
    return Resource.of(
        name,
        listener_pb2.Listener(
            name=name,
            address=address_pb2.Address(socket_address=socket),
            filter_chains=[
                listener_components_pb2.FilterChain(
                    filters=[
                        listener_components_pb2.Filter(
                            name="envoy.filters.network.http_connection_manager",
                            typed_config=_any(hcm),
                        )
                    ]
                )
            ],
        ),
    )


def route(name: str, clusters: Iterable[str], bad_regex: str | None = None) -> Resource:
    """One virtual host with a prefix route per cluster; ``bad_regex`` adds a regex route
    that Envoy will reject (the NACK fixture)."""
    routes = [
        route_components_pb2.Route(
            match=route_components_pb2.RouteMatch(prefix=f"/{c}"),
            route=route_components_pb2.RouteAction(cluster=c),
        )
        for c in clusters
    ]
    if bad_regex is not None:
        match = route_components_pb2.RouteMatch(safe_regex=regex_pb2.RegexMatcher(regex=bad_regex))
        routes.insert(
            0,
            route_components_pb2.Route(
                match=match, route=route_components_pb2.RouteAction(cluster=routes[0].route.cluster)
            ),
        )
    vhost = route_components_pb2.VirtualHost(name="all", domains=["*"], routes=routes)
    return Resource.of(name, route_pb2.RouteConfiguration(name=name, virtual_hosts=[vhost]))


def mesh(
    clusters: Mapping[str, int],
    routes: Mapping[str, Iterable[str]],
    listeners: Mapping[str, tuple[str, int]],
    bad_regex: str | None = None,
) -> Snapshot:
    """A snapshot of EDS clusters (name -> endpoint port), route configurations (name ->
    clusters) and listeners (name -> (route configuration, port))."""
    resources = [cluster(n) for n in clusters]
    resources += [endpoints(n, p) for n, p in clusters.items()]
    resources += [route(n, cs, bad_regex) for n, cs in routes.items()]
    resources += [listener(n, r, p) for n, (r, p) in listeners.items()]
    return Snapshot.build(resources)
