"""Incremental (delta) ADS: responses carry only what changed for the client, plus the names it
must drop in ``removed_resources``.

Differences from state of the world that shape this module:

* Subscriptions are deltas (``resource_names_subscribe`` / ``_unsubscribe``), so losing one
  would leave Envoy waiting forever. A request carrying a stale nonce therefore has its ACK or
  NACK ignored (it answers a response that has since been superseded) but its subscription
  changes still applied. Spontaneous subscription requests carry no nonce at all.
* The first request of a type may list ``initial_resource_versions`` (after a reconnect): those
  become the client's known state, so resources it already has at the right version are not
  sent again, and ones it has that no longer exist are removed (after the make-before-break
  "add" pass, like any other removal).
* Wildcard: a first CDS/LDS request subscribing to nothing, or any request subscribing ``*``;
  unsubscribing ``*`` leaves wildcard mode.
* A subscribed name that does not exist is not answered until it does: the spec allows a
  server to stay silent, and announcing it "removed" would make Envoy drop the route
  configuration or endpoints of a listener/cluster it is still warming.
* The client's ACK carries no version, so the version of each response is remembered with its
  nonce. ``system_version_info`` is the snapshot's version of the type, as in SotW, so that
  ``meshgate status`` and the canary validator compare one kind of version for both protocols.
"""

from __future__ import annotations

from envoy.config.core.v3 import base_pb2
from envoy.service.discovery.v3 import discovery_pb2

from xds_server.server.planner import Step, TypeTrack, default_wildcard
from xds_server.server.stream import AdsStream, log
from xds_server.snapshot.snapshot import Snapshot

#: Most resource names one delta stream may subscribe to per type. Subscriptions accumulate
#: over requests (unlike SotW, where each request restates them within one message), so an
#: impostor could otherwise grow them without bound; a 100,000-route config has 10,000 EDS
#: names.
MAX_NAMES = 250_000


class DeltaStream(
    AdsStream[discovery_pb2.DeltaDiscoveryRequest, discovery_pb2.DeltaDiscoveryResponse]
):
    """One Envoy on ``DeltaAggregatedResources``."""

    protocol = "delta"

    @staticmethod
    def removable(type_url: str) -> bool:
        return True  # removed_resources works for every type

    def node_of(self, request: discovery_pb2.DeltaDiscoveryRequest) -> base_pb2.Node | None:
        return request.node if request.HasField("node") else None

    def handle(self, request: discovery_pb2.DeltaDiscoveryRequest) -> None:
        type_url = request.type_url
        tr = self.type_track(type_url)
        if tr is None:
            return
        # a stale verdict is ignored, but the subscription changes still count
        detail = request.error_detail if request.HasField("error_detail") else None
        self.take_verdict(tr, request.response_nonce, detail)
        subscribe = set(request.resource_names_subscribe)
        unsubscribe = set(request.resource_names_unsubscribe)
        if not tr.active:
            self._open_type(tr, subscribe, dict(request.initial_resource_versions))
        else:
            self._change(tr, subscribe, unsubscribe)

    def _open_type(self, tr: TypeTrack, subscribe: set[str], initial: dict[str, str]) -> None:
        tr.active = True
        tr.wildcard = default_wildcard(tr.type_url, subscribe)
        names = subscribe - {"*"}
        tr.names = names if len(names) <= MAX_NAMES else set(sorted(names)[:MAX_NAMES])
        tr.client = {n: v for n, v in initial.items() if tr.in_scope(n)}
        tr.must_answer = True

    def _change(self, tr: TypeTrack, subscribe: set[str], unsubscribe: set[str]) -> None:
        if "*" in unsubscribe:
            tr.wildcard = False
        dropped = unsubscribe - {"*"}
        tr.names -= dropped
        tr.forget({n for n in dropped if not tr.in_scope(n)})
        if "*" in subscribe and not tr.wildcard:
            tr.wildcard = tr.resubscribed = True
        added = subscribe - {"*"} - tr.names
        room = MAX_NAMES - len(tr.names)
        if len(added) > room:
            log.warning(
                "delta client subscribes to more than %d names of one type; the rest are ignored",
                MAX_NAMES,
                extra={"fields": self._fields(tr.type_url, ignored=len(added) - max(0, room))},
            )
            added = set(sorted(added)[: max(0, room)])
        if added:
            tr.names |= added
            tr.resubscribed = True
        if not tr.wildcard:
            tr.forget({n for n in tr.client if not tr.in_scope(n)})

    def build(self, step: Step, snap: Snapshot) -> discovery_pb2.DeltaDiscoveryResponse:
        tr = step.track
        resources = [
            discovery_pb2.Resource(name=name, version=version, resource=step.bodies[name].any)
            for name, version in sorted(step.state.items())
            if tr.client.get(name) != version and name in step.bodies
        ]
        removed = sorted(n for n in tr.client if n not in step.state)
        return discovery_pb2.DeltaDiscoveryResponse(
            system_version_info=step.version,
            resources=resources,
            type_url=tr.type_url,
            removed_resources=removed,
            nonce=step.nonce,
        )
