"""State-of-the-world ADS: every response for a type carries the whole state the client is to
hold (for CDS/LDS) or every requested resource (for EDS/RDS).

Request handling, in the order the xDS protocol defines it:

* a non-empty ``response_nonce`` other than the latest one sent for the type is *stale*: the
  request answers a response the client has not yet seen superseded, so it is dropped whole
  (no ACK, no NACK, no subscription change; the client repeats its names on the next request);
* otherwise a nonce-bearing request ACKs (no ``error_detail``) or NACKs the latest response;
* an empty nonce opens (or re-opens, after a reconnect) the type's subscription and is always
  answered once a snapshot exists, whatever ``version_info`` the client says it holds: Envoy
  waits for that first response to finish initialising;
* a change of ``resource_names`` is answered at once if it makes anything new available,
  ahead of the make-before-break order, because Envoy's cluster and listener warming waits
  for exactly those EDS/RDS answers.
"""

from __future__ import annotations

from envoy.config.core.v3 import base_pb2
from envoy.service.discovery.v3 import discovery_pb2

from xds_server.server.planner import Step, TypeTrack, default_wildcard
from xds_server.server.stream import AdsStream
from xds_server.snapshot.snapshot import WILDCARD_TYPES, Snapshot


class SotwStream(AdsStream[discovery_pb2.DiscoveryRequest, discovery_pb2.DiscoveryResponse]):
    """One Envoy on ``StreamAggregatedResources``."""

    protocol = "sotw"

    @staticmethod
    def removable(type_url: str) -> bool:
        # Omission deletes only for CDS/LDS; an EDS/RDS response without a name changes nothing.
        return type_url in WILDCARD_TYPES

    def node_of(self, request: discovery_pb2.DiscoveryRequest) -> base_pb2.Node | None:
        return request.node if request.HasField("node") else None

    def handle(self, request: discovery_pb2.DiscoveryRequest) -> None:
        type_url = request.type_url
        tr = self.type_track(type_url)
        if tr is None:
            return
        nonce = request.response_nonce
        detail = request.error_detail if request.HasField("error_detail") else None
        if not self.take_verdict(tr, nonce, detail):
            return  # a stale SotW request is answered by the newer response already sent
        self._subscribe(tr, set(request.resource_names), initial=not nonce)

    def _subscribe(self, tr: TypeTrack, names: set[str], *, initial: bool) -> None:
        wildcard = default_wildcard(tr.type_url, names)
        names.discard("*")
        changed = not tr.active or wildcard != tr.wildcard or names != tr.names
        tr.active, tr.wildcard, tr.names = True, wildcard, names
        if initial:
            tr.must_answer = True
        if changed:
            tr.resubscribed = True
            tr.forget({n for n in tr.client if not tr.in_scope(n)})

    def build(self, step: Step, snap: Snapshot) -> discovery_pb2.DiscoveryResponse:
        tu = step.track.type_url
        return discovery_pb2.DiscoveryResponse(
            version_info=step.version,
            resources=[step.bodies[name].any for name in sorted(step.state) if name in step.bodies],
            type_url=tu,
            nonce=step.nonce,
        )
