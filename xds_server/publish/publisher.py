"""Last good config wins: a candidate is published only once it is known good.

The publisher is the one place that decides whether a compiled snapshot reaches the fleet. A
config change (anything beyond endpoints) is first judged by Envoy itself through a validator;
a rejected candidate is recorded with its reasons (shown by ``meshgate status``, logged, counted)
and the snapshot that works keeps serving. Endpoint-only changes skip validation: they cannot
make Envoy reject anything and must be fast.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from meshgate.problems import Problem
from xds_server.metrics import XdsMetrics
from xds_server.publish.validation import Validator
from xds_server.snapshot.cache import DEFAULT_GROUP, SnapshotCache
from xds_server.snapshot.snapshot import Snapshot

log = logging.getLogger("meshgate.publisher")


@dataclass
class ConfigState:
    """What ``meshgate status`` shows about config: serving version and current problems."""

    source: str = ""
    version: str = ""
    config_digest: str = ""
    published_at: float | None = None
    #: Problems of the most recent attempt; empty when the latest file is the one serving.
    errors: list[dict[str, Any]] = field(default_factory=list)
    rejected_digest: str = ""
    rejected_at: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "version": self.version or None,
            "config_digest": self.config_digest or None,
            "published_at": self.published_at,
            "errors": self.errors,
            "rejected_digest": self.rejected_digest or None,
            "rejected_at": self.rejected_at,
        }


class Publisher:
    def __init__(
        self,
        cache: SnapshotCache,
        validator: Validator | None,
        metrics: XdsMetrics,
        source: str = "",
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.cache = cache
        self.validator = validator
        self.metrics = metrics
        self.clock = clock
        self.state = ConfigState(source=source)

    @property
    def current(self) -> Snapshot | None:
        return self.cache.get_snapshot(DEFAULT_GROUP)

    def reject(self, problems: Sequence[Problem], digest: str) -> None:
        """Record why a candidate cannot be used; the serving snapshot is untouched."""
        self.state.errors = [p.as_dict() for p in problems]
        self.state.rejected_digest = digest
        self.state.rejected_at = self.clock()
        self.metrics.reloads.labels("rejected").inc()
        self.metrics.config_ok.set(0)
        for p in problems:
            log.error(
                "config rejected; the last good config keeps serving",
                extra={
                    "fields": {
                        **p.as_dict(),
                        "digest": digest,
                        "serving": self.state.version or None,
                    }
                },
            )

    async def offer(self, snapshot: Snapshot, digest: str) -> bool:
        current = self.current
        if current is not None and current.version == snapshot.version:
            self.state.errors = []
            self.state.config_digest = digest
            self.metrics.config_ok.set(1)
            self.metrics.reloads.labels("unchanged").inc()
            return True
        if self.validator is not None and not snapshot.differs_only_in_endpoints(current):
            started = time.perf_counter()
            objections = await self.validator.validate(snapshot)
            self.metrics.validate_seconds.observe(time.perf_counter() - started)
            if objections:
                self.reject(
                    [
                        Problem(self.state.source, "", m, origin=f"{self.validator.name} validator")
                        for m in objections
                    ],
                    digest,
                )
                return False
        self.cache.set_snapshot(DEFAULT_GROUP, snapshot)
        self.state.version = snapshot.version
        self.state.config_digest = digest
        self.state.published_at = self.clock()
        self.state.errors = []
        self.metrics.reloads.labels("published").inc()
        self.metrics.published_at.set(self.state.published_at)
        self.metrics.config_ok.set(1)
        log.info(
            "snapshot published",
            extra={
                "fields": {
                    "version": snapshot.version,
                    "digest": digest,
                    "validated_by": getattr(self.validator, "name", None),
                }
            },
        )
        return True
