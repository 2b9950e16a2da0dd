"""What one Envoy holds per resource type, and which response to send it next.

This is the pure half of both ADS protocol servers (state of the world and delta): no asyncio,
no gRPC, no wire messages. A stream feeds it the client's requests (subscriptions, ACKs, NACKs)
and the current snapshot; it answers with *steps*, each "send this type, so that the client
ends up holding exactly this name -> version map". The protocol modules only turn a step into
their own wire format, so the two protocols cannot drift apart in what they send or when.

Make-before-break: when a new snapshot reaches a client that already holds resources, types are
pushed one at a time in :data:`~xds_server.snapshot.snapshot.ORDER`, each only after every
earlier type has been answered, and resources the snapshot removed are *kept* on the client
(still listed in SotW, not yet in ``removed_resources`` in delta). Only when every type is in
sync with that "add" target does a second, "cleanup" pass drop them. This is computed from the
client's state rather than stored as a phase, so a newer snapshot arriving mid-transition simply
restarts it.
"""

from __future__ import annotations

import itertools
import math
import secrets
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field

from envoy.config.listener.v3 import listener_pb2

from xds_server.snapshot.references import PARENTS
from xds_server.snapshot.snapshot import LISTENER, ORDER, WILDCARD_TYPES, Resource, Snapshot

#: name -> resource version: what a client holds of one type, or should hold.
State = dict[str, str]


class Nonces:
    """Unique nonces for one stream: a random prefix (unique across streams and replicas,
    so a nonce from an earlier stream is never mistaken for a current one) and a counter."""

    def __init__(self) -> None:
        self._prefix = secrets.token_hex(4)
        self._counter = itertools.count(1)

    def next(self) -> str:
        return f"{self._prefix}-{next(self._counter)}"


@dataclass
class Inflight:
    """A response sent and not yet ACKed or NACKed (at most one per type: the watch model).

    ``version`` is always the snapshot's version of the type, also for the intermediate
    make-before-break responses: they are steps toward that snapshot, and a NACK of any of them
    is a rejection of that version (which is what the status registry and the canary validator
    compare against).
    """

    nonce: str
    version: str
    state: State
    bodies: dict[str, Resource]
    snapshot_version: str


@dataclass
class TypeTrack:
    """One resource type on one stream: subscription, client state, outstanding response."""

    type_url: str
    active: bool = False
    wildcard: bool = False
    names: set[str] = field(default_factory=set)
    #: What the client has accepted (ACKed), or told us it has (delta initial versions).
    client: State = field(default_factory=dict)
    #: Version of the last response the client accepted.
    client_version: str = ""
    #: Resource bodies behind ``client`` where we sent them; SotW resends kept ones.
    held: dict[str, Resource] = field(default_factory=dict)
    inflight: Inflight | None = None
    #: Latest nonce sent for this type; a request carrying any other non-empty nonce is stale.
    nonce: str = ""
    #: Version of the last NACKed response: not sent again until ``retry_at``.
    rejected: str = ""
    #: When the rejected version may be tried again (a fleet Envoy may reject for a reason of
    #: its own host that goes away, e.g. a listener port another process held), and how many
    #: times in a row it was rejected (the backoff doubles each time).
    retry_at: float = 0.0
    rejections: int = 0
    #: A first (or re-)subscription: answered even when it would carry nothing new.
    must_answer: bool = False
    #: New names were subscribed: answered (if anything differs) ahead of the push order.
    resubscribed: bool = False

    def in_scope(self, name: str) -> bool:
        return self.wildcard or name in self.names

    def holds(self, state: State, version: str) -> bool:
        """Whether the client already holds ``state`` at ``version``: then nothing is sent."""
        return state == self.client and version == self.client_version

    def forget(self, names: set[str]) -> None:
        """The client dropped these names (unsubscribed): it no longer holds them."""
        for name in names:
            self.client.pop(name, None)
            self.held.pop(name, None)
            if self.inflight is not None:
                self.inflight.state.pop(name, None)
                self.inflight.bodies.pop(name, None)


@dataclass(frozen=True)
class Step:
    """Send ``track`` a response after which the client holds ``state``."""

    track: TypeTrack
    state: State
    bodies: dict[str, Resource]
    nonce: str
    version: str


class Planner:
    """Client state for every type of one stream, and the order in which to update it.

    ``removable(type_url)`` says whether the protocol can take a resource of that type away
    from a client: delta always can (``removed_resources``); SotW only for wildcard-style types
    (CDS, LDS), where omission means deletion, while omitting an EDS/RDS resource means nothing.
    """

    def __init__(
        self,
        removable: Callable[[str], bool],
        clock: Callable[[], float] = time.monotonic,
        retry_base: float = 30.0,
        retry_max: float = 600.0,
    ) -> None:
        self._removable = removable
        self._clock = clock
        self.retry_base = retry_base
        self._retry_max = retry_max
        #: Off for the canary: it rejects for the config's sake, never for its host's, and
        #: the validator remembers its verdicts.
        self.retry_rejected = True
        self._tracks: dict[str, TypeTrack] = {}
        self._nonces = Nonces()
        #: Snapshot version whose transition was stopped by a NACK.
        self.stalled_on = ""

    def track(self, type_url: str) -> TypeTrack:
        tr = self._tracks.get(type_url)
        if tr is None:
            tr = self._tracks[type_url] = TypeTrack(type_url)
        return tr

    def follows(self, type_url: str) -> bool:
        """Whether the client has asked for ``type_url`` on this stream."""
        return type_url in self._tracks

    def type_count(self) -> int:
        return len(self._tracks)

    def active_types(self) -> list[str]:
        """Type URLs the client follows, in push order."""
        return [tr.type_url for tr in self._active()]

    def _active(self) -> Iterator[TypeTrack]:
        """Active tracks in push order: ORDER first, any other type (RTDS...) after."""
        rank = {t: i for i, t in enumerate(ORDER)}
        for t in sorted(self._tracks, key=lambda t: (rank.get(t, len(rank)), t)):
            if self._tracks[t].active:
                yield self._tracks[t]

    def target(
        self, tr: TypeTrack, snap: Snapshot, *, keep: bool
    ) -> tuple[State, dict[str, Resource]]:
        """The state ``tr`` should reach from ``snap``; with ``keep``, resources the client
        holds and the snapshot dropped stay (the make-before-break "add" pass)."""
        own = snap.of_type(tr.type_url)
        bodies = {n: r for n, r in own.items() if tr.in_scope(n)}
        state = {n: r.version for n, r in bodies.items()}
        if keep or not self._removable(tr.type_url):
            kept = [n for n in tr.client if n not in state and tr.in_scope(n)]
            if tr.type_url == LISTENER and kept:
                kept = _without_address_clashes(kept, tr.held, own)
            for name in kept:
                state[name] = tr.client[name]
                if name in tr.held:
                    bodies[name] = tr.held[name]
        return state, bodies

    def plan(self, snap: Snapshot) -> list[Step]:
        """Every response to send now: answers to (re)subscriptions, which bypass the push
        order so that Envoy's cluster and listener warming never waits on it, then at most
        one ordered push."""
        self._forget_superseded_rejections(snap)
        steps: list[Step] = []
        for tr in self._active():
            if tr.inflight is None and (tr.must_answer or tr.resubscribed):
                state, bodies = self.target(tr, snap, keep=True)
                if tr.must_answer or not tr.holds(state, snap.type_version(tr.type_url)):
                    steps.append(self._send(tr, state, bodies, snap))
                tr.must_answer = tr.resubscribed = False
        push = self._next_push(snap)
        if push is not None:
            steps.append(push)
        return steps

    def _forget_superseded_rejections(self, snap: Snapshot) -> None:
        """A rejected version the snapshot no longer carries (the config moved on, or went
        back to what the client holds) is nothing to retry: without this, its passed retry
        time would wake the stream every 50 ms forever. Were it published again, it is sent
        at once, like any new config."""
        if self.stalled_on and snap.version != self.stalled_on:
            self.stalled_on = ""
        for tr in self._tracks.values():
            if (
                tr.rejected
                and tr.inflight is None
                and tr.rejected != snap.type_version(tr.type_url)
            ):
                tr.rejected, tr.rejections, tr.retry_at = "", 0, 0.0

    def retry_in(self) -> float | None:
        """Seconds until a rejected update may be retried (the stream wakes up then)."""
        due = [
            t.retry_at
            for t in self._tracks.values()
            if t.rejected and t.inflight is None and t.retry_at < math.inf
        ]
        # never 0: a retry blocked behind another type must not make the stream spin
        return max(0.05, min(due) - self._clock()) if due else None

    def _retry_due(self, tr: TypeTrack) -> bool:
        return bool(tr.rejected) and self._clock() >= tr.retry_at

    def _next_push(self, snap: Snapshot) -> Step | None:
        if snap.version == self.stalled_on:
            if not any(self._retry_due(tr) for tr in self._tracks.values()):
                return None
            self.stalled_on = ""
        tracks = list(self._active())
        adds = {tr.type_url: self.target(tr, snap, keep=True) for tr in tracks}
        cleanup = all(
            tr.inflight is None
            and tr.holds(adds[tr.type_url][0], snap.type_version(tr.type_url))
            and not self._awaiting_subscription(tr, snap)
            for tr in tracks
        )
        for tr in tracks:
            if tr.inflight is not None:
                return None
            state, bodies = self.target(tr, snap, keep=False) if cleanup else adds[tr.type_url]
            if self._awaiting_subscription(tr, snap):
                return None  # its answer will carry this type's update; later types wait
            version = snap.type_version(tr.type_url)
            if tr.holds(state, version):
                continue
            if version == tr.rejected and not self._retry_due(tr):
                return None  # blocked on a rejected update: later types must not run ahead
            return self._send(tr, state, bodies, snap)
        return None

    def _awaiting_subscription(self, tr: TypeTrack, snap: Snapshot) -> bool:
        """True while the client has yet to ask for EDS/RDS/SDS/ECDS names that the clusters,
        listeners (or filter configs) it holds make it need: the answer to that request is
        part of this step (warming), so later types wait for it. Only for parent types the
        client follows at all."""
        parents = PARENTS.get(tr.type_url)
        if not parents or tr.wildcard:
            return False
        for parent in parents:
            ptr = self._tracks.get(parent)
            if ptr is None or not ptr.active:
                continue
            if not snap.references.expected_names(tr.type_url, ptr.client, parent) <= tr.names:
                return True
        return False

    def _send(
        self, tr: TypeTrack, state: State, bodies: dict[str, Resource], snap: Snapshot
    ) -> Step:
        if tr.rejected:
            tr.retry_at = math.inf  # this send is the retry; the next NACK sets a new time
        nonce = self._nonces.next()
        version = snap.type_version(tr.type_url)
        tr.inflight = Inflight(nonce, version, dict(state), dict(bodies), snap.version)
        tr.nonce = nonce
        return Step(tr, state, bodies, nonce, version)

    @staticmethod
    def is_stale(tr: TypeTrack, nonce: str) -> bool:
        return bool(nonce) and nonce != tr.nonce

    @staticmethod
    def ack(tr: TypeTrack) -> Inflight | None:
        """The latest response was accepted: it is now what the client holds."""
        sent, tr.inflight = tr.inflight, None
        if sent is not None:
            tr.client, tr.held, tr.client_version = sent.state, sent.bodies, sent.version
            tr.rejected = ""
            tr.rejections = 0
        return sent

    def nack(self, tr: TypeTrack) -> Inflight | None:
        """The latest response was rejected: the client keeps what it had, the transition it
        belonged to stops, and that version is sent again only after a backoff (30 s, then
        doubling up to 10 min) or when a newer snapshot replaces it."""
        sent, tr.inflight = tr.inflight, None
        if sent is not None:
            tr.rejections = tr.rejections + 1 if tr.rejected == sent.version else 1
            tr.rejected = sent.version
            backoff = min(self._retry_max, self.retry_base * 2 ** (tr.rejections - 1))
            tr.retry_at = self._clock() + backoff if self.retry_rejected else math.inf
            self.stalled_on = sent.snapshot_version
        return sent


def _listener_address(res: Resource) -> tuple[str, int]:
    listener = res.unpack()
    assert isinstance(listener, listener_pb2.Listener)
    sa = listener.address.socket_address
    return sa.address, sa.port_value


def _without_address_clashes(
    kept: list[str], held: dict[str, Resource], new: Mapping[str, Resource]
) -> list[str]:
    """Removed listeners that may stay during make-before-break: not one whose address a new
    listener takes (a renamed listener on the same port). Keeping it would make Envoy refuse
    the whole update ("duplicate address"); that one listener is replaced in place instead."""
    taken = {_listener_address(r) for r in new.values()}
    return [n for n in kept if n not in held or _listener_address(held[n]) not in taken]


def default_wildcard(type_url: str, names: set[str]) -> bool:
    """Wildcard when ``*`` is asked for, or (legacy form) no names at all for CDS/LDS; an EDS
    or RDS request with no names just means "nothing" (Envoy sends it when unsubscribing)."""
    return "*" in names or (not names and type_url in WILDCARD_TYPES)
