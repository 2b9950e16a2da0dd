"""The asyncio shell shared by both ADS protocols: one loop per Envoy stream.

Each stream is a single consumer of one queue fed by three producers: a reader task (requests
from Envoy), a watcher task (publications for the node's group) and :meth:`AdsStream.stop`
(control-plane shutdown). Handling everything on one task means the per-stream state in the
:class:`~xds_server.server.planner.Planner` needs no locks, and a request and a publication can
never interleave half-way through a decision.
"""

from __future__ import annotations

import asyncio
import enum
import logging
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import ClassVar, Generic, TypeVar

from envoy.config.core.v3 import base_pb2
from google.rpc import status_pb2

from meshgate.redact import excerpt
from xds_server.server.planner import Planner, Step, TypeTrack
from xds_server.server.status import StatusRegistry, StreamStatus
from xds_server.snapshot.cache import CANARY_GROUP, CANARY_NODE_PREFIX, SnapshotCache
from xds_server.snapshot.snapshot import (
    WILDCARD_TYPES,
    Resource,
    Snapshot,
    hide_secrets,
    secret_values,
    short_name,
)

log = logging.getLogger("meshgate.xds")

#: Most resource types one stream may follow. Envoy asks for a handful (CDS, EDS, LDS, RDS,
#: SDS, RTDS...); a client naming thousands of made-up type URLs would otherwise grow the
#: stream's state, its status entry and the cost of every plan without bound.
MAX_TYPES = 32
#: Longest node id or cluster kept from what a client claims: they end up in every log line
#: and status entry of the stream, and an impostor may send megabytes (a 1 MB id on 200
#: streams held 700 MB) or terminal escapes.
MAX_NODE_TEXT = 256

ReqT = TypeVar("ReqT")
RespT = TypeVar("RespT")


class _Signal(enum.Enum):
    SNAPSHOT = "snapshot"
    END = "end"
    STOP = "stop"


class AdsStream(ABC, Generic[ReqT, RespT]):
    """One Envoy's ADS stream; subclasses supply the wire format of one protocol."""

    protocol: ClassVar[str]

    def __init__(
        self, cache: SnapshotCache, registry: StatusRegistry, peer: str, group: str
    ) -> None:
        self._cache = cache
        self._registry = registry
        self._peer = peer
        self._queue: asyncio.Queue[ReqT | _Signal] = asyncio.Queue()
        self.planner = Planner(self.removable)
        self.planner.retry_rejected = group != CANARY_GROUP
        self.status: StreamStatus | None = None
        #: Fixed by the server the stream arrived on, never by the client's node id.
        self.group = group
        self.node_id = ""
        self._refused_types = False

    # -- protocol hooks -------------------------------------------------------------------

    @staticmethod
    @abstractmethod
    def removable(type_url: str) -> bool:
        """Whether this protocol can take a resource of ``type_url`` away from a client."""

    @abstractmethod
    def node_of(self, request: ReqT) -> base_pb2.Node | None: ...

    @abstractmethod
    def handle(self, request: ReqT) -> None:
        """Apply one request to the planner (subscriptions, ACK, NACK)."""

    @abstractmethod
    def build(self, step: Step, snap: Snapshot) -> RespT:
        """Turn a planned step into this protocol's response message."""

    def type_track(self, type_url: str) -> TypeTrack | None:
        """The planner's track for a request's type, or None for a request to ignore: one
        without a type, or one for a new type past :data:`MAX_TYPES` (said once a stream)."""
        if not type_url:
            log.warning(
                "%s request without type_url ignored",
                self.protocol,
                extra={"fields": self._fields()},
            )
            return None
        if self.planner.follows(type_url) or self.planner.type_count() < MAX_TYPES:
            return self.planner.track(type_url)
        if not self._refused_types:
            self._refused_types = True
            log.warning(
                "xds client asks for more than %d resource types; requests for further types "
                "are ignored",
                MAX_TYPES,
                extra={"fields": self._fields(type=excerpt(type_url, 80))},
            )
        return None

    # -- the loop ---------------------------------------------------------------------------

    def stop(self) -> None:
        """End the stream cleanly (status OK) so Envoy reconnects, e.g. to another replica."""
        self._queue.put_nowait(_Signal.STOP)

    async def serve(
        self, requests: AsyncIterator[ReqT], write: Callable[[RespT], Awaitable[None]]
    ) -> None:
        reader = asyncio.create_task(self._read(requests))
        watcher: asyncio.Task[None] | None = None
        try:
            while True:
                try:
                    # wake up by ourselves when a rejected update is due for another try
                    item = await asyncio.wait_for(self._queue.get(), self.planner.retry_in())
                except TimeoutError:
                    item = _Signal.SNAPSHOT
                if item is _Signal.STOP or item is _Signal.END:
                    return
                if not isinstance(item, _Signal):
                    if self.status is None:
                        self._open(self.node_of(item))
                        watcher = asyncio.create_task(self._watch(self.group))
                    self.handle(item)
                for resp in self._pump():
                    await write(resp)
        finally:
            tasks = [t for t in (reader, watcher) if t is not None]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            if self.status is not None:
                self._registry.closed(self.status)
                log.info("xds stream closed", extra={"fields": self._fields()})

    async def _read(self, requests: AsyncIterator[ReqT]) -> None:
        try:
            async for request in requests:
                self._queue.put_nowait(request)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the peer went away mid-read: an ordinary end of stream
            log.debug("xds stream read ended", extra={"fields": {"error": repr(exc)}})
        finally:
            self._queue.put_nowait(_Signal.END)

    async def _watch(self, group: str) -> None:
        # Re-arming happens synchronously after each wake-up, and the loop always reads the
        # newest snapshot, so a publication that lands between two wake-ups is never lost.
        while True:
            await self._cache.changed_event(group).wait()
            self._queue.put_nowait(_Signal.SNAPSHOT)

    def _open(self, node: base_pb2.Node | None) -> None:
        if node is None:
            log.warning("xds stream without node on its first request; using an empty node")
            node = base_pb2.Node()
        self.node_id = excerpt(node.id, MAX_NODE_TEXT)
        self.status = self._registry.opened(
            self.node_id,
            excerpt(node.cluster, MAX_NODE_TEXT),
            self.protocol,
            self._peer,
            self.group,
        )
        log.info("xds stream opened", extra={"fields": self._fields()})
        if self.group != CANARY_GROUP and node.id.startswith(CANARY_NODE_PREFIX):
            log.warning(
                "a fleet client uses the canary's node-id prefix; it is served and judged as an "
                "ordinary fleet Envoy (the canary talks over a private socket only)",
                extra={"fields": self._fields()},
            )

    def _pump(self) -> list[RespT]:
        snap = self._cache.get_snapshot(self.group) if self.status is not None else None
        if snap is None:
            return []  # no snapshot for this group yet: wait, never send an empty config
        out: list[RespT] = []
        for step in self.planner.plan(snap):
            out.append(self.build(step, snap))
            assert self.status is not None
            tu = step.track.type_url
            self._registry.sent(self.status, tu, step.version, step.nonce, len(step.state))
            log.debug(
                "xds sent",
                extra={
                    "fields": self._fields(
                        tu, version=step.version, nonce=step.nonce, resources=len(step.state)
                    )
                },
            )
        assert self.status is not None
        # What this Envoy is offered: the types it follows, plus CDS and LDS, which every
        # ADS Envoy asks for (an Envoy still initialising has not asked yet, and must not
        # look "in sync" with a snapshot whose listeners it has not accepted).
        types = {*self.planner.active_types(), *WILDCARD_TYPES}
        self._registry.published(
            self.status, snap.version, {t: snap.type_version(t) for t in types}
        )
        return out

    # -- ACK / NACK bookkeeping shared by both protocols --------------------------------------

    def take_verdict(self, tr: TypeTrack, nonce: str, detail: status_pb2.Status | None) -> bool:
        """Apply the ACK or NACK a request carries (both protocols say it the same way: the
        nonce answered, and ``error_detail`` for a NACK); False when the nonce is stale, so
        the request answers an older response and carries no verdict."""
        if self.planner.is_stale(tr, nonce):
            log.debug(
                "%s stale nonce: ACK/NACK ignored",
                self.protocol,
                extra={"fields": self._fields(tr.type_url, nonce=nonce)},
            )
            return False
        if nonce and tr.inflight is not None:
            error = None
            if detail is not None:
                error = detail.message or f"rejected without a message (code {detail.code})"
            self.acknowledge(tr, error)
        return True

    def acknowledge(self, tr: TypeTrack, error: str | None) -> None:
        """Record the client's verdict on the latest response of ``tr``'s type."""
        assert self.status is not None
        tu = tr.type_url
        if error is None:
            sent = self.planner.ack(tr)
            if sent is not None:
                self._registry.acked(self.status, tu, sent.version)
                log.debug("xds ack", extra={"fields": self._fields(tu, version=sent.version)})
            return
        sent = self.planner.nack(tr)
        if sent is not None:
            error = self._without_secrets(error, sent.bodies.values())
            self._registry.nacked(self.status, tu, sent.version, error)
            log.warning(
                "xds nack: Envoy %s rejected %s version %s: %s",
                self.node_id,
                short_name(tu),
                sent.version,
                error,
                extra={"fields": self._fields(tu, version=sent.version, error=error)},
            )

    def _without_secrets(self, error: str, sent: Iterable[Resource]) -> str:
        """Envoy's NACK text without any secret value in clear: Envoy may quote the resource
        it refuses, and this text goes to the log, ``meshgate status`` and the canary's
        verdict. The values are those of what was sent and of the group's snapshot."""
        values = secret_values(sent)
        snap = self._cache.get_snapshot(self.group)
        if snap is not None:
            values |= snap.secret_values
        return hide_secrets(error, values) if values else error

    def _fields(self, type_url: str = "", **more: object) -> dict[str, object]:
        fields: dict[str, object] = {
            "node_id": self.node_id,
            "group": self.group,
            "protocol": self.protocol,
            "peer": self._peer,
        }
        if type_url:
            fields["type"] = short_name(type_url)
        fields.update(more)
        return fields
