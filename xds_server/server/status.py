"""What every connected Envoy has been sent, has ACKed and has NACKed, per resource type.

Protocol servers report events here; ``meshgate status``, the metrics and the canary validator
read them. Nothing here does I/O.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from xds_server.snapshot.snapshot import short_name

EventKind = Literal["opened", "sent", "ack", "nack", "closed"]


@dataclass
class TypeStatus:
    sent_version: str = ""
    sent_nonce: str = ""
    acked_version: str = ""
    acked_at: float | None = None
    nack_version: str = ""
    nack_error: str = ""
    nacked_at: float | None = None
    resources: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "sent_version": self.sent_version,
            "acked_version": self.acked_version,
            "acked_at": self.acked_at,
            "nack_version": self.nack_version or None,
            "nack_error": self.nack_error or None,
            "nacked_at": self.nacked_at,
            "resources": self.resources,
        }


@dataclass
class StreamStatus:
    stream_id: int
    node_id: str
    cluster: str
    protocol: str
    peer: str
    connected_at: float
    types: dict[str, TypeStatus] = field(default_factory=dict)

    def type(self, type_url: str) -> TypeStatus:
        st = self.types.get(type_url)
        if st is None:
            st = self.types[type_url] = TypeStatus()
        return st

    def as_dict(self) -> dict[str, Any]:
        return {
            "stream_id": self.stream_id,
            "node_id": self.node_id,
            "cluster": self.cluster,
            "protocol": self.protocol,
            "peer": self.peer,
            "connected_at": self.connected_at,
            "types": {short_name(t): s.as_dict() for t, s in sorted(self.types.items())},
        }


@dataclass(frozen=True)
class StatusEvent:
    kind: EventKind
    stream: StreamStatus
    type_url: str = ""
    version: str = ""
    error: str = ""


Listener = Callable[[StatusEvent], None]


class StatusRegistry:
    """Per-stream xDS state plus a bounded log of NACKs, with synchronous listeners."""

    def __init__(self, clock: Callable[[], float] = time.time, max_errors: int = 50) -> None:
        self._clock = clock
        self._ids = itertools.count(1)
        self.streams: dict[int, StreamStatus] = {}
        self.recent_nacks: list[dict[str, Any]] = []
        self._max_errors = max_errors
        self._listeners: list[Listener] = []

    def add_listener(self, listener: Listener) -> Callable[[], None]:
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener) if listener in self._listeners else None

    def _emit(self, event: StatusEvent) -> None:
        for listener in list(self._listeners):
            listener(event)

    def opened(self, node_id: str, cluster: str, protocol: str, peer: str) -> StreamStatus:
        st = StreamStatus(next(self._ids), node_id, cluster, protocol, peer, self._clock())
        self.streams[st.stream_id] = st
        self._emit(StatusEvent("opened", st))
        return st

    def sent(
        self, st: StreamStatus, type_url: str, version: str, nonce: str, resources: int
    ) -> None:
        ts = st.type(type_url)
        ts.sent_version, ts.sent_nonce, ts.resources = version, nonce, resources
        self._emit(StatusEvent("sent", st, type_url, version))

    def acked(self, st: StreamStatus, type_url: str, version: str) -> None:
        ts = st.type(type_url)
        ts.acked_version, ts.acked_at = version, self._clock()
        if ts.nack_version and ts.nack_version == version:
            ts.nack_version = ts.nack_error = ""
        self._emit(StatusEvent("ack", st, type_url, version))

    def nacked(self, st: StreamStatus, type_url: str, version: str, error: str) -> None:
        ts = st.type(type_url)
        ts.nack_version, ts.nack_error, ts.nacked_at = version, error, self._clock()
        self.recent_nacks.append(
            {
                "node_id": st.node_id,
                "type": short_name(type_url),
                "version": version,
                "error": error,
                "at": ts.nacked_at,
            }
        )
        del self.recent_nacks[: -self._max_errors]
        self._emit(StatusEvent("nack", st, type_url, version, error))

    def closed(self, st: StreamStatus) -> None:
        self.streams.pop(st.stream_id, None)
        self._emit(StatusEvent("closed", st))

    def as_dict(self) -> dict[str, Any]:
        return {
            "streams": [s.as_dict() for s in self.streams.values()],
            "recent_nacks": list(self.recent_nacks),
        }
