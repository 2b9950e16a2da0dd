"""The snapshot cache: the only thing xDS streams and snapshot producers share.

Producers (the config watcher, the canary validator) call :meth:`SnapshotCache.set_snapshot`;
protocol servers call :meth:`SnapshotCache.wait_for_snapshot` and know nothing of how snapshots
are built (the go-control-plane split). Streams read one *group*: the whole fleet shares
``DEFAULT_GROUP`` while the private canary Envoy gets candidate snapshots in ``CANARY_GROUP``.

Which group a stream reads is decided by the server it arrived on (the public xDS port serves
the fleet, a private Unix socket serves the canary), never by anything the client says about
itself: a node id is a claim, and a client on the public port that claims to be the canary
must not be able to judge candidates (see :class:`~xds_server.server.ads.AdsServicer`).
"""

from __future__ import annotations

import asyncio

from xds_server.snapshot.snapshot import Snapshot

DEFAULT_GROUP = "default"
CANARY_GROUP = "canary"
#: The canary's node id starts with this; it names the canary in logs, and nothing more.
CANARY_NODE_PREFIX = "meshgate-canary"


class SnapshotCache:
    """Current snapshot per group, with change notification for waiting streams."""

    def __init__(self) -> None:
        self._snapshots: dict[str, Snapshot] = {}
        self._changed: dict[str, asyncio.Event] = {}

    def get_snapshot(self, group: str) -> Snapshot | None:
        return self._snapshots.get(group)

    def set_snapshot(self, group: str, snapshot: Snapshot) -> None:
        """Publish; must be called on the event loop that serves the streams."""
        current = self._snapshots.get(group)
        if current is not None and current.version == snapshot.version:
            return
        self._snapshots[group] = snapshot
        event = self._changed.pop(group, None)
        if event is not None:
            event.set()

    def changed_event(self, group: str) -> asyncio.Event:
        """An event set at the next publication for ``group`` (a fresh one after each)."""
        event = self._changed.get(group)
        if event is None:
            event = self._changed[group] = asyncio.Event()
        return event

    async def wait_for_snapshot(self, group: str, known_version: str | None = None) -> Snapshot:
        """Return the group's snapshot once it exists and differs from ``known_version``.

        A node whose group has no snapshot yet simply waits here: it is never sent an empty
        configuration that would wipe what it is serving.
        """
        while True:
            snap = self._snapshots.get(group)
            if snap is not None and snap.version != known_version:
                return snap
            await self.changed_event(group).wait()
