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

import logging
import time
from collections.abc import AsyncIterator
from typing import Any, TypeVar

import grpc
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2

from xds_server.server.delta import DeltaStream
from xds_server.server.sotw import SotwStream
from xds_server.server.status import StatusRegistry
from xds_server.server.stream import AdsStream
from xds_server.snapshot.cache import DEFAULT_GROUP, SnapshotCache

log = logging.getLogger("meshgate.xds")

#: Most ADS streams one servicer serves at once. Each costs tens of kilobytes (its state, its
#: status entry, gRPC's buffers) and anyone who reaches the port can open them: 2,000 streams
#: from one impostor held 190 MB. A fleet larger than this runs several control planes.
DEFAULT_MAX_STREAMS = 2048
#: Seconds between two log lines about refused streams (a flood must not flood the log).
_REFUSAL_LOG_INTERVAL = 10.0

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
        max_streams: int = DEFAULT_MAX_STREAMS,
    ) -> None:
        self.group = group
        self.max_streams = max_streams
        self.refused_streams = 0
        self._refusals_logged = 0
        self._refusal_logged_at = -_REFUSAL_LOG_INTERVAL
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
        if len(self._streams) >= self.max_streams:
            self._refuse()
            await context.abort(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"this control plane serves at most {self.max_streams} xDS streams",
            )
        self._streams.add(stream)
        try:
            await stream.serve(requests, context.write)
        finally:
            self._streams.discard(stream)

    def _refuse(self) -> None:
        self.refused_streams += 1
        now = time.monotonic()
        if now - self._refusal_logged_at >= _REFUSAL_LOG_INTERVAL:
            log.warning(
                "xds stream refused: %d streams open, the most this control plane serves "
                "(%d refused since the last such line)",
                len(self._streams),
                self.refused_streams - self._refusals_logged,
                extra={"fields": {"group": self.group, "max_streams": self.max_streams}},
            )
            self._refusal_logged_at, self._refusals_logged = now, self.refused_streams


def add_to_server(server: grpc.aio.Server, servicer: AdsServicer) -> None:
    """Register the ADS service (both SotW and delta RPCs) on ``server``."""
    ads_pb2_grpc.add_AggregatedDiscoveryServiceServicer_to_server(servicer, server)  # type: ignore[no-untyped-call]
