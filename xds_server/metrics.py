"""Prometheus metrics of the control plane, fed by StatusRegistry events and the publisher.

Counters follow events. The gauges that say whether things are well (``meshgate_config_valid``,
``meshgate_fleet_envoys``) are read from the publisher and the status registry when scraped,
so they can never disagree with ``meshgate status``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from xds_server.server.status import ENVOY_STATES, StatusEvent
from xds_server.snapshot.snapshot import SHORT_NAMES


class XdsMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.streams = Gauge(
            "meshgate_xds_streams", "Connected xDS streams", ["protocol"], registry=r
        )
        self.responses = Counter(
            "meshgate_xds_responses_total", "xDS responses sent", ["type"], registry=r
        )
        self.acks = Counter("meshgate_xds_acks_total", "xDS ACKs received", ["type"], registry=r)
        self.nacks = Counter(
            "meshgate_xds_nacks_total",
            "xDS NACKs received (Envoy rejected config)",
            ["type"],
            registry=r,
        )
        self.reloads = Counter(
            "meshgate_config_reloads_total",
            "Config changes seen, by result (published, rejected, unchanged; amended, "
            "amend_refused: signing keys put into the published snapshot while the config "
            "is rejected)",
            ["result"],
            registry=r,
        )
        self.compile_seconds = Histogram(
            "meshgate_config_compile_seconds",
            "Time to parse, validate and compile a config",
            registry=r,
        )
        self.validate_seconds = Histogram(
            "meshgate_config_validate_seconds",
            "Time for Envoy (canary) to judge a candidate",
            registry=r,
        )
        self.published_at = Gauge(
            "meshgate_config_last_publish_timestamp_seconds",
            "Unix time of the last published snapshot",
            registry=r,
        )
        self.config_ok = Gauge(
            "meshgate_config_valid",
            "1 when the latest config was accepted by the control plane and no connected "
            "Envoy refuses it; 0 while it is rejected or refused",
            registry=r,
        )
        self.fleet = Gauge(
            "meshgate_fleet_envoys",
            "Connected fleet Envoys by state: in_sync (runs the published snapshot), "
            "updating, refused (NACKed the published snapshot; runs an older one)",
            ["state"],
            registry=r,
        )
        self.jwks_fetches = Counter(
            "meshgate_jwks_fetches_total",
            "JWKS fetches by issuer and outcome: updated (new keys), unchanged, failed "
            "(unreachable, timeout, HTTP error), invalid (answered with no usable key set)",
            ["issuer", "outcome"],
            registry=r,
        )
        self._jwks = JwksCollector()
        r.register(self._jwks)
        self._config_accepted: Callable[[], bool] = lambda: True
        self._fleet_states: Callable[[], Mapping[str, int]] = dict
        self.config_ok.set_function(self._config_valid)
        for state in ENVOY_STATES:
            self.fleet.labels(state).set_function(self._fleet_count(state))

    def bind(
        self, config_accepted: Callable[[], bool], fleet_states: Callable[[], Mapping[str, int]]
    ) -> None:
        """Where the state gauges read from: the publisher's verdict and the registry."""
        self._config_accepted = config_accepted
        self._fleet_states = fleet_states

    def bind_jwks(self, view: Callable[[], Sequence[JwksSample]]) -> None:
        """Where the JWKS gauges read from (the JWKS manager), at each scrape."""
        self._jwks.view = view

    def _fleet_count(self, state: str) -> Callable[[], float]:
        return lambda: float(self._fleet_states().get(state, 0))

    def _config_valid(self) -> float:
        refused = self._fleet_states().get("refused", 0)
        return 1.0 if self._config_accepted() and not refused else 0.0

    def on_event(self, event: StatusEvent) -> None:
        # A label per type a client names would let an impostor add series without bound
        # (one per made-up type URL); the six types meshgate serves, and "other".
        t = SHORT_NAMES.get(event.type_url, "other")
        if event.kind == "opened":
            self.streams.labels(event.stream.protocol).inc()
        elif event.kind == "closed":
            self.streams.labels(event.stream.protocol).dec()
        elif event.kind == "sent":
            self.responses.labels(t).inc()
        elif event.kind == "ack":
            self.acks.labels(t).inc()
        elif event.kind == "nack":
            self.nacks.labels(t).inc()


#: (issuer, state, keys in force, age in seconds of the set in force or None).
JwksSample = tuple[str, str, int, float | None]
JWKS_STATES = ("fresh", "stale", "expired", "never_fetched")


class JwksCollector(Collector):
    """Per-issuer key gauges computed when scraped, so they follow the manager exactly
    (issuers come and go with the config; a key set ages between fetches)."""

    def __init__(self) -> None:
        self.view: Callable[[], Sequence[JwksSample]] = list

    def collect(self) -> Iterator[Metric]:
        keys = GaugeMetricFamily(
            "meshgate_jwks_keys",
            "Signing keys in force per issuer; 0: its tokens are refused (401)",
            labels=["issuer"],
        )
        age = GaugeMetricFamily(
            "meshgate_jwks_key_age_seconds",
            "Age of the key set in force per issuer (since the fetch that last returned it)",
            labels=["issuer"],
        )
        state = GaugeMetricFamily(
            "meshgate_jwks_state",
            "1 for each issuer's current key state: fresh, stale (fetches fail, last good keys "
            "serve), expired (older than max_stale, dropped), never_fetched",
            labels=["issuer", "state"],
        )
        for issuer, current, count, seconds in self.view():
            keys.add_metric([issuer], count)
            if seconds is not None:
                age.add_metric([issuer], seconds)
            for name in JWKS_STATES:
                state.add_metric([issuer, name], 1.0 if name == current else 0.0)
        yield keys
        yield age
        yield state
