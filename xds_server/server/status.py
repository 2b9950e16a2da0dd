"""What every connected Envoy is offered, runs, and refused, per resource type.

Protocol servers report events here; ``meshgate status``, the metrics and the canary validator
read them. Nothing here does I/O.

Three versions per type tell the whole story, and are kept apart on purpose:

* ``published_version``: what the control plane offers this Envoy now (its group's current
  snapshot); it may have been refused, or not yet be sent;
* ``sent_version``: the last response on the wire;
* ``acked_version``: what the Envoy accepted, so what it *runs*.

An Envoy is ``in_sync`` when every type it follows runs the published version, ``refused`` when
it NACKed a published version (it keeps running what it had), and ``updating`` otherwise
(a response is on its way, or waits for an earlier type). Once an Envoy runs the published
version again, by accepting it or because the published config went back to what it runs,
an earlier NACK is history: it stays in ``recent_nacks`` but no longer makes anything unhealthy.
"""

from __future__ import annotations

import itertools
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from meshgate.redact import redact_text
from xds_server.snapshot.cache import CANARY_GROUP
from xds_server.snapshot.snapshot import ORDER, short_name

EventKind = Literal["opened", "sent", "ack", "nack", "closed"]
TypeState = Literal["in_sync", "sent", "waiting", "refused"]
EnvoyState = Literal["in_sync", "updating", "refused"]
ENVOY_STATES: tuple[EnvoyState, ...] = ("in_sync", "updating", "refused")


def clean_error(error: str) -> str:
    """Envoy's NACK text on one line: it ends with a newline, and lists one failing listener
    or cluster per line ("Error adding/updating listener(s) a: ...\\nb: ...\\n")."""
    return "; ".join(line.strip() for line in error.splitlines() if line.strip())


@dataclass
class TypeStatus:
    published_version: str = ""
    sent_version: str = ""
    sent_nonce: str = ""
    acked_version: str = ""
    acked_at: float | None = None
    nack_version: str = ""
    nack_error: str = ""
    nacked_at: float | None = None
    #: NACKs of ``nack_version`` in a row (retries of an update refused for a host reason).
    nack_count: int = 0
    resources: int = 0

    @property
    def target(self) -> str:
        """The version this Envoy should run: the published one (the sent one for a stream
        that was never told, e.g. in tests that drive the registry directly)."""
        return self.published_version or self.sent_version

    @property
    def state(self) -> TypeState:
        target = self.target
        if target and self.acked_version == target:
            return "in_sync"
        if target and self.nack_version == target:
            return "refused"
        if target and self.sent_version == target:
            return "sent"
        return "waiting"

    def as_dict(self) -> dict[str, Any]:
        refused = self.state == "refused"
        return {
            "state": self.state,
            "published_version": self.target or None,
            "acked_version": self.acked_version or None,
            "sent_version": self.sent_version or None,
            "acked_at": self.acked_at,
            # the refusal of what is published; an older NACK is in recent_nacks
            "nack_version": self.nack_version if refused else None,
            "nack_error": self.nack_error if refused else None,
            "nack_count": self.nack_count if refused else 0,
            "nacked_at": self.nacked_at if refused else None,
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
    #: The snapshot group the stream reads (``default`` fleet, ``canary``), set by the server
    #: it arrived on.
    group: str = "default"
    types: dict[str, TypeStatus] = field(default_factory=dict)
    #: Version of the snapshot the control plane offers this Envoy now.
    snapshot: str = ""
    #: The last snapshot this Envoy ran in full (every type it follows ACKed at its version),
    #: and since when; what it keeps running while it refuses a newer one.
    running: str = ""
    running_since: float | None = None

    def type(self, type_url: str) -> TypeStatus:
        st = self.types.get(type_url)
        if st is None:
            st = self.types[type_url] = TypeStatus()
        return st

    @property
    def canary(self) -> bool:
        """By the server the stream arrived on (the private socket), never by node id."""
        return self.group == CANARY_GROUP

    @property
    def state(self) -> EnvoyState:
        states = {t.state for t in self.types.values()}
        if "refused" in states:
            return "refused"
        return "in_sync" if states == {"in_sync"} else "updating"

    def refused_types(self) -> list[str]:
        return [t for t in _ordered(self.types) if self.types[t].state == "refused"]

    def as_dict(self) -> dict[str, Any]:
        return {
            "stream_id": self.stream_id,
            "node_id": self.node_id,
            "cluster": self.cluster,
            "protocol": self.protocol,
            "peer": self.peer,
            "group": self.group,
            "connected_at": self.connected_at,
            "state": self.state,
            "snapshot": self.snapshot or None,
            "running": self.running or None,
            "running_since": self.running_since,
            "types": {short_name(t): self.types[t].as_dict() for t in _ordered(self.types)},
        }


def _ordered(types: Mapping[str, TypeStatus]) -> list[str]:
    """CDS, EDS, SDS, ECDS, LDS, RDS (the push order), then anything else."""
    rank = {t: i for i, t in enumerate(ORDER)}
    return sorted(types, key=lambda t: (rank.get(t, len(rank)), t))


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
        #: One entry per distinct refusal (node, type, version, error), oldest first; a retry
        #: refused the same way bumps ``count`` and ``at`` instead of adding a line.
        self.recent_nacks: list[dict[str, Any]] = []
        self._max_errors = max_errors
        self._listeners: list[Listener] = []

    def add_listener(self, listener: Listener) -> Callable[[], None]:
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener) if listener in self._listeners else None

    def _emit(self, event: StatusEvent) -> None:
        for listener in list(self._listeners):
            listener(event)

    def opened(
        self, node_id: str, cluster: str, protocol: str, peer: str, group: str = "default"
    ) -> StreamStatus:
        st = StreamStatus(next(self._ids), node_id, cluster, protocol, peer, self._clock(), group)
        self.streams[st.stream_id] = st
        self._emit(StatusEvent("opened", st))
        return st

    def published(self, st: StreamStatus, snapshot: str, versions: Mapping[str, str]) -> None:
        """The control plane now offers ``st`` this snapshot, with these type versions (the
        types the Envoy follows). Called on every pass of the stream; cheap when unchanged."""
        if st.snapshot == snapshot and all(
            st.type(t).published_version == v for t, v in versions.items()
        ):
            return
        st.snapshot = snapshot
        for type_url, version in versions.items():
            st.type(type_url).published_version = version
        self._settle(st)

    def sent(
        self, st: StreamStatus, type_url: str, version: str, nonce: str, resources: int
    ) -> None:
        ts = st.type(type_url)
        ts.sent_version, ts.sent_nonce, ts.resources = version, nonce, resources
        self._emit(StatusEvent("sent", st, type_url, version))

    def acked(self, st: StreamStatus, type_url: str, version: str) -> None:
        ts = st.type(type_url)
        ts.acked_version, ts.acked_at = version, self._clock()
        if ts.nack_version == version:
            ts.nack_count = 0
        self._settle(st)
        self._emit(StatusEvent("ack", st, type_url, version))

    def nacked(self, st: StreamStatus, type_url: str, version: str, error: str) -> None:
        error = redact_text(clean_error(error))  # Envoy quotes config values, credentials too
        ts = st.type(type_url)
        now = self._clock()
        same = ts.nack_version == version and ts.nack_error == error
        ts.nack_count = ts.nack_count + 1 if same else 1
        ts.nack_version, ts.nack_error, ts.nacked_at = version, error, now
        self._remember_nack(st, short_name(type_url), version, error, now)
        self._emit(StatusEvent("nack", st, type_url, version, error))

    def _remember_nack(
        self, st: StreamStatus, type_: str, version: str, error: str, now: float
    ) -> None:
        key = (st.node_id, st.group, type_, version, error)
        for i, entry in enumerate(self.recent_nacks):
            if (
                entry["node_id"],
                entry["group"],
                entry["type"],
                entry["version"],
                entry["error"],
            ) == key:
                del self.recent_nacks[i]
                entry["count"] += 1
                entry["at"] = now
                entry["peer"] = st.peer
                self.recent_nacks.append(entry)
                return
        self.recent_nacks.append(
            {
                "node_id": st.node_id,
                "group": st.group,
                "peer": st.peer,
                "type": type_,
                "version": version,
                "error": error,
                "count": 1,
                "first_at": now,
                "at": now,
            }
        )
        del self.recent_nacks[: -self._max_errors]

    def _settle(self, st: StreamStatus) -> None:
        if st.snapshot and st.state == "in_sync" and st.running != st.snapshot:
            st.running, st.running_since = st.snapshot, self._clock()

    def closed(self, st: StreamStatus) -> None:
        self.streams.pop(st.stream_id, None)
        self._emit(StatusEvent("closed", st))

    def fleet_states(self) -> Counter[str]:
        """Connected fleet Envoys (not the canary) by state; for metrics and status."""
        return Counter(s.state for s in self.streams.values() if not s.canary)

    def as_dict(self) -> dict[str, Any]:
        return {
            "streams": [s.as_dict() for s in self.streams.values()],
            "recent_nacks": [dict(n) for n in self.recent_nacks],
        }


def fleet_summary(streams: list[StreamStatus], published: str) -> dict[str, Any]:
    """How the fleet stands against the published snapshot, refusals grouped by reason, so
    that a thousand Envoys refusing one listener read as one line."""
    fleet = [s for s in streams if not s.canary]
    counts = Counter(s.state for s in fleet)
    groups: dict[tuple[tuple[str, ...], str], list[StreamStatus]] = {}
    for s in fleet:
        if s.state != "refused":
            continue
        types = tuple(s.refused_types())
        reason = "; ".join(
            dict.fromkeys(s.types[t].nack_error for t in types if s.types[t].nack_error)
        )
        groups.setdefault((tuple(short_name(t) for t in types), reason), []).append(s)
    return {
        "published": published or None,
        "connected": len(fleet),
        **{state: counts.get(state, 0) for state in ENVOY_STATES},
        "refusals": [
            {
                "types": list(types),
                "error": reason,
                "envoys": sorted(s.node_id for s in members),
                "running": sorted({s.running for s in members if s.running}),
            }
            for (types, reason), members in groups.items()
        ],
    }
