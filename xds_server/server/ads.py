"""The gRPC face of the control plane: Envoy's AggregatedDiscoveryService on ``grpc.aio``.

Both RPCs are thin: each stream gets its own :class:`~xds_server.server.sotw.SotwStream` or
:class:`~xds_server.server.delta.DeltaStream`, which share nothing with other streams but the
snapshot cache and the status registry. The servicer keeps the live streams only so that
:meth:`AdsServicer.close` can end them at shutdown; ``server.stop(grace)`` alone would wait
out the whole grace period, since an ADS stream never finishes on its own.

A servicer serves exactly one snapshot group, fixed when it is created: the control plane puts
a fleet servicer on the public xDS port and a canary servicer on a private Unix socket, so the
group (and with it whose ACK/NACK judges a candidate) follows from where a stream arrived. A
client on the public port is a fleet node whatever node id it sends.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, TypeVar

import grpc
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2

from xds_server.server.delta import DeltaStream
from xds_server.server.sotw import SotwStream
from xds_server.server.status import StatusRegistry
from xds_server.server.stream import AdsStream
from xds_server.snapshot.cache import DEFAULT_GROUP, SnapshotCache

_Req = TypeVar("_Req")
_Resp = TypeVar("_Resp")


class AdsServicer(ads_pb2_grpc.AggregatedDiscoveryServiceServicer):  # type: ignore[misc]
    """Serves every stream on its server from ``cache``'s ``group``; reports to ``registry``."""

    def __init__(
        self,
        cache: SnapshotCache,
        registry: StatusRegistry,
        nack_retry: float = 30.0,
        group: str = DEFAULT_GROUP,
    ) -> None:
        self.group = group
        self._nack_retry = nack_retry
        self._cache = cache
        self._registry = registry
        self._streams: set[AdsStream[Any, Any]] = set()
        self._closing = False

    def close(self) -> None:
        """End every stream with status OK (Envoy reconnects, typically to another replica)
        and refuse new ones; call before ``server.stop(grace)`` for a prompt shutdown."""
        self._closing = True
        for stream in list(self._streams):
            stream.stop()

    @property
    def stream_count(self) -> int:
        return len(self._streams)

    async def StreamAggregatedResources(
        self,
        request_iterator: AsyncIterator[discovery_pb2.DiscoveryRequest],
        context: grpc.aio.ServicerContext[
            discovery_pb2.DiscoveryRequest, discovery_pb2.DiscoveryResponse
        ],
    ) -> None:
        stream = SotwStream(self._cache, self._registry, context.peer(), self.group)
        stream.planner.retry_base = self._nack_retry
        await self._serve(stream, request_iterator, context)

    async def DeltaAggregatedResources(
        self,
        request_iterator: AsyncIterator[discovery_pb2.DeltaDiscoveryRequest],
        context: grpc.aio.ServicerContext[
            discovery_pb2.DeltaDiscoveryRequest, discovery_pb2.DeltaDiscoveryResponse
        ],
    ) -> None:
        stream = DeltaStream(self._cache, self._registry, context.peer(), self.group)
        stream.planner.retry_base = self._nack_retry
        await self._serve(stream, request_iterator, context)

    async def _serve(
        self,
        stream: AdsStream[_Req, _Resp],
        requests: AsyncIterator[_Req],
        context: grpc.aio.ServicerContext[_Req, _Resp],
    ) -> None:
        if self._closing:
            return
        self._streams.add(stream)
        try:
            await stream.serve(requests, context.write)
        finally:
            self._streams.discard(stream)


def add_to_server(server: grpc.aio.Server, servicer: AdsServicer) -> None:
    """Register the ADS service (both SotW and delta RPCs) on ``server``."""
    ads_pb2_grpc.add_AggregatedDiscoveryServiceServicer_to_server(servicer, server)  # type: ignore[no-untyped-call]
