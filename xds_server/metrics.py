"""Prometheus metrics of the control plane, fed by StatusRegistry events and the publisher."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from xds_server.server.status import StatusEvent
from xds_server.snapshot.snapshot import short_name


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
            "Config changes seen, by result (published, rejected, unchanged)",
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
            "1 when the latest config file was accepted, 0 while it is rejected",
            registry=r,
        )

    def on_event(self, event: StatusEvent) -> None:
        t = short_name(event.type_url) if event.type_url else ""
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
